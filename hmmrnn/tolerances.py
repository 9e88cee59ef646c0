"""Every tolerance of the reproduction report, in one table, each with its reason.

A claim of the book (:mod:`hmmrnn.report`) that compares a number with a reference names its
tolerance by a key of :data:`TOLERANCES`; it never types a number. The same kind of quantity
gets the same tolerance in every chapter (e.g. every training epoch that the paper dates --
the bifurcation, the secondary loss drop -- is compared within ``"epoch"``).

Two kinds of entry:

* a **fixed** tolerance (``value`` is a number): the same for every claim of that kind;
* a **computed** one (``value`` is None): its size comes from the measurement itself (our
  confidence interval, a multiple of a standard error). A chapter passes the size with
  :func:`computed`, which states the kind; the report shows the kind's reason beside it.

The paper's own numbers are in :mod:`hmmrnn.paper`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Tolerance", "TOLERANCES", "tolerance", "computed"]


@dataclass(frozen=True)
class Tolerance:
    """A tolerance and why it has that size.

    Attributes:
        key: its name in :data:`TOLERANCES`.
        value: the allowed deviation (in the unit of the quantity); None for a computed kind
            until :func:`computed` gives it a size.
        reason: why this size, in words (shown on the report page).
    """

    key: str
    value: float | None
    reason: str


def _table(*entries: Tolerance) -> dict[str, Tolerance]:
    return {t.key: t for t in entries}


TOLERANCES: dict[str, Tolerance] = _table(
    # ---- exact statistics of the targets, against the paper's printed digits
    Tolerance("rounding_4_decimals", 5e-5,
              "half the last digit of a number the paper prints to 4 decimals (lability 0.2562, row 0.9405)"),
    Tolerance("rounding_2_decimals", 5e-3,
              "half the last digit of a number the paper prints to 2 decimals (squared errors 0.00-0.02)"),
    Tolerance("rounding_3_decimals", 5e-4,
              "half the last digit of a number the paper prints to 3 decimals (marginals 0.495, middle rows)"),
    Tolerance("sampling_error", None,
              "a sampled statistic against an exact one: 4 standard errors (batch means) plus the paper's rounding"),
    # ---- training
    Tolerance("loss_rounding", 0.05,
              "the paper prints best validation losses to 1 decimal: half its last digit around its range over seeds"),
    Tolerance("epoch", 20.0,
              "an epoch read off training snapshots 10 epochs apart: two snapshot intervals (the paper's epochs are "
              "'~60', '~100', read off its own snapshots); the same for every dated training event"),
    Tolerance("transition_rate", 0.02,
              "a switching rate (1 / mean dwell) that the paper quotes to 2 decimals as '~0.05' / '~0.11': 0.02 per step"),
    # ---- emission fit of a trained network
    Tolerance("fit_marginal", 0.03,
              "the book's fit bar for the frequent outputs' marginals (the paper: 'precisely reproduced', no number)"),
    Tolerance("fit_lability", 0.02,
              "a trained network's probability of an output change against the HMM's: 0.02 per step (stated convention)"),
    Tolerance("rare_frequency", 0.005,
              "the rare output's frequency against the HMM's 0.01: half of it"),
    Tolerance("matched_distance", 0.05,
              "a Sinkhorn-matched Euclidean distance (5,000 sequences of 100 steps) against the HMM-vs-HMM baseline: "
              "'at the baseline' within 0.05, a quarter of the smallest excess the paper calls worse "
              "(d = 1: 4.747 against 4.551); the same for our baseline against the paper's (stated convention)"),
    # ---- geometry of the orbit
    Tolerance("explained_variance", 5.0,
              "percentage points of explained variance (PC1 and PC2 alike): the paper gives one network per target and "
              "no spread; 5 points is the step by which it tells neighbouring chains apart (M = 3 vs 4: 53 vs 49 %)"),
    Tolerance("readout_alignment", 0.15,
              "a norm in [0, 1]: 0.15, below the paper's own step from M = 2 to M = 3 (0.51 to 0.32) (stated convention)"),
    # ---- kick neurons
    Tolerance("preactivation", 2.0,
              "the paper's 'about -6 to +8', read off a figure: 2 units of pre-activation (stated convention)"),
    Tolerance("count", 0.0, "a count (neurons, groups): must be equal"),
    # ---- a paper range
    Tolerance("paper_range", 0.0,
              "the paper gives a range (its spread over runs or networks): our value must lie inside it, not widened"),
    Tolerance("ci95", None,
              "a Monte-Carlo mean against the paper's range over networks: passes when our 95 % confidence interval "
              "meets the range (tolerance = the interval's half-width)"),
)
"""Every tolerance by key. Fixed ones have a ``value``; computed ones (None) get theirs from :func:`computed`."""


def tolerance(key: str) -> Tolerance:
    """The fixed tolerance ``key``.

    Raises:
        KeyError: no such key, or a computed kind (use :func:`computed`).
    """
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance {key!r}; known: {sorted(TOLERANCES)}")
    tol = TOLERANCES[key]
    if tol.value is None:
        raise KeyError(f"tolerance {key!r} is computed from the measurement: use tolerances.computed({key!r}, size)")
    return tol


def computed(key: str, size: float) -> Tolerance:
    """A computed tolerance of kind ``key`` (e.g. ``"ci95"``) with its size for one claim.

    Raises:
        KeyError: no such key, or a fixed kind (name it by its key instead).
        ValueError: ``size`` not a finite number >= 0.
    """
    if key not in TOLERANCES:
        raise KeyError(f"no tolerance {key!r}; known: {sorted(TOLERANCES)}")
    if TOLERANCES[key].value is not None:
        raise KeyError(f"tolerance {key!r} is fixed ({TOLERANCES[key].value:g}): name it by its key")
    size = float(size)
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"a computed tolerance must be a finite number >= 0, got {size!r}")
    return Tolerance(key, size, TOLERANCES[key].reason)
