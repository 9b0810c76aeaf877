"""Results files cut short: named by every reader, set aside by the sweep, the cell redone (issue 31)."""
from __future__ import annotations

import pytest

from analysis import report as report_module
from analysis import stats as stats_module
from core.damaged import part_problem, readable, set_aside_damaged
from core.results import DamagedPart, read_table, write_rows
from tests.result_files import accuracy_row, cut_short


def store(tmp_path):
    results = tmp_path / "results"
    files = [write_rows(results, "accuracy", [accuracy_row(run=r, step=s, video_accuracy=60.0 + r + s)],
                        partition=f"spatial/run{r}/step{s}") for r in (1, 2) for s in (0, 1)]
    return results, files


def test_readers_name_a_truncated_part_and_say_how_to_fix_it(tmp_path):
    results, files = store(tmp_path)
    cut_short(files[1])
    with pytest.raises(DamagedPart) as caught:
        read_table(results, "accuracy")
    assert caught.value.path == files[1]
    assert str(files[1]) in str(caught.value) and "rerun the sweep" in str(caught.value)
    assert part_problem(files[1]) and not readable(files[1]) and readable(files[0])


def test_report_and_stats_exit_1_naming_the_file(tmp_path, capsys):
    results, files = store(tmp_path)
    cut_short(files[2], keep=0.9)
    for main, args in ((stats_module.main, ["--results", str(results), "--out", str(tmp_path / "t")]),
                       (report_module.main, ["--experiment", str(tmp_path)])):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1
        assert err.startswith(f"error: {files[2]}: not a readable Parquet file") and "rerun the sweep" in err
        assert "Traceback" not in err


def test_the_sweep_sets_damaged_parts_aside_and_keeps_sound_ones(tmp_path, capsys):
    results, files = store(tmp_path)
    before = {f: f.read_bytes() for f in files}
    cut_short(files[3])
    files[0].with_name("step0.parquet.tmp-1-abc").write_bytes(b"half")  # a writer's temporary: not a part
    found = set_aside_damaged(results)
    assert [(f, t.name) for f, t, _ in found] == [(files[3], "step1.parquet.damaged")]
    assert f"{files[3]} cannot be read" in capsys.readouterr().err
    assert not files[3].exists() and files[3].with_name("step1.parquet.damaged").is_file()
    assert all(f.read_bytes() == before[f] for f in files[:3])
    table = read_table(results, "accuracy")  # the readable rest; the stage that wrote it redoes the cell
    assert sorted(table.select("run", "step").rows()) == [(1, 0), (1, 1), (2, 0)]
    # damaged again later: the earlier copy is kept, the new one numbered
    files[3].write_bytes(b"PAR1 cut")
    assert [t.name for _, t, _ in set_aside_damaged(results)] == ["step1.parquet.damaged-2"]
    assert set_aside_damaged(results) == []


def test_cells_over_fewer_runs_are_flagged_in_the_summary(tmp_path):
    from analysis.summary import main_result

    rows = [accuracy_row(run=r, step=s, video_accuracy=60.0 + r + s) for r in (1, 2, 3) for s in (0, 1)]
    write_rows(tmp_path, "accuracy", [r for r in rows if not (r["run"] == 3 and r["step"] == 1)],
               partition="all")
    accuracy, irof = read_table(tmp_path, "accuracy"), read_table(tmp_path, "irof")
    table, _ = main_result(accuracy, irof, "video_accuracy")
    assert table.select("step", "runs", "fewer_runs").rows() == [(0, 3, False), (1, 2, True)]
    assert table.columns.index("fewer_runs") == table.columns.index("runs") + 1


def test_damaged_checkpoints_and_score_files_are_named_and_set_aside(tmp_path, capsys):
    """The inputs of later stages (issue 31): real torch and numpy archives, one of each cut short."""
    import numpy as np
    import torch

    from core.damaged import archive_problem, set_aside_damaged_inputs

    files = []
    for folder, suffix in (("checkpoints", ".pt"), ("scores", ".npz")):
        for name in ("whole", "cut"):
            path = tmp_path / folder / "spatial" / "run1" / f"{name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".pt":
                torch.save({"weights": torch.arange(5000.0)}, path)
            else:
                np.savez(path, scores=np.arange(5000.0))
            files.append(path)
    for path in files[1::2]:
        cut_short(path, keep=0.9)  # most of the bytes, not the zip's central directory at the end
    assert [archive_problem(f) is None for f in files] == [True, False, True, False]
    found = set_aside_damaged_inputs(tmp_path)
    assert [(f, t.name) for f, t, _ in found] == [(files[1], "cut.pt.damaged"), (files[3], "cut.npz.damaged")]
    err = capsys.readouterr().err
    assert f"checkpoint: {files[1]} cannot be read" in err and f"scores: {files[3]} cannot be read" in err
    assert "the stage that wrote it reruns that cell" in err
    assert files[0].is_file() and files[2].is_file() and set_aside_damaged_inputs(tmp_path) == []
