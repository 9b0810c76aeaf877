"""Thread pinning (issue 20): inside a Ray task or ingest actor every library gets the task's CPUs."""
import os

import pytest

from core.threads import allotment, decoder_threads, pin_threads, thread_env, thread_report


def probe_builder():
    from ingest.shard_pool import ShardBuilder

    class Probe(ShardBuilder):
        def threads(self) -> dict:
            return thread_report()
    return Probe


@pytest.mark.slow  # builds shards on a local Ray
def test_libraries_report_the_tasks_cpus_inside_ray(local_ray, tmp_path):
    ray = local_ray

    def pinned_report(cpus=None) -> dict:  # defined here: Ray ships it by value to its workers
        import cv2  # noqa: F401 (loaded, as in the workers, before pinning)
        import torch  # noqa: F401
        n = pin_threads(cpus)
        return {"n": n, "decoder": decoder_threads(), "nice": os.nice(0), **thread_report()}

    one = ray.get(ray.remote(num_cpus=1)(pinned_report).remote())
    assert one["n"] == 1 and one["cv2"] == 1 and one["torch"] == 1 and one["torch_interop"] == 1
    assert one["omp_env"] == 1 and one["decoder"] == (1, "SLICE")
    # Ray's default worker niceness (15) would leave a task a sliver of a core beside any
    # other busy process; the project's local Ray runs its workers at 0
    assert one["nice"] == 0
    two = ray.get(ray.remote(num_cpus=2)(pinned_report).remote())
    assert two["n"] == two["cv2"] == two["torch"] == two["omp_env"] == 2 and two["decoder"] == (2, "AUTO")
    # an explicit allotment (a trial's ray.cpus_per_trial) wins over what Ray assigned
    assert ray.get(ray.remote(num_cpus=2)(pinned_report).remote(1))["torch"] == 1

    # the ingest's own actor: build_shard pins OpenCV to the actor's CPU before any work
    from ingest.shard_plan import Options, ShardJob
    from ingest.shard_pool import INGEST_TASK
    actor = ray.remote(**INGEST_TASK)(probe_builder()).remote()
    assert ray.get(actor.build.remote(ShardJob("test", 0, ()), tmp_path, tmp_path / "out", Options(split=1))) == []
    report = ray.get(actor.threads.remote())
    assert report["cv2"] == 1 and report["omp_env"] == 1
    ray.kill(actor)


def test_outside_ray_the_machine_or_the_given_number():
    assert allotment(3) == 3 and allotment(0.5) == 1 and allotment() >= 1
    env = thread_env(2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
