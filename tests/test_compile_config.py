"""train.compile: a boolean, refused before any work where torch.compile cannot run."""
from __future__ import annotations

import pytest
import torch._dynamo

from core.config import ConfigError, ExperimentConfig
from pipeline.validation import config_problems

GOOD = {"experiment": {"name": "ok"}, "data": {"synthetic": {"classes": 3}}}


def test_compile_must_be_a_boolean():
    with pytest.raises(ConfigError, match=r"train.compile: expected bool, got 'yes'"):
        ExperimentConfig.from_dict({**GOOD, "train": {"compile": "yes"}})
    assert ExperimentConfig.from_dict({**GOOD, "train": {"compile": True}}).train.compile is True


def test_compile_true_is_refused_where_dynamo_is_unsupported(monkeypatch):
    cfg = ExperimentConfig.from_dict({**GOOD, "train": {"compile": True}})
    if torch._dynamo.is_dynamo_supported():
        assert config_problems(cfg) == []
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)  # as on an unsupported Python
    problems = config_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith("train.compile: true is not allowed here (torch.compile "
                                                         "is not supported by torch ")
    assert config_problems(ExperimentConfig.from_dict({**GOOD, "train": {"compile": False}})) == []
