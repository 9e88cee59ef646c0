"""The paper's fit-quality grid: the finished runs of a grid sweep, cell by cell.

The paper fits every linear chain (M = 2..5, :data:`hmmrnn.paper.GRID_TARGETS`) over hidden
sizes |h| in :data:`~hmmrnn.paper.GRID_HIDDEN` and input dimensions d in
:data:`~hmmrnn.paper.GRID_INPUT`, three seeds per cell, and plots each network's emission fit.
The sweep ``sweeps/grid.yaml`` (:mod:`hmmrnn.sweep`) trains the same grid; a chapter reads its
results table (and any other table with runs of the same recipe, e.g. the training
campaign's cell |h| = 150, d = 100) with pandas and passes the records here
(``df.to_dict("records")``):

* :func:`grid_records` keeps the rows of grid cells trained for the grid's epochs, one per
  run name (the first table that has a run wins), and says where each came from;
* :func:`grid_cells` aggregates a cell's finished seeds (:class:`GridCell`): the largest
  squared transition-matrix error, the frequent outputs' marginal error, the lability error,
  the matched distance minus its HMM-vs-HMM baseline, how many runs never bifurcated, and the
  wall time;
* :func:`cell_array` lays one statistic out as a (|h|, d) array per M, NaN where no run
  finished (for heatmaps); :func:`cell_table` lists the cells as a table;
* the verdicts the chapter's claims use: :func:`worst_cell_error`, :func:`share_printing_zero`,
  :func:`matched_excess`, :func:`d1_worst`, :func:`failure_rate`.

A cell's value is the mean over its finished seeds, as the paper's figure shows one value per
cell; the largest single run is kept beside it. Nothing is recomputed from the networks: every
number is a column of the sweep's table (:data:`hmmrnn.sweep.COLUMNS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import paper
from .campaign import _finite, missing, run_seconds, truth
from .metrics import FREQUENT_OUTPUT_THRESHOLD
from .tables import Table

__all__ = [
    "ZERO_AT_TWO_DECIMALS", "ALMOST_ALL", "GridCell", "grid_records", "grid_cells", "cell_array", "cell_table",
    "run_seconds", "worst_cell_error", "share_printing_zero", "matched_excess", "d1_worst", "failure_rate", "STATISTICS",
]

ZERO_AT_TWO_DECIMALS = 0.005
"""A squared error below this prints as 0.00, as the paper prints its errors (2 decimals)."""

ALMOST_ALL = 0.9
"""The paper's "almost all" (cells whose error prints 0.00) read as at least this share (stated convention)."""

_REQUIRED = ("name", "target", "hidden", "input", "seed", "epochs", "bifurcated", "max_sq_transition_error", "lability",
             "lability_hmm", "rare_frequency", "matched_distance", "matched_distance_baseline", "eval_n", "eval_length", "wall_s")

STATISTICS: dict[str, str] = {
    "max_sq_error": "largest squared error\n(transition matrix)",
    "marginal_error": "largest |marginal - HMM|\n(frequent outputs)",
    "lability_error": "|lability - HMM|",
    "matched_excess": "matched distance\nminus baseline",
}
"""The statistics of a cell shown as heatmaps (attribute of :class:`GridCell`: what it is)."""


