"""The training campaign's seeds side by side: every run of a sweep's results table, per target.

A sweep (:mod:`hmmrnn.sweep`) writes one row per run to ``<out>/results.csv``. A chapter reads
that table with pandas and passes its records here (``df.to_dict("records")``; an empty cell
is NaN there and ``None`` in :func:`hmmrnn.sweep.collect`'s rows, both read as missing):

* :func:`seed_table` lists every run: seed, epochs, best validation loss, training bifurcation,
  fit statistics, and which run is shipped;
* :func:`search_record_table` groups a seed search's tries by how they ended (succeeded,
  stopped by the rule, trained on after a dip and failed), with their seeds and hours;
* :func:`spread_table` gives, per target, the spread over the finished seeds beside the
  paper's ranges (``hmmrnn.paper.BEST_VAL_LOSS``, ``BIFURCATION_EPOCH``);
* :func:`success_rate` puts an exact binomial interval on how often a seed search's tries
  succeed, :func:`authors_success_rate` reads the authors' re-seeding of a cell the same way
  (``hmmrnn.paper.RESEED_SEEDS``), and :func:`compare_success_rates` tests whether two such
  records share one success probability (Fisher's exact test).

Numbers are formatted here at the precision the sweep's evaluation carries (5,000 sequences:
three decimals for rates and marginals); nothing is recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import paper
from .checkpoints import load
from .search import BifurcationRule
from .tables import Table

__all__ = ["SeedSpread", "SuccessRate", "authors_success_rate", "compare_success_rates", "missing", "run_seconds",
           "search_record_table", "seed_spread", "seed_table", "spread_table", "shipped_seeds", "success_rate"]

_REQUIRED = ("target", "seed", "epochs_run", "stop_reason", "best_val_loss", "best_epoch", "bifurcated")


def missing(value: Any) -> bool:
    """Whether a results cell is empty (None, NaN or an empty string)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _check(records: Sequence[Mapping[str, Any]]) -> None:
    for i, r in enumerate(records):
        absent = [k for k in _REQUIRED if k not in r]
        if absent:
            raise ValueError(f"results row {i} has no column(s) {absent}: not a row of a sweep's results.csv")


def truth(value: Any) -> bool | None:
    """A results cell read as a truth value: True or False (pandas' bools, or the csv text
    "True"/"False"), None for an empty cell (:func:`missing`); any other text raises ValueError."""
    if missing(value):
        return None
    if isinstance(value, str):
        if value not in ("True", "False"):
            raise ValueError(f"not a boolean cell: {value!r}")
        return value == "True"
    return bool(value)


def _f(value: Any, spec: str) -> str:
    return "-" if missing(value) else format(float(value), spec)


_RULE_EARLY = BifurcationRule().early  # the default rule's early window (the notes' wording)


def _finite(value: Any, what: str) -> float:
    """A results cell as a finite float; an empty or non-finite cell raises ValueError naming ``what``."""
    if missing(value):
        raise ValueError(f"{what} is empty")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} is not finite ({v})")
    return v


def run_seconds(r: Mapping[str, Any]) -> float:
    """The seconds one run took, from its row: the finishing task's ``wall_s``, or for a run
    resumed from epoch E > 0 its ``train_s`` scaled from the epochs that task trained to all of
    them, plus ``eval_s`` (an estimate: the earlier tasks' epochs are taken to cost the same)."""
    wall = _finite(r["wall_s"], f"{r['name']}: wall_s")
    resumed = 0 if missing(r.get("resumed_from")) else int(r["resumed_from"])
    if resumed <= 0:
        return wall
    trained = int(r["epochs_run"]) - resumed
    if trained <= 0:
        raise ValueError(f"{r['name']}: resumed from epoch {resumed} but finished at {r['epochs_run']}")
    return _finite(r["train_s"], f"{r['name']}: train_s") * int(r["epochs_run"]) / trained + _finite(r["eval_s"], f"{r['name']}: eval_s")


