"""Shared test fixtures. Real data only: the clips and split lists in ../shared/data
(read-only: copy before modifying) and the project's own synthetic mini-UCF101."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.layout import SHARED_DATA, SYNTHETIC_TEST_SET


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def random_resnet18():
    """Factory: a randomly initialised torchvision resnet18 for `in_channels` inputs, in eval
    mode, with its classifier scaled so softmax outputs are far from uniform."""
    import torch
    import torchvision

    def build(in_channels: int = 3, num_classes: int = 5, seed: int = 0, logit_scale: float = 20.0):
        torch.manual_seed(seed)
        model = torchvision.models.resnet18(num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = torch.nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        with torch.no_grad():
            model.fc.weight.mul_(logit_scale)
        return model.eval()

    return build


# --- synthetic data shared by all areas (ingest helper) ------------------------------------


@pytest.fixture(scope="session")
def synthetic_videos(tmp_path_factory) -> Path:
    """A tiny mini-UCF101 (8 classes = 2 appearances x 4 motions, 3 groups x 2 clips, 24
    frames of 128x96): ``root/<Class>/*.avi`` and ``root/ucfTrainTestlist/``. Read-only."""
    from ingest.synthetic import generate
    return generate(tmp_path_factory.mktemp("synthetic") / "videos", progress=False,
                    **SYNTHETIC_TEST_SET)


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_videos, tmp_path_factory) -> Path:
    """``synthetic_videos`` built into shards for split 1 (dis flow, 64 px short side, 5 train
    and 5 test clips per video); returns the split folder (``train/``, ``test/``,
    ``manifest.parquet``). Read-only."""
    from ingest.build_shards import build_shards
    out = tmp_path_factory.mktemp("synthetic_shards") / "split1"
    build_shards(synthetic_videos, synthetic_videos / "ucfTrainTestlist", 1, out,
                 clips_per_video=5, test_clips=5, short_side=64, workers=2, progress=False,
                 strict=True)
    return out


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster when other jobs share the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray shared by one test module, stopped after it (only the Ray it started). One
    that this process already runs (build_shards leaves its own running) is reused as is."""
    import ray
    if ray.is_initialized():
        yield ray
        return
    from tests.sweeps import local_ray as start_local_ray
    with start_local_ray(log_to_driver=False) as started:
        yield started


@pytest.fixture(scope="module")
def explain_experiment(synthetic_shards, tmp_path_factory):
    """An experiment root on the synthetic shards with random step-0 and pruned step-1
    checkpoints of both streams (tests/explain_setup.py). One per module: tests write into it."""
    from tests.explain_setup import build_explain_experiment
    return build_explain_experiment(synthetic_shards, tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="session")
def small_videos(tmp_path_factory) -> Path:
    """2 classes x 3 groups x 2 clips of 24 frames at 64x48: 8 train and 4 test videos, small
    enough for ingests that are stopped, killed or run out of disk. Read-only."""
    from ingest.synthetic import generate
    return generate(tmp_path_factory.mktemp("small") / "videos", classes=2, groups=3, clips=2,
                    frames=24, width=64, height=48, seed=0, progress=False)
