"""scripts/compare_runs.py (two runs' tables equal but for where, when and how long) and
scripts/stream_confidence.py (each stream's mean top probability from the saved test scores),
on stores with known contents."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from core.config import ExperimentConfig
from core.results import WHERE, WRITTEN_AT, read_table, write_rows
from tests.report_experiments import paper_size_experiment

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_runs_ignores_provenance_and_timing_and_names_a_changed_column(tmp_path, capsys):
    compare = script("compare_runs")
    a, b = (paper_size_experiment(tmp_path / name, steps=(0, 1), explained=(0, 1)) for name in ("a", "b"))
    assert compare.main([str(a), str(b)]) == 0  # written at other times: equal all the same
    assert "accuracy: 50 and 50 rows" in capsys.readouterr().out  # 5 models x 5 runs x 2 steps
    part = read_table(b / "results", "accuracy").filter(stream="spatial", run=1)
    stamps = (WRITTEN_AT, *WHERE)  # the writer adds them again
    rows = [{k: v for k, v in r.items() if k not in stamps} | {"video_accuracy": r["video_accuracy"] + 1}
            for r in part.iter_rows(named=True)]
    write_rows(b / "results", "accuracy", rows, partition="spatial/None/run1")
    assert compare.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "accuracy: 50 and 50 rows" in out and "DIFFERENT" in out
    assert "differing columns: ['video_accuracy']" in out
    with pytest.raises(SystemExit):
        compare.main([str(a), str(tmp_path)])  # no results/ there


def test_stream_confidence_averages_each_runs_top_probability(tmp_path, capsys):
    cfg = ExperimentConfig.from_dict({"experiment": {"name": "c", "root": str(tmp_path / "elsewhere")},
                                      "train": {"runs": 2}})
    root = tmp_path / "moved"  # the root it was run in is gone: the script reads where it is now
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    cfg = ExperimentConfig.from_dict(cfg.to_dict() | {"experiment": {"name": "c", "root": str(root)}})
    labels = np.array([0, 1, 2, 0])
    for run, top in ((1, 0.5), (2, 0.7)):  # every video's top class has `top`; videos 0-2 right
        scores = np.full((4, 3), (1 - top) / 2)
        scores[np.arange(4), [0, 1, 2, 1]] = top
        path = cfg.paths.scores("spatial", run, 0, "test")
        path.parent.mkdir(parents=True)
        np.savez(path, scores=scores, labels=labels)
    assert script("stream_confidence").main(["--experiment", str(root), "--steps", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["slimming", "spatial", "0", "0.600", "75.0", "2"]
    assert len(lines) == 2  # no temporal scores, no pruned step: nothing else shown