def _i(value: Any) -> str:
    return "-" if missing(value) else str(int(value))


def _paper_range(values: Any) -> str:
    if values is None:
        return "-"
    if isinstance(values, tuple):
        lo, hi = values
        return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
    return f"{values:g}"


def _bifurcation_cell(r: Mapping[str, Any], bif: bool | None) -> str:
    """The bifurcation column of a run: its epoch (with the plateau's first epoch when the rule
    moved its window: "100 (plateau from 75)"), "none", "no plateau" (no early level) or "-"."""
    if bif is None:
        return "-"
    if not missing(r.get("plateau_from")) and "plateau_moved" not in r:
        raise ValueError(f"run {r.get('name', r['target'])}: a row with plateau_from but no plateau_moved column, "
                         "from a table written before that column; rebuild it with hmmrnn.sweep.write_table")
    late = f" (plateau from {_i(r['plateau_from'])})" if truth(r.get("plateau_moved")) else ""
    if bif:
        return _i(r.get("bifurcation_epoch")) + late
    return ("no plateau" if missing(r.get("rate_early")) and r.get("stop_reason") != "non-finite loss" else "none") + late


def seed_table(records: Sequence[Mapping[str, Any]], shipped: Mapping[str, int] | None = None,
               title: str = "every run of the campaign") -> Table:
    """One row per run, sorted by target and seed.

    Args:
        records: rows of a sweep's results table.
        shipped: {target: seed} of the run shipped as ``<target>-paper`` (marked in a column).

    Rows of runs that ended without a bifurcation are flagged, and so are the failed tries of a
    seed search (marked in the last column): a try can bifurcate by the rule and still fail when
    its validation loss did not drop (:mod:`hmmrnn.search`, "Success of a search try").
    """
    _check(records)
    shipped = dict(shipped or {})
    rows, flagged = [], []
    for r in sorted(records, key=lambda r: (str(r["target"]), int(r["seed"]))):
        bif = truth(r["bifurcated"])
        fit = truth(r.get("fit_passes"))
        lab = f"{_f(r.get('lability'), '.3f')} ({_f(r.get('lability_hmm'), '.3f')})"
        matched = f"{_f(r.get('matched_distance'), '.2f')} ({_f(r.get('matched_distance_baseline'), '.2f')})"
        is_shipped = shipped.get(str(r["target"])) == int(r["seed"])
        failed_try = _failed_try(r)
        if bif is False or failed_try:
            flagged.append(len(rows))
        rows.append([
            str(r["target"]), _i(r["seed"]), _i(r["epochs_run"]),
            f"{_f(r['best_val_loss'], '.3f')} @ {_i(r['best_epoch'])}",
            _bifurcation_cell(r, bif),
            _f(r.get("max_sq_transition_error"), ".4f"), lab, matched,
            "-" if fit is None else ("yes" if fit else "no"),
            "shipped" if is_shipped else ("" if not failed_try else "search try failed" + (" (no loss drop)" if bif else "")),
        ])
    return Table(["target", "seed", "epochs", "best val. loss @ epoch", "bifurcation epoch",
                  "max sq. transition error", "lability (HMM)", "matched distance (HMM-HMM)", "fit bar", ""],
                 rows, title=title, flagged=flagged,
                 notes=["bifurcation: the sweep's rule (hmmrnn.search), none = no bifurcation by the end of the run "
                        f"(flagged), no plateau = no check of the run flickered (every one silent or diverged: the "
                        f"rule cannot date a drop; flagged), plateau from E = no check of the rule's early "
                        f"window (epochs {_RULE_EARLY[0]}-{_RULE_EARLY[1]} by default) flickered, and the rule measured the plateau from the "
                        f"first that did (epoch E); search try failed = a try of a seed search that did not succeed (no "
                        "bifurcation, or, marked so, no drop of its validation loss; flagged); fit statistics of the run's best "
                        "weights, its readout not calibrated"])


_PAST_END = "ran past the search's end (not counted)"
"""Outcome of a try that finished after its search had its K-th success (:func:`search_record_table`)."""


