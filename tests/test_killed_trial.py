"""#15.5: kill -9 of the Ray worker process running a training trial, mid-epoch. Tune retries
the trial from its last checkpoint, and every row equals an uninterrupted run's."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from ray import tune

import pipeline.tune
from tests.sweeps import assert_each_trial_once, comparable, local_ray, tiny_experiment
from core.config import ExperimentConfig
from pipeline.tune import make_tuner, train_trial

STALL_MARKER = "stalled-{stream}.pid"


class StallAfterFirstBatchOfEpoch2:
    """A train loader that, after giving epoch 2's first batch (the model has taken that step),
    writes its process id to ``marker`` and waits to be killed: a worker killed mid-epoch."""

    def __init__(self, loader, marker: Path):
        self.loader, self.marker, self.epoch = loader, marker, None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for number, batch in enumerate(self.loader):
            yield batch
            if self.epoch == 1 and number == 0:
                tmp = self.marker.with_suffix(".tmp")
                tmp.write_text(str(os.getpid()))
                tmp.rename(self.marker)
                time.sleep(600)  # the test kills this process long before


def train_until_killed_once(params, experiment, resume=False):
    """train_trial; the spatial trial's first attempt (no checkpoint yet) stalls mid-epoch 2."""
    cfg = ExperimentConfig.from_dict(experiment)
    if params["stream"] == "spatial" and tune.get_checkpoint() is None:
        marker = cfg.paths.root / STALL_MARKER.format(stream="spatial")
        original = pipeline.tune.make_loaders

        def make_loaders(*args, **kwargs):  # run_trial looks it up at call time
            loaders = original(*args, **kwargs)
            loaders["train"] = StallAfterFirstBatchOfEpoch2(loaders["train"], marker)
            return loaders
        pipeline.tune.make_loaders = make_loaders
    train_trial(params, experiment, resume)


def kill_when_stalled(marker: Path, killed: list[int], timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    if marker.exists():
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)  # the Ray worker running the trial: no cleanup, no exception
        killed.append(pid)


@pytest.mark.slow
def test_trial_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, synthetic_shards, monkeypatch):
    # validation videos (val_fraction) so the train loader is a VideoSubset, as in the demo
    straight, interrupted = (tiny_experiment(tmp_path / name, synthetic_shards, epochs=2,
                                             train={"val_fraction": 0.5}) for name in ("a", "b"))
    killed: list[int] = []
    with local_ray():
        assert all(r.error is None for r in make_tuner(straight).fit())
        killer = threading.Thread(target=kill_when_stalled,
                                  args=(interrupted.paths.root / STALL_MARKER.format(stream="spatial"), killed))
        killer.start()
        results = make_tuner(interrupted, trainable=train_until_killed_once).fit()
        killer.join()
    assert len(killed) == 1, "the trial never stalled mid-epoch"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    by_stream = {r.config["stream"]: r for r in results}
    assert all(r.error is None for r in results)
    # the retry restored epoch 1's checkpoint and trained epoch 2 again from its start
    assert by_stream["spatial"].metrics["resumed_from"] == 1 and by_stream["spatial"].metrics["epoch"] == 2
    assert by_stream["temporal"].metrics["resumed_from"] == 0
    for cfg in (straight, interrupted):
        assert_each_trial_once(cfg)
    for table, keys in (("accuracy", ["stream", "run"]), ("epochs", ["stream", "run", "epoch", "phase"])):
        a, b = comparable(straight, table, keys), comparable(interrupted, table, keys)
        assert a.height and a.equals(b), (table, a, b)
