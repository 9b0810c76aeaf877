"""analysis.grid_stats on a synthetic faithfulness table with known effects."""
import numpy as np
import polars as pl
import pytest

from analysis.grid_stats import grid_figure, grid_paired, grid_per_run, main


def table(shift_by_method):
    """3 runs, steps 0..2, 5 clips; score = 10 + run offset + step * shift(method) + clip noise
    whose median is 0, so a run's median is 10 + offset + step * shift exactly."""
    rows = []
    noise = [-2.0, -1.0, 0.0, 1.0, 2.0]
    for method, shift in shift_by_method.items():
        for metric in ("irof", "road"):
            for run, offset in zip((1, 2, 3), (0.0, 0.3, -0.2)):
                for step in (0, 1, 2):
                    jitter = 0.05 * run * step  # the differences vary over runs: a t-test applies
                    for clip, e in enumerate(noise):
                        rows.append(dict(stream="spatial", chain="slimming", method=method, metric=metric, run=run,
                                         step=step, prune_ratio=0.04 * step, video="v", clip=clip,
                                         score=10 + offset + step * shift + jitter + e, score_random=5.0 + e))
    return pl.DataFrame(rows)


def test_paired_changes_holm_over_the_grid_and_equivalence():
    per_run = grid_per_run(table({"vanilla_gradient": 2.0, "grad_cam": 0.0}))
    assert per_run.height == 2 * 2 * 3 * 3 and (per_run["clips"] == 5).all()
    run1 = per_run.filter((pl.col("method") == "grad_cam") & (pl.col("run") == 1) & (pl.col("metric") == "irof"))
    np.testing.assert_allclose(run1.sort("step")["score"], [10.0, 10.05, 10.1])
    paired = grid_paired(per_run)
    assert paired.height == 2 * 2 * 2 and (paired["tests_in_family"] == 8).all()
    changed = paired.filter(pl.col("method") == "vanilla_gradient").sort("metric", "step")
    np.testing.assert_allclose(changed.filter(pl.col("metric") == "irof")["mean_diff"], [2.1, 4.2])
    assert (changed["p_t"] < 0.01).all() and (changed["p_holm_grid"] >= changed["p_t"]).all()
    assert (changed["p_equivalence"] > 0.5).all(), "a shift of 2 is not within ±1"
    stable = paired.filter(pl.col("method") == "grad_cam")
    np.testing.assert_allclose(stable["margin"], 1.00333, atol=1e-4)  # 10 % of the step-0 mean
    assert (stable["p_equivalence"] < 0.05).all(), "shifts of 0.1 and 0.2 are within ±1"
    # Holm over all 8 tests: the smallest p is multiplied by 8
    smallest = paired.sort("p_t").row(0, named=True)
    assert smallest["p_holm_grid"] == pytest.approx(min(1.0, 8 * smallest["p_t"]))


def test_grid_figure_and_command_line(tmp_path):
    from core.results import write_rows
    faith = table({"vanilla_gradient": 1.0, "smoothgrad": -1.0}).with_columns(
        experiment=pl.lit("e"), label=1, target=1, predicted=1, correct=True, target_rule=pl.lit("predicted"),
        explain_hash=pl.lit("h"), checkpoint_sha256=pl.lit("s"))
    for (run, step), part in faith.group_by("run", "step"):
        write_rows(tmp_path / "results", "faithfulness", part, partition=f"spatial/run{run}/step{step}")
    main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "grid")])
    assert (tmp_path / "grid" / "faithfulness_grid_spatial.png").stat().st_size > 10_000
    assert pl.read_csv(tmp_path / "grid" / "faithfulness_paired.csv").height == 2 * 2 * 2
    with pytest.raises(ValueError, match="no faithfulness rows of stream 'temporal'"):
        grid_figure(grid_per_run(faith), "temporal", tmp_path / "x.png")


def test_report_shows_the_grid_section_only_beyond_the_study_pair(tmp_path):
    from analysis import report
    from core.results import write_rows
    faith = table({"vanilla_gradient": 1.0, "grad_cam": 0.0}).with_columns(
        experiment=pl.lit("e"), label=1, target=1, predicted=1, correct=True, target_rule=pl.lit("predicted"),
        explain_hash=pl.lit("h"), checkpoint_sha256=pl.lit("s"))
    for (run, step), part in faith.group_by("run", "step"):
        write_rows(tmp_path / "results", "faithfulness", part, partition=f"spatial/run{run}/step{step}")
    report.main(["--experiment", str(tmp_path)])
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Explanation grid: methods × faithfulness metrics" in page
    assert (tmp_path / "report" / "figures" / "faithfulness_grid_spatial.png").is_file()
    assert "spatial, slimming: vanilla_gradient × irof at 8.0 % pruned: +2.2 (more faithful) over 3 runs, Holm p (grid) 0.0055: changed." in page
    assert "grad_cam × road at 8.0 % pruned: +0.2 (less faithful)" in page and "all 8 tests" in page
    pair = tmp_path / "pair"
    only = faith.filter((pl.col("method") == "vanilla_gradient") & (pl.col("metric") == "irof"))
    write_rows(pair / "results", "faithfulness", only, partition="spatial/all")
    report.main(["--experiment", str(pair)])
    assert "Explanation grid" not in (pair / "report" / "report.md").read_text()