def _try_outcome(r: Mapping[str, Any]) -> str:
    """How one try of a seed search ended: succeeded, stopped by the rule, or trained to the end and failed."""
    if truth(r.get("search_success")) is True:
        return "succeeded"
    reason = str(r.get("stop_reason", ""))
    if reason.startswith("no bifurcation by epoch"):
        return f"failed: stopped at epoch {_i(r['epochs_run'])}"
    if reason == "completed":
        return ("failed: trained to the end, bifurcation by the rule but no loss drop"
                if truth(r.get("bifurcated")) else "failed: trained to the end, no bifurcation")
    return f"failed: {reason or 'unknown stop reason'}"


def search_record_table(records: Sequence[Mapping[str, Any]], counted: Mapping[str, int] | None = None,
                        title: str = "the seed searches' tries, by outcome") -> Table:
    """Every finished try of every seed search, grouped by how it ended.

    One row per (search, outcome): the tries' count, their seeds, the range of their best
    validation losses, the epochs they trained and the hours they took (:func:`run_seconds`,
    on the machine that ran them), then one row per search with its totals. A try that
    stopped by the early-stop rule trained to that rule's epoch; a try whose rate dipped
    below half its plateau trains on to the last epoch whatever its final verdict
    (:mod:`hmmrnn.search`), so its failure costs the most. Rows of runs that are no search's
    tries are left out.

    Args:
        records: rows of a sweep's results table.
        counted: {search: tries the search counts} (:func:`hmmrnn.sweep.search_tallies`). A
            search ends at its K-th success in seed order, but a try already running then is
            finished and recorded: its row is shown as "ran past the search's end" and left
            out of the totals. Default: every row counts.

    Raises:
        ValueError: a row without the results table's columns, or with an empty or non-finite
            best loss or time.
    """
    _check(records)
    by: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in sorted(records, key=lambda r: int(r["seed"])):  # every group lists its tries in seed order
        if missing(r.get("search")):
            continue
        limit = None if counted is None else counted.get(str(r["search"]))
        outcome = _PAST_END if limit is not None and int(r["search_try"]) > limit else _try_outcome(r)
        by.setdefault(str(r["search"]), {}).setdefault(outcome, []).append(r)
    rows = []
    for search, outcomes in by.items():
        counted_groups = sorted((o for o in outcomes if o != _PAST_END), key=lambda o: (o != "succeeded", o))
        groups = [(o, outcomes[o]) for o in counted_groups]
        every = [r for _, rs in groups for r in rs]
        past = [(_PAST_END, outcomes[_PAST_END])] if _PAST_END in outcomes else []
        for outcome, rs in groups + [("all tries", every)] + past:
            if not rs:  # every try of the search ran past its end
                continue
            losses = [_finite(r["best_val_loss"], f"{r['name']}: best_val_loss") for r in rs]
            span = f"{min(losses):.3f}" if len(losses) == 1 else f"{min(losses):.3f}-{max(losses):.3f}"
            rows.append([search, outcome, str(len(rs)), ", ".join(_i(r["seed"]) for r in sorted(rs, key=lambda r: int(r["seed"]))),
                         span, str(sum(int(r["epochs_run"]) for r in rs)), f"{sum(run_seconds(r) for r in rs) / 3600:.1f}"])
    return Table(["search", "outcome", "tries", "seeds", "best val. loss (min-max)", "epochs trained", "hours"],
                 rows, title=title, align="llrlrrr",
                 notes=["stopped at epoch E: the early-stop rule found no drop of the switching rate by epoch E; trained "
                        "to the end: a check found the rate below half its plateau (a dip), after which the rule never "
                        "stops a run, and the final verdict was a failure (hmmrnn.search)",
                        "hours: training and evaluation of the tries (hmmrnn.campaign.run_seconds) on the machine that "
                        "ran them"])