def grid_records(tables: Mapping[str, Sequence[Mapping[str, Any]]],
                 epochs: Mapping[str, int] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of grid cells from one or more results tables, one row per run.

    Args:
        tables: {label: records of a sweep's ``results.csv``}, in order of preference: a run
            (its ``name``) found in several tables is taken from the first.
        epochs: {target: the grid's planned epochs} (default :data:`hmmrnn.paper.EPOCHS`); a
            row planned for another number of epochs is another recipe and is left out.

    Returns:
        ``(rows, left_out)``: the rows of the grid's targets, hidden sizes and input dimensions
        (:data:`hmmrnn.paper.GRID_TARGETS`, ``GRID_HIDDEN``, ``GRID_INPUT``), each a copy with
        ``source`` = its table's label, sorted by target, |h|, d and seed; and a line for every
        row of a grid cell left out: another number of epochs, a try of a seed search (the
        grid replaces no seed), or a run whose loss became non-finite (no fit statistics).

    Raises:
        ValueError: a row without a column the grid needs (not a row of a sweep's table).
    """
    epochs = dict(paper.EPOCHS if epochs is None else epochs)
    seen: dict[str, dict[str, Any]] = {}
    left_out: list[str] = []
    for label, records in tables.items():
        for i, r in enumerate(records):
            absent = [k for k in _REQUIRED if k not in r]
            if absent:
                raise ValueError(f"{label}: row {i} has no column(s) {absent}: not a row of a sweep's results.csv")
            target = str(r["target"])
            if (target not in paper.GRID_TARGETS or int(r["hidden"]) not in paper.GRID_HIDDEN
                    or int(r["input"]) not in paper.GRID_INPUT):
                continue
            if str(r["name"]) in seen:
                continue
            if target not in epochs:
                raise ValueError(f"no planned epochs for target {target!r} (epochs has {sorted(epochs)})")
            if int(r["epochs"]) != epochs[target]:
                left_out.append(f"{r['name']} ({label}): planned for {int(r['epochs'])} epochs, the grid's {epochs[target]}")
                continue
            if not missing(r.get("search")):
                left_out.append(f"{r['name']} ({label}): a try of the seed search {r['search']} (the grid replaces no seed)")
                continue
            if str(r.get("stop_reason", "")) == "non-finite loss":
                left_out.append(f"{r['name']} ({label}): diverged (non-finite loss), no fit statistics; a failed run of its cell")
                continue
            seen[str(r["name"])] = {**r, "source": label}
    rows = sorted(seen.values(), key=lambda r: (paper.GRID_TARGETS.index(str(r["target"])), int(r["hidden"]),
                                                int(r["input"]), int(r["seed"])))
    return rows, left_out


def _marginal_error(r: Mapping[str, Any]) -> float:
    """Largest |marginal_k - marginal_hmm_k| over the outputs whose HMM marginal is frequent."""
    errors = []
    k = 0
    while f"marginal_hmm_{k}" in r and not missing(r[f"marginal_hmm_{k}"]):
        exact = float(r[f"marginal_hmm_{k}"])
        if exact >= FREQUENT_OUTPUT_THRESHOLD:
            errors.append(abs(_finite(r.get(f"marginal_{k}"), f"{r['name']}: marginal_{k}") - exact))
        k += 1
    if not errors:
        raise ValueError(f"{r['name']}: no marginal columns (marginal_<k>, marginal_hmm_<k>)")
    return max(errors)


@dataclass(frozen=True)
class GridCell:
    """The finished runs of one cell (target, |h|, d), aggregated over seeds.

    Attributes:
        target, hidden, input: the cell.
        seeds: (n,) the seeds of its finished runs, in order.
        sources: the tables they came from (labels of :func:`grid_records`), one per seed.
        n_bifurcated: runs whose training bifurcated (the sweep's rule).
        max_sq_error: mean over seeds of each run's largest squared transition-matrix error.
        worst_run_error: the largest of those (a failed seed shows here).
        run_errors: (n,) each run's largest squared error, in seed order.
        marginal_error: mean over seeds of the largest |marginal - HMM| of the frequent outputs.
        lability_error: mean over seeds of |lability - HMM lability|.
        matched_excess: mean over seeds of (matched distance - HMM-vs-HMM baseline); <= 0 is as
            close to the HMM as a second HMM sample.
        matched_baseline: the HMM-vs-HMM baseline (the same evaluation for every seed).
        rare_frequency: mean over seeds of the rare output's frequency (the linear chains' middle
            output, HMM 0.01); the transition-matrix row of an output emitted a handful of times
            is estimated from that handful.
        eval_n, eval_length: the evaluation (sequences, steps).
        wall_s: (n,) seconds of each run, training and evaluation (:func:`run_seconds`).
    """

    target: str
    hidden: int
    input: int
    seeds: tuple[int, ...]
    sources: tuple[str, ...]
    n_bifurcated: int
    max_sq_error: float
    worst_run_error: float
    run_errors: tuple[float, ...]
    marginal_error: float
    lability_error: float
    matched_excess: float
    matched_baseline: float
    rare_frequency: float
    eval_n: int
    eval_length: int
    wall_s: tuple[float, ...]

    @property
    def n_runs(self) -> int:
        return len(self.seeds)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.target, self.hidden, self.input)


def grid_cells(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int, int], GridCell]:
    """Aggregate the rows of :func:`grid_records` per cell ``(target, hidden, input)``.

    Raises:
        ValueError: a fit statistic that is empty or not finite (reported, never averaged
            away), or runs of one cell evaluated differently (other n, length or baseline).
    """
    by: dict[tuple[str, int, int], list[Mapping[str, Any]]] = {}
    for r in records:
        by.setdefault((str(r["target"]), int(r["hidden"]), int(r["input"])), []).append(r)
    cells = {}
    for key, rs in by.items():
        rs = sorted(rs, key=lambda r: int(r["seed"]))
        errors = [_finite(r["max_sq_transition_error"], f"{r['name']}: max_sq_transition_error") for r in rs]
        baselines = {round(_finite(r["matched_distance_baseline"], f"{r['name']}: matched_distance_baseline"), 9) for r in rs}
        evaluations = {(int(r["eval_n"]), int(r["eval_length"])) for r in rs}
        if len(baselines) > 1 or len(evaluations) > 1:
            raise ValueError(f"cell {key}: runs evaluated differently (n, length {sorted(evaluations)}; baselines {sorted(baselines)})")
        (eval_n, eval_length), = evaluations
        cells[key] = GridCell(
            target=key[0], hidden=key[1], input=key[2],
            seeds=tuple(int(r["seed"]) for r in rs),
            sources=tuple(str(r.get("source", "")) for r in rs),
            n_bifurcated=sum(bool(truth(r["bifurcated"])) for r in rs),
            max_sq_error=float(np.mean(errors)),
            worst_run_error=float(max(errors)),
            run_errors=tuple(float(e) for e in errors),
            marginal_error=float(np.mean([_marginal_error(r) for r in rs])),
            lability_error=float(np.mean([abs(_finite(r["lability"], f"{r['name']}: lability") - float(r["lability_hmm"]))
                                          for r in rs])),
            matched_excess=float(np.mean([_finite(r["matched_distance"], f"{r['name']}: matched_distance")
                                          - float(r["matched_distance_baseline"]) for r in rs])),
            matched_baseline=float(next(iter(baselines))),
            rare_frequency=float(np.mean([_finite(r["rare_frequency"], f"{r['name']}: rare_frequency") for r in rs])),
            eval_n=eval_n, eval_length=eval_length,
            wall_s=tuple(run_seconds(r) for r in rs),
        )
    return dict(sorted(cells.items(), key=lambda kv: (paper.GRID_TARGETS.index(kv[0][0]), kv[0][1], kv[0][2])))


def cell_array(cells: Mapping[tuple[str, int, int], GridCell], target: str, statistic: str) -> np.ndarray:
    """One statistic of one target's cells as a ``(len(GRID_HIDDEN), len(GRID_INPUT))`` array.

    Rows are |h| in :data:`hmmrnn.paper.GRID_HIDDEN`, columns d in ``GRID_INPUT``; a cell
    without a finished run is NaN. ``statistic`` is a key of :data:`STATISTICS` or
    ``"n_runs"``.
    """
    if statistic not in STATISTICS and statistic != "n_runs":
        raise ValueError(f"unknown statistic {statistic!r}; known: {[*STATISTICS, 'n_runs']}")
    out = np.full((len(paper.GRID_HIDDEN), len(paper.GRID_INPUT)), np.nan)
    for i, h in enumerate(paper.GRID_HIDDEN):
        for j, d in enumerate(paper.GRID_INPUT):
            cell = cells.get((target, h, d))
            if cell is not None:
                out[i, j] = getattr(cell, statistic)
    return out


def cell_table(cells: Mapping[tuple[str, int, int], GridCell], title: str = "every finished cell of the grid") -> Table:
    """One row per finished cell: seeds, failures, the four fit statistics and the wall time.

    Cells with a run that never bifurcated are flagged.
    """
    rows, flagged = [], []
    for cell in cells.values():
        if cell.n_bifurcated < cell.n_runs:
            flagged.append(len(rows))
        rows.append([
            cell.target, str(cell.hidden), str(cell.input), ", ".join(str(s) for s in cell.seeds),
            str(cell.n_runs - cell.n_bifurcated),
            f"{cell.max_sq_error:.4f}", f"{cell.worst_run_error:.4f}", f"{cell.marginal_error:.3f}",
            f"{cell.lability_error:.3f}", f"{cell.rare_frequency:.1e}", f"{cell.matched_excess:+.3f}", f"{cell.matched_baseline:.3f}",
            f"{np.median(cell.wall_s) / 60:.0f}",
            ", ".join(dict.fromkeys(cell.sources)),
        ])
    return Table(["target", "|h|", "d", "seeds", "not bifurcated", "max sq. error (mean)", "max sq. error (worst run)",
                  "marginal error", "lability error", "rare output (HMM 0.01)", "matched - baseline", "baseline", "minutes per run", "table"],
                 rows, title=title, flagged=flagged,
                 notes=["a cell's value is the mean over its finished seeds; errors of the run's best weights, readout "
                        "not calibrated; matched distance and baseline from the same evaluation; minutes: median wall "
                        "time of a run (hmmrnn.grid.run_seconds) on the machine that ran it; flagged: a run never bifurcated"])


def _of(cells: Mapping[tuple[str, int, int], GridCell], target: str | None,
        min_input: int = 0) -> list[GridCell]:
    return [c for c in cells.values() if (target is None or c.target == target) and c.input >= min_input]


def worst_cell_error(cells: Mapping[tuple[str, int, int], GridCell], target: str) -> GridCell | None:
    """The finished cell of ``target`` holding the run with the largest squared transition-matrix
    error (:attr:`GridCell.worst_run_error`; None: none finished)."""
    of = _of(cells, target)
    return max(of, key=lambda c: c.worst_run_error) if of else None


def share_printing_zero(cells: Mapping[tuple[str, int, int], GridCell], target: str | None = None,
                        min_input: int = 10) -> tuple[float, int]:
    """Share of the finished *runs* in cells with d >= ``min_input`` whose largest squared error
    prints as 0.00, and their number.

    A run prints as 0.00 when its largest squared error is below :data:`ZERO_AT_TWO_DECIMALS`
    (the paper prints 2 decimals, one value per network). ``target`` None: every target.
    Returns ``(nan, 0)`` when no such run has finished.
    """
    of = _of(cells, target, min_input)
    errors = [e for c in of for e in c.run_errors]
    if not errors:
        return float("nan"), 0
    return sum(e < ZERO_AT_TWO_DECIMALS for e in errors) / len(errors), len(errors)


def matched_excess(cells: Mapping[tuple[str, int, int], GridCell], target: str,
                   min_input: int = 10) -> GridCell | None:
    """The finished cell of ``target`` with d >= ``min_input`` farthest above its baseline (None: none finished)."""
    of = _of(cells, target, min_input)
    return max(of, key=lambda c: c.matched_excess) if of else None


def d1_worst(cells: Mapping[tuple[str, int, int], GridCell], target: str, hidden: int) -> bool | None:
    """Whether d = 1 has the largest matched excess among the finished cells of ``target`` at ``hidden``.

    None when the cell d = 1 or every other d of that row has not finished (nothing to compare).
    """
    row = [c for c in cells.values() if c.target == target and c.hidden == hidden]
    one = [c for c in row if c.input == 1]
    others = [c for c in row if c.input != 1]
    if not one or not others:
        return None
    return bool(one[0].matched_excess > max(c.matched_excess for c in others))


def failure_rate(cells: Mapping[tuple[str, int, int], GridCell], target: str) -> tuple[float, int]:
    """Share of the finished runs of ``target`` that never bifurcated, and the number of runs ((nan, 0): none)."""
    of = _of(cells, target)
    n = sum(c.n_runs for c in of)
    if n == 0:
        return float("nan"), 0
    return sum(c.n_runs - c.n_bifurcated for c in of) / n, n
