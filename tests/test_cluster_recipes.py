"""The cluster recipes in ray_configs/cluster/, checked offline: the launcher YAML against Ray's
own schema (and Ray's defaults filled in, as `ray up` does), the KubeRay RayJob's required
fields, the Slurm script's syntax; each starts the same sweep with a shared experiment root."""
from __future__ import annotations

import copy
import json
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

import ingest.preflight
from core.diskspace import size_text
from pipeline.sweep import main as sweep_main
from ucf101_tree import official_tree

RECIPES = Path(__file__).resolve().parents[1] / "ray_configs" / "cluster"
REPO = RECIPES.parents[1]
VOLUME_FREE = 500 * 2**30  # stands for the RayJob's shared volume (a claim the cluster provides)


def ray_schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def sweep_argv(command: str) -> list[str]:
    """The arguments after `python -m pipeline.sweep` in a recipe's command line."""
    words = shlex.split(command)
    start = words.index("pipeline.sweep") + 1
    return [w for w in words[start:] if w != "\\"]


def test_aws_launcher_yaml_passes_rays_schema_and_validation():
    raw = yaml.safe_load((RECIPES / "aws.yaml").read_text())
    jsonschema.validate(raw, ray_schema())  # what the user wrote
    validate_config(prepare_config(copy.deepcopy(raw)))  # what `ray up` checks after filling defaults
    assert raw["provider"]["type"] == "aws"
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types
    assert any(t["resources"].get("GPU", 0) > 0 for t in types.values())
    assert any("/mnt/exp" in c and "mount" in c for c in raw["setup_commands"])  # the shared root


def test_aws_launcher_yaml_with_a_mistake_is_refused_by_the_same_check():
    raw = yaml.safe_load((RECIPES / "aws.yaml").read_text())
    raw["available_node_types"]["head"]["resources"] = {"CPU": "eight"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, ray_schema())


def test_kuberay_rayjob_manifest_has_the_required_fields():
    job = yaml.safe_load((RECIPES / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"][0]["image"]
    workers = cluster["workerGroupSpecs"]
    assert workers and all(w["groupName"] and w["replicas"] >= 1 and "rayStartParams" in w for w in workers)
    assert any("nvidia.com/gpu" in c["resources"]["limits"]
               for w in workers for c in w["template"]["spec"]["containers"])
    # every pod mounts the one shared volume the sweep's root is on
    pods = [head["template"]["spec"]] + [w["template"]["spec"] for w in workers]
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {m["name"]: m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert any(mounts.get(name) == "/mnt/exp" for name in claims), pod
    assert "experiment.root=/mnt/exp/" in spec["entrypoint"]


def test_slurm_script_is_valid_bash_and_submits_the_sweep():
    script = RECIPES / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH --nodes=" in text
    assert "--temp-dir" in text  # each node its own Ray temp dir
    assert "ray job submit" in text and "python -m pipeline.sweep" in text


def test_rayjob_sweep_command_is_one_the_sweep_accepts(tmp_path, monkeypatch, capsys, shared_data):
    """The RayJob's entrypoint parses, finds its config and every --set key is valid: run it
    with --dry-run from the repository root, the volume's /mnt/exp replaced by a temp folder
    holding UCF101 as the archive unpacks (the preflight refuses a tree without the videos).
    The free space is the cluster volume's, not this machine's: the paper's ~30 GiB of shards
    would otherwise pass or fail with whatever disk the test runs on."""
    entrypoint = yaml.safe_load((RECIPES / "rayjob.yaml").read_text())["spec"]["entrypoint"]
    argv = [w.replace("/mnt/exp", str(tmp_path)) for w in sweep_argv(entrypoint)]
    official_tree(shared_data, tmp_path)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(ingest.preflight, "free_bytes", lambda where: VOLUME_FREE)
    assert sweep_main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"root: {tmp_path}/ucf101_split3" in out
    assert f"{size_text(VOLUME_FREE)} free at {tmp_path}" in out  # the disk check did run