@dataclass(frozen=True)
class SeedSpread:
    """The spread of one target's finished runs.

    The tries of a seed search (rows with a ``search``) that failed are left out of the
    spread and counted: the paper's ranges are over the seeds its authors kept, and they
    re-seeded a run until it bifurcated (``hmmrnn.paper``), so a failed try is no seed of
    theirs. Its row stays in :func:`seed_table`.

    Attributes:
        target: the HMM.
        n_runs: finished runs in the spread (every stop reason; failed search tries excluded).
        n_bifurcated: runs that bifurcated.
        best_losses: (n_runs,) their best validation losses, in seed order.
        bifurcation_epochs: the bifurcation epochs of the runs that bifurcated, in seed order.
        search_tries: the finished tries of a seed search among the target's rows (0: none).
        failed_tries: how many of them did not succeed (no bifurcation, or no drop of the
            validation loss: :func:`hmmrnn.sweep.rule_fields`).
    """

    target: str
    n_runs: int
    n_bifurcated: int
    best_losses: tuple[float, ...]
    bifurcation_epochs: tuple[int, ...]
    search_tries: int = 0
    failed_tries: int = 0


def _failed_try(r: Mapping[str, Any]) -> bool:
    """Whether a row is a try of a seed search that did not succeed."""
    return not missing(r.get("search")) and truth(r.get("search_success")) is not True


def seed_spread(records: Sequence[Mapping[str, Any]]) -> dict[str, SeedSpread]:
    """Per target, its runs' spread (see :class:`SeedSpread`), targets in first-seen order."""
    _check(records)
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by.setdefault(str(r["target"]), []).append(r)
    out = {}
    for target, rows in by.items():
        tries = sum(not missing(r.get("search")) for r in rows)
        rs = sorted((r for r in rows if not _failed_try(r)), key=lambda r: int(r["seed"]))
        failed = len(rows) - len(rs)
        losses = tuple(float(r["best_val_loss"]) for r in rs)
        if not all(math.isfinite(v) for v in losses):
            raise ValueError(f"{target}: a best validation loss is not finite: {losses}")
        bifs = tuple(int(r["bifurcation_epoch"]) for r in rs if truth(r["bifurcated"]))
        out[target] = SeedSpread(target, len(rs), len(bifs), losses, bifs, tries, failed)
    return out


def spread_table(records: Sequence[Mapping[str, Any]], title: str = "seeds of each target beside the paper") -> Table:
    """Per target: runs, how many bifurcated, the best-loss range and bifurcation epochs, the paper's."""
    rows = []
    for target, s in seed_spread(records).items():
        lo, hi = (f"{min(s.best_losses):.2f}", f"{max(s.best_losses):.2f}") if s.n_runs else ("-", "-")
        span = lo if s.n_runs <= 1 else f"{lo}-{hi}"
        rows.append([
            target, str(s.n_runs), str(s.n_bifurcated), span,
            _paper_range(paper.BEST_VAL_LOSS.get(target)),
            ", ".join(str(e) for e in s.bifurcation_epochs) or "-",
            _paper_range(paper.BIFURCATION_EPOCH.get(target)),
            f"{s.failed_tries} of {s.search_tries}" if s.search_tries else "-",
        ])
    return Table(["target", "runs", "bifurcated", "best val. loss (min-max)", "best val. loss, paper",
                  "bifurcation epochs", "bifurcation epoch, paper", "search tries failed"], rows, title=title,
                 notes=["paper: the best validation losses of the authors' three seeds (hmmrnn.paper.BEST_VAL_LOSS) "
                        "and the bifurcation epoch of their Fig. on the training bifurcation",
                        "a seed search's failed tries are not in the spread (the authors re-seeded until a run "
                        "bifurcated; the seeds they report are their successes); every try is a row of the table below"])


