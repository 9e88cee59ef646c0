"""The seed search made explicit: watch a training run for its bifurcation, stop it by a stated rule.

The authors re-seeded their five-state runs until they bifurcated (their released run folders
name the seeds kept: for |h| = 150, d = 100, seeds 4, 19 and 20) and never said how often
that failed. Here the rule is code, applied while a run trains:

* **Bifurcation.** Detected as chapters "Global dynamics" and "Compositionality" detect it:
  the transition rate of the network's own noise-driven run (1 / mean dwell of the argmax
  output; :func:`hmmrnn.dynamics.snapshot_dynamics` on the current weights) is located by
  the midpoint rule (:func:`hmmrnn.dynamics.detect_transition`) between its early plateau
  (``early`` epochs) and its level over the last ``final_count`` checks; the run has
  bifurcated when that final level is below ``drop`` (0.5) times the early plateau.
* **Silent checks.** A check whose output never changed in any of its ``n_traj`` runs (rate
  exactly ``1 / n_steps``: the network sits on one output) measures no flickering: it is left
  out, like a diverged check. Without this, a run that fell silent for a few checks inside
  the early window (grid ``linear3-h50-d100-s1``: 0.49 at epoch 10, 0.002 at 15-25, 0.33 at
  30, 0.06 from 70) had a plateau of 0.002 and its drop went unseen; and a run that was
  silent until its switching appeared (campaign ``cyclic4``: 0.002 to epoch ~95, then
  0.02-0.05) has no flickering plateau in the early window.
* **A late plateau.** When no check of the early window flickers (every one silent or
  diverged), the plateau is measured over a window of the same length that starts at the
  first flickering check after it. Grid ``linear3-h150-d1-s0`` diverged or was silent at
  every check of epochs 10-70, flickered at 0.16-0.24 over epochs 75-95 and fell to the
  HMM's slow switching (0.06) from epoch 110; with a fixed window it had no plateau and
  counted as not bifurcated. (This second amendment was made after that run and
  ``-s1`` were seen. Of the three d = 10 runs, which started training after it, it dates the
  drops of ``linear3-h150-d10-s0`` and ``-s2`` where their rates show them, but not
  ``-s1``'s: a single check at 0.013 inside the early window keeps that window and becomes
  the plateau. The later runs at d = 200 flickered inside the early window, where the
  amendment changes nothing.) A run with no flickering check at all stays undecided.
* **Early stop.** ``no_bifurcation_by = E``: a run that has not bifurcated at its first check
  at or after epoch E ends there (``results["stop_reason"] = "no bifurcation by epoch E"``).
* **Success of a search try** (:func:`hmmrnn.sweep.rule_fields`): the rule's bifurcation *and*
  a secondary drop of the validation loss (:func:`hmmrnn.metrics.secondary_drop_epoch`, the
  rule by which chapter "Training" dates the loss drop, here applied to the validation curve). The paper's
  bifurcation is both: the switching rate drops abruptly and the loss drops with it. This
  third amendment was made after ``linear5`` seed 8, the search's sixth try, was seen. Its
  rate never settled: from epoch 500 on its checks ranged over 0.006-0.51, and the median of its
  last five (0.09) fell below half its plateau, so the rule counted a bifurcation (dated at
  epoch 170); its loss never left the plateau (best 9.90; the successful seed 3 reached 7.61
  and its loss dropped at epoch 270). Of the tries seen before the amendment (seeds 3-9) it
  changes that verdict only; the tries from seed 10 on are the test it did not see. The first
  of them it had to decide, seed 17, was a second seed 8 (rule bifurcation, loss on the
  plateau): without the amendment, seeds 3, 8 and 17 would have been the search's three
  successes; seeds 21, 22 and 24 were three more of the kind (the search ended at its 25
  tries, seeds 3-27, with seed 3 its only success). The rule's
  own verdict stays in the table's ``bifurcated`` column.

:class:`BifurcationRule` is a check for ``hmmrnn.train.train(..., check=rule)``: it records
the rate and the running verdict of every check in the run's history (``check_rate``,
``check_bifurcated``), so a resumed run decides on the same numbers. The search itself (seeds
in order until K runs succeed) is driven by :mod:`hmmrnn.sweep`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from .checkpoints import Snapshots
from .dynamics import detect_transition, snapshot_dynamics
from .model import RNNWeights
from .train import CheckResult

__all__ = ["Bifurcation", "training_bifurcation", "plateau_window", "BifurcationRule"]


class Bifurcation(NamedTuple):
    """The verdict of :func:`training_bifurcation`.

    Fields:
        found: the final level of the rate is below ``drop`` times its early plateau.
        epoch: the bifurcation epoch by the midpoint rule (NaN when not found).
        early_level: median rate over the plateau window (NaN before the window is filled, or
            when no check of the run flickered: the run had no early plateau).
        final_level: median rate over the last ``final_count`` checks (NaN when too few
            checks lie after the plateau window, or when all of them diverged or were silent).
        plateau_from: first epoch of the plateau window: the rule's early window, or the first
            flickering check after it when no check of that window flickered (NaN when no
            check flickered).
        plateau_moved: the plateau window is not the rule's early window (no check of that
            window flickered, a later one did).
    """

    found: bool
    epoch: float
    early_level: float
    final_level: float
    plateau_from: float = math.nan
    plateau_moved: bool = False


def training_bifurcation(epochs: Sequence[float], rates: Sequence[float], early: tuple[float, float] = (10, 30),
                         final_count: int = 5, drop: float = 0.5, silent_rate: float = 0.0) -> Bifurcation:
    """Has the transition rate of a training run dropped from its early plateau (a bifurcation)?

    The rule of chapter "Compositionality": :func:`hmmrnn.dynamics.detect_transition` on
    ``(epochs, rates)``, and found when ``final_level < drop * early_level``. Rates at or below
    ``silent_rate`` (a check whose output never changed: ``1 / n_steps``) are left out like
    NaN ones. A check *flickers* when its rate is finite and not silent. When no check in
    ``early`` flickers, the plateau window is ``early`` moved to start at the first flickering
    check after it (same length), and the drop is located after that window. Undecided (not
    found, epoch NaN) while fewer than ``final_count`` checks lie after the plateau window
    or while the plateau window or the last ``final_count`` rates are all NaN or silent (a
    diverged run; a run that never flickered); the level that cannot be measured is then
    NaN, the other is given.

    Args:
        epochs: (n,) epochs of the checks, increasing.
        rates: (n,) transition rate at each (NaN where the run's activity diverged).
        early: the early plateau's epochs (inclusive).
        final_count: checks that define the final level.
        drop: the final level must fall below this fraction of the early plateau.
        silent_rate: rates at or below it (to a relative 1e-9) are left out; 0 keeps all.
    """
    e = np.asarray(epochs, dtype=np.float64)
    r = np.array(rates, dtype=np.float64)
    if e.shape != r.shape or e.ndim != 1:
        raise ValueError(f"epochs and rates must be 1-D and equal length, got {e.shape}, {r.shape}")
    if final_count < 1 or not 0 < drop < 1:
        raise ValueError(f"need final_count >= 1 and 0 < drop < 1, got {final_count}, {drop}")
    if not (math.isfinite(silent_rate) and silent_rate >= 0):
        raise ValueError(f"silent_rate must be a finite number >= 0, got {silent_rate!r}")
    if silent_rate > 0:
        with np.errstate(invalid="ignore"):
            r[r <= silent_rate * (1 + 1e-9)] = np.nan
    window = plateau_window(e, r, early)
    in_early = (e >= window[0]) & (e <= window[1])
    enough = int((e > window[1]).sum()) >= final_count
    early_level = float(np.nanmedian(r[in_early])) if np.isfinite(r[in_early]).any() else math.nan
    final_level = float(np.nanmedian(r[-final_count:])) if enough and np.isfinite(r[-final_count:]).any() else math.nan
    plateau_from = window[0] if math.isfinite(early_level) else math.nan
    moved = math.isfinite(early_level) and window[0] != float(early[0])
    if not (math.isfinite(early_level) and math.isfinite(final_level)):
        return Bifurcation(False, math.nan, early_level, final_level, plateau_from, moved)  # undecided: the levels that exist
    jump = detect_transition(e, r, early=window, final_count=final_count)
    found = bool(jump.final_level < drop * jump.early_level)
    return Bifurcation(found, jump.epoch if found else math.nan, jump.early_level, jump.final_level, plateau_from, moved)


def plateau_window(epochs: np.ndarray, rates: np.ndarray, early: tuple[float, float]) -> tuple[float, float]:
    """The epochs (inclusive) over which :func:`training_bifurcation` measures the early plateau.

    ``early`` itself when one of its checks flickers (a finite rate; silent checks must
    already be NaN); else the same length moved to the first flickering check after
    ``early[0]``; else ``early`` (no check flickered: no plateau).

    Args:
        epochs: (n,) epochs of the checks, increasing.
        rates: (n,) their rates, NaN where diverged or silent.
        early: the rule's early window.
    """
    flickering = np.isfinite(rates)
    in_early = (epochs >= early[0]) & (epochs <= early[1])
    later = flickering & (epochs >= early[0])
    if flickering[in_early].any() or not later.any():
        return float(early[0]), float(early[1])
    start = float(epochs[np.argmax(later)])
    return start, start + float(early[1] - early[0])


@dataclass(frozen=True)
class BifurcationRule:
    """Watch a run's transition rate at every validation; stop it if it has no bifurcation by an epoch.

    Attributes:
        no_bifurcation_by: stop a run not bifurcated at its first check at or after this epoch
            (None: only watch, never stop).
        early: epochs of the early plateau (inclusive; the chapters use 10-30).
        final_count: checks that define the final level (with validation every 5 epochs, 5
            checks are the last 25 epochs).
        drop: bifurcated when the final level is below this fraction of the early plateau.
        n_traj, n_steps, burn_in: the noise-driven run of each check (10 x 500 steps after 100,
            as chapter "Global dynamics": the paper's 5,000 steps per snapshot).
        seed: seed of that run's noise; the same noise at every check (common random numbers).
    """

    no_bifurcation_by: int | None = None
    early: tuple[int, int] = (10, 30)
    final_count: int = 5
    drop: float = 0.5
    n_traj: int = 10
    n_steps: int = 500
    burn_in: int = 100
    seed: int = 0

    def validate(self) -> "BifurcationRule":
        """Raise ValueError naming the first bad setting; return self."""
        if len(self.early) != 2 or not 0 <= self.early[0] <= self.early[1]:
            raise ValueError(f"early must be two epochs 0 <= first <= last, got {self.early!r}")
        for name in ("final_count", "n_traj", "n_steps"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_steps < 2:
            raise ValueError(f"n_steps must be at least 2, got {self.n_steps}")
        if not isinstance(self.burn_in, (int, np.integer)) or self.burn_in < 0:
            raise ValueError(f"burn_in must be an integer >= 0, got {self.burn_in!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.drop, (int, float)) and 0 < self.drop < 1):
            raise ValueError(f"drop must be a number in (0, 1), got {self.drop!r}")
        if self.no_bifurcation_by is not None and (not isinstance(self.no_bifurcation_by, (int, np.integer))
                                                   or self.no_bifurcation_by <= self.early[1]):
            raise ValueError(f"no_bifurcation_by must be an epoch after the early window {tuple(self.early)}, "
                             f"got {self.no_bifurcation_by!r}")
        return self

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["early"] = list(self.early)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BifurcationRule":
        """The inverse of :meth:`as_dict`; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown stopping-rule settings {unknown}; known: {sorted(known)}")
        values = dict(d)
        if "early" in values:
            values["early"] = tuple(values["early"])
        return cls(**values).validate()

    def transition_rate(self, weights: RNNWeights) -> float:
        """Transition rate of ``weights`` under its own noise (NaN if the activity diverged)."""
        snaps = Snapshots(np.zeros(1, dtype=np.int64), weights.W_in[None], weights.W_rec[None], weights.W_out[None])
        generator = torch.Generator().manual_seed(int(self.seed))
        td = snapshot_dynamics(snaps, generator, n_traj=self.n_traj, n_steps=self.n_steps, burn_in=self.burn_in, n_eig=1)
        return float(td.transition_rate[0])

    @property
    def silent_rate(self) -> float:
        """The rate of a check whose output never changed: one run per trajectory, ``1 / n_steps``."""
        return 1.0 / self.n_steps

    def bifurcation(self, epochs: Sequence[float], rates: Sequence[float]) -> Bifurcation:
        """:func:`training_bifurcation` with this rule's settings (silent checks left out)."""
        return training_bifurcation(epochs, rates, tuple(self.early), self.final_count, self.drop, self.silent_rate)

    def decide(self, epochs: Sequence[float], rates: Sequence[float], found_before: bool = False) -> tuple[Bifurcation, str | None]:
        """The verdict at the last of ``epochs``, and the reason to stop there (None: go on).

        Args:
            epochs, rates: every check so far, the current one last.
            found_before: an earlier check already found the bifurcation (then never stop).
        """
        status = self.bifurcation(epochs, rates)
        epoch = float(epochs[-1])
        by = self.no_bifurcation_by
        stop = f"no bifurcation by epoch {by}" if by is not None and epoch >= by and not (found_before or status.found) else None
        return status, stop

    def __call__(self, epoch: int, weights: RNNWeights, history: dict[str, list]) -> CheckResult:
        """The check ``train`` calls after each validation: measure the rate, decide, record."""
        rate = self.transition_rate(weights)
        epochs = [*history.get("check_epoch", []), epoch]
        rates = [*history.get("check_rate", []), rate]
        found_before = any(bool(v) for v in history.get("check_bifurcated", []))
        status, stop = self.decide(epochs, rates, found_before)
        return CheckResult({"rate": rate, "bifurcated": float(found_before or status.found)}, stop)
