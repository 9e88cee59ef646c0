"""Tests of the fit-quality grid (hmmrnn.grid) and of the grid's sweep specs at tiny size.

Cells are aggregated from hand-made rows with known values (exact means, worst runs, NaN for
cells not run, the verdicts of the chapter's claims on constructed cases); the repository's
full-grid spec is run at tiny size (its own settings with a tiny training and evaluation),
one run per target, and its table read back the way the chapter reads it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hmmrnn import grid, paper, sweep

REPO = Path(__file__).resolve().parents[1]


def row(target="linear3", hidden=150, input=100, seed=0, err=0.001, marg=(0.49, 0.01, 0.50), lab=0.26, matched=7.2,
        baseline=7.28, bifurcated=True, wall=1800.0, n=5000, length=100, epochs=500) -> dict:
    hmm = paper.MARGINALS[target]
    r = {"name": sweep.run_name(target, hidden, input, seed), "target": target, "hidden": hidden, "input": input,
         "seed": seed, "epochs": epochs, "bifurcated": bifurcated, "max_sq_transition_error": err, "lability": lab,
         "lability_hmm": paper.LABILITY[target], "rare_frequency": marg[1], "matched_distance": matched, "matched_distance_baseline": baseline,
         "eval_n": n, "eval_length": length, "wall_s": wall}
    for k in range(3):
        r[f"marginal_{k}"], r[f"marginal_hmm_{k}"] = marg[k], hmm[k]
    return r


def test_records_keep_grid_cells_one_row_per_run_first_table_wins():
    a = [row(seed=0, err=0.001), row(target="fully3", hidden=150, input=100, seed=0) | {"lability_hmm": 0.0864}]
    b = [row(seed=0, err=0.009, epochs=1000), row(seed=1), row(hidden=100, input=100, seed=0),  # |h| = 100 is no grid cell
         row(target="linear5", seed=3, epochs=1000),  # another recipe
         row(target="linear5", seed=4) | {"search": "linear5-h150-d100"},  # a seed search's try
         row(target="linear4", seed=0) | {"stop_reason": "non-finite loss", "max_sq_transition_error": float("nan")}]
    records, left_out = grid.grid_records({"grid": a, "campaign": b})
    assert [(r["name"], r["source"]) for r in records] == [("linear3-h150-d100-s0", "grid"), ("linear3-h150-d100-s1", "campaign")]
    assert records[0]["max_sq_transition_error"] == 0.001  # the first table's row; the second's is not "left out"
    assert left_out == ["linear5-h150-d100-s3 (campaign): planned for 1000 epochs, the grid's 500",
                        "linear5-h150-d100-s4 (campaign): a try of the seed search linear5-h150-d100 (the grid replaces no seed)",
                        "linear4-h150-d100-s0 (campaign): diverged (non-finite loss), no fit statistics; a failed run of its cell"]
    with pytest.raises(ValueError, match="no column"):
        grid.grid_records({"bad": [{"name": "x", "target": "linear3"}]})


def test_cell_means_worst_run_and_errors_of_frequent_outputs_only():
    rs = [row(seed=0, err=0.001, marg=(0.49, 0.02, 0.49), lab=0.2562 + 0.01, matched=7.0, wall=600),
          row(seed=1, err=0.003, marg=(0.52, 0.0, 0.48), lab=0.2562 - 0.03, matched=7.5, wall=1200, bifurcated=False),
          row(seed=2, err=0.020, marg=(0.495, 0.01, 0.495), lab=0.2562, matched=7.3, wall=900, bifurcated="True")]
    cells = grid.grid_cells(grid.grid_records({"t": rs})[0])
    (cell,) = cells.values()
    assert cell.key == ("linear3", 150, 100) and cell.seeds == (0, 1, 2) and cell.n_runs == 3 and cell.n_bifurcated == 2
    assert cell.max_sq_error == pytest.approx(0.008) and cell.worst_run_error == 0.020 and cell.run_errors == (0.001, 0.003, 0.020)
    # frequent outputs 0 and 2 (HMM 0.495): 0.005, 0.025, 0.0; the rare output's 0.01 misses are not counted
    assert cell.marginal_error == pytest.approx((0.005 + 0.025 + 0.0) / 3)
    assert cell.lability_error == pytest.approx((0.01 + 0.03 + 0.0) / 3)
    assert cell.matched_excess == pytest.approx(np.mean([7.0, 7.5, 7.3]) - 7.28)
    assert cell.matched_baseline == 7.28 and (cell.eval_n, cell.eval_length) == (5000, 100)
    assert cell.rare_frequency == pytest.approx((0.02 + 0.0 + 0.01) / 3)
    assert grid.failure_rate(cells, "linear3") == (pytest.approx(1 / 3), 3)
    assert grid.failure_rate(cells, "linear2")[1] == 0 and math.isnan(grid.failure_rate(cells, "linear2")[0])


def test_run_seconds_of_a_resumed_run_scale_its_last_task_to_every_epoch():
    assert grid.run_seconds(row(wall=1800.0) | {"resumed_from": 0}) == 1800.0
    assert grid.run_seconds(row(wall=1800.0)) == 1800.0  # no column: trained in one task
    resumed = row(wall=700.0) | {"resumed_from": 400, "epochs_run": 500, "train_s": 600.0, "eval_s": 100.0}
    assert grid.run_seconds(resumed) == pytest.approx(600.0 * 5 + 100.0)
    with pytest.raises(ValueError, match="resumed from epoch 500"):
        grid.run_seconds(resumed | {"resumed_from": 500})


def test_a_non_finite_statistic_or_mixed_evaluations_are_reported_not_averaged():
    with pytest.raises(ValueError, match="not finite"):
        grid.grid_cells([row(matched=float("inf"))])
    with pytest.raises(ValueError, match="empty"):
        grid.grid_cells([row(err=float("nan"))])
    with pytest.raises(ValueError, match="evaluated differently"):
        grid.grid_cells([row(seed=0), row(seed=1, length=30)])


def test_cell_array_lays_cells_out_by_hidden_and_input_nan_where_not_run():
    cells = grid.grid_cells([row(hidden=50, input=1, err=0.01), row(hidden=200, input=200, err=0.002),
                             row(target="linear2", hidden=50, input=1, err=0.5)])
    a = grid.cell_array(cells, "linear3", "max_sq_error")
    assert a.shape == (len(paper.GRID_HIDDEN), len(paper.GRID_INPUT))
    assert a[0, 0] == 0.01 and a[2, 3] == 0.002 and np.isnan(a).sum() == a.size - 2
    assert grid.cell_array(cells, "linear3", "n_runs")[0, 0] == 1
    with pytest.raises(ValueError, match="unknown statistic"):
        grid.cell_array(cells, "linear3", "loss")


def test_verdicts_on_constructed_grids():
    cells = grid.grid_cells([
        row(hidden=150, input=1, err=0.030, matched=7.60),  # d = 1: the worst in every way
        row(hidden=150, input=10, err=0.004, matched=7.30),
        row(hidden=150, input=100, err=0.006, matched=7.20),  # prints 0.01
        row(hidden=50, input=100, err=0.0001, matched=7.10),
    ])
    assert grid.worst_cell_error(cells, "linear3").key == ("linear3", 150, 1)
    assert grid.worst_cell_error(cells, "linear5") is None
    two = grid.grid_cells([row(seed=0, err=0.001), row(seed=1, err=0.004), row(hidden=50, seed=0, err=0.003)])
    assert grid.worst_cell_error(two, "linear3").key == ("linear3", 150, 100)  # by its worst run, not its mean
    assert grid.share_printing_zero(two) == (1.0, 3)  # runs, not cells
    assert grid.share_printing_zero(cells) == (pytest.approx(2 / 3), 3)  # d >= 10 only
    assert grid.share_printing_zero(cells, min_input=1) == (0.5, 4)
    assert math.isnan(grid.share_printing_zero(cells, "linear2")[0])
    worst = grid.matched_excess(cells, "linear3")
    assert worst.key == ("linear3", 150, 10) and worst.matched_excess == pytest.approx(0.02)
    assert grid.d1_worst(cells, "linear3", 150) is True
    assert grid.d1_worst(cells, "linear3", 50) is None  # no d = 1 cell at |h| = 50
    flipped = grid.grid_cells([row(hidden=150, input=1, matched=7.0), row(hidden=150, input=10, matched=7.1)])
    assert grid.d1_worst(flipped, "linear3", 150) is False
    table = grid.cell_table(cells)
    assert len(table.rows) == 4 and tuple(table.rows[0][:3]) == ("linear3", "50", "100")


def test_the_full_grid_spec_at_tiny_size_gives_a_table_the_chapter_reads(tmp_path):
    """sweeps/grid.yaml as it is, but a tiny training and evaluation: one run per target at |h| = 50, d = 1."""
    spec = yaml.safe_load((REPO / "sweeps" / "grid.yaml").read_text())
    spec["out"] = str(tmp_path / "grid")
    spec["train"].update({"n_sequences": 30, "batch_size": 16, "seq_len": 10, "epochs": 2, "val_every": 1,
                          "compile": False, "device": "cpu"})
    spec["stop"] = {"early": [0, 1], "final_count": 1, "n_traj": 2, "n_steps": 50, "burn_in": 10}
    spec["evaluate"].update({"n": 40, "length": 12})
    spec["grid"].update({"hidden": [50], "input": [1], "seed": [0]})
    parsed = sweep.parse_spec(spec)
    assert [r.name for r in parsed.runs] == [f"linear{m}-h50-d1-s0" for m in (2, 3, 4, 5)]
    for run in parsed.runs:
        sweep.run_one(run, str(parsed.out))
    sweep.write_table(parsed.out)
    records = pd.read_csv(Path(parsed.out) / sweep.TABLE_FILE).to_dict("records")
    cells = grid.grid_cells(grid.grid_records({"tiny": records}, epochs=dict.fromkeys(paper.GRID_TARGETS, 2))[0])
    assert list(cells) == [(f"linear{m}", 50, 1) for m in (2, 3, 4, 5)]
    for cell in cells.values():
        assert (cell.eval_n, cell.eval_length, cell.n_runs) == (40, 12, 1)
        assert 0 <= cell.max_sq_error <= 1 and 0 <= cell.marginal_error <= 1 and math.isfinite(cell.matched_excess)
        assert grid.cell_array(cells, cell.target, "max_sq_error")[0, 0] == cell.max_sq_error