@dataclass(frozen=True)
class SuccessRate:
    """How often the tries of a seed search succeeded, with an exact binomial interval.

    Attributes:
        successes: tries that succeeded.
        tries: tries in all (at least 1).
        low: lower end of the Clopper-Pearson interval of the success probability.
        high: its upper end.
        level: the interval's confidence level.
    """

    successes: int
    tries: int
    low: float
    high: float
    level: float

    @property
    def rate(self) -> float:
        """successes / tries."""
        return self.successes / self.tries

    def __str__(self) -> str:
        return (f"{self.successes} in {self.tries} ({100 * self.rate:.1f} %; {100 * self.level:.0f} % interval "
                f"{100 * self.low:.1f}-{100 * self.high:.1f} %)")


def success_rate(successes: int, tries: int, level: float = 0.95) -> SuccessRate:
    """The success rate of ``tries`` independent tries with an exact (Clopper-Pearson) interval.

    The interval treats ``tries`` as fixed in advance. A seed search stops at its K-th success
    (inverse sampling), so for a finished search the interval and :func:`compare_success_rates`
    are approximate, and successes / tries leans high; for a search still running they are
    what the tries so far say.

    Args:
        successes: tries that succeeded, 0 <= successes <= tries.
        tries: tries in all, >= 1.
        level: confidence level of the interval, in (0, 1).

    Raises:
        ValueError: a count that is not a non-negative integer, more successes than tries, no
            tries, or a level outside (0, 1).
    """
    from scipy.stats import binomtest

    for name, value in (("successes", successes), ("tries", tries)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if tries < 1:
        raise ValueError("a success rate needs at least one try, got tries=0")
    if successes > tries:
        raise ValueError(f"successes ({successes}) cannot exceed tries ({tries})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    ci = binomtest(int(successes), int(tries)).proportion_ci(confidence_level=level, method="exact")
    return SuccessRate(int(successes), int(tries), float(ci.low), float(ci.high), float(level))


def authors_success_rate(target: str, hidden: int, input_size: int, level: float = 0.95) -> SuccessRate | None:
    """The authors' re-seeding of one cell (``hmmrnn.paper.RESEED_SEEDS``) read as a seed search.

    Their run folders name the seeds finally used in each of a cell's slots, filled in
    increasing order. Read as tries of seeds 0, 1, 2, ... in order, the kept seeds are the
    successes and every seed up to the largest kept one is a try: (4, 19, 20) is 3 successes in
    21 tries. That reading is an assumption (the folders do not record the failed tries); it
    gives the most tries the record allows. None for a cell the folders do not cover.
    """
    seeds = paper.RESEED_SEEDS.get((target, int(hidden), int(input_size)))
    if seeds is None:
        return None
    return success_rate(len(seeds), max(seeds) + 1, level)


def compare_success_rates(a: SuccessRate, b: SuccessRate) -> float:
    """Two-sided p-value of Fisher's exact test that ``a`` and ``b`` share one success probability."""
    from scipy.stats import fisher_exact

    table = [[a.successes, a.tries - a.successes], [b.successes, b.tries - b.successes]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def shipped_seeds(records: Sequence[Mapping[str, Any]], folder: str | Path,
                  shipped: Mapping[str, str]) -> dict[str, int]:
    """Which run of the campaign each shipped checkpoint is: {target: seed}.

    A run is the shipped one when its weights (``<folder>/<name>/weights.npz``) equal the
    shipped checkpoint's exactly; a target whose shipped network is no run of the table (it was
    trained before the campaign) is left out.

    Args:
        records: rows of the results table in ``folder``.
        folder: the sweep's output folder (where the run folders are).
        shipped: {target: shipped checkpoint name or folder}, e.g. ``{"fully3": "fully3-paper"}``.
    """
    _check(records)
    folder = Path(folder)
    found: dict[str, int] = {}
    for target, name in shipped.items():
        ship = load(name).weights
        for r in records:
            if str(r["target"]) != target or "name" not in r:
                continue
            run = load(folder / str(r["name"])).weights
            if all(np.array_equal(getattr(run, k), getattr(ship, k)) for k in ("W_in", "W_rec", "W_out")):
                found[target] = int(r["seed"])
    return found
