"""Two training loops, one recipe: the A/B of ``hmmrnn.train`` against the authors' loop.

``scripts/authors_loop.py`` is a faithful CPU copy of the authors' training loop (``nn.RNN``,
hard Gumbel-softmax, ``geomloss.SamplesLoss(blur=0.2)``, Adam(1e-3, betas 0.9/0.9), gradient
clip) trained on the same HMM sequences as ``hmmrnn.train`` for the same seed. Its weights
start from PyTorch's default initialisation, not from ``hmmrnn``'s, so the two loops are two
draws of the same recipe, not the same run: they are compared as seeds are, by where their
validation loss curves go, not digit by digit.

The comparison is fixed before the authors' runs were looked at (issue 21):

* per run, the **best validation loss by epoch** ``upto`` (150) and the **plateau exit**,
  the first validation whose loss is below ``exit_fraction`` (0.9) times the run's first
  validation loss (the flickering plateau the paper describes ends there);
* the loops **agree** when every authors' run's best loss by ``upto`` lies within the range
  of the ``hmmrnn.train`` seeds widened on each side by that range's width
  (``[min - w, max + w]``, ``w = max - min``): no farther from the ``hmmrnn`` seeds than
  they are from each other.

The validation losses compared are both weighted by batch size (``hmmrnn.train``'s
definition; the authors' unweighted mean of batch losses is kept in their history as well).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .checkpoints import CheckpointError

__all__ = ["LossCurve", "CurveSummary", "LoopAgreement", "load_authors_history", "load_run_history",
           "summarise", "loops_agree"]


@dataclass(frozen=True)
class LossCurve:
    """The validation losses of one training run.

    Attributes:
        label: where it came from (a path or a run name).
        epochs: (V,) int, the epochs validated, increasing.
        val_loss: (V,) float, the validation loss at those epochs (weighted by batch size).
        seconds: wall time of the epochs in ``epochs`` (None where not recorded).
    """

    label: str
    epochs: np.ndarray
    val_loss: np.ndarray
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.epochs.ndim != 1 or self.epochs.shape != self.val_loss.shape:
            raise ValueError(f"{self.label}: epochs {self.epochs.shape} and losses {self.val_loss.shape} "
                             "must be 1-d of one length")
        if len(self.epochs) == 0:
            raise ValueError(f"{self.label}: no validation recorded")
        if np.any(np.diff(self.epochs) <= 0):
            raise ValueError(f"{self.label}: validation epochs are not increasing")
        bad = ~np.isfinite(self.val_loss)
        if bad.any():
            first = int(self.epochs[np.argmax(bad)])
            raise ValueError(f"{self.label}: validation loss is not finite at epoch {first}")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (run the training that writes it first)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def load_authors_history(path: str | Path, label: str | None = None) -> LossCurve:
    """The validation curve of a run of ``scripts/authors_loop.py`` (its ``history.json``)."""
    path = Path(path)
    h = _read(path)
    try:
        epochs = np.asarray(h["val_epoch"], dtype=np.int64)
        losses = np.asarray(h["val_loss_weighted"], dtype=np.float64)
    except KeyError as err:
        raise CheckpointError(f"{path}: not a history of scripts/authors_loop.py (no {err.args[0]!r})") from None
    seconds = h.get("seconds")
    # the file is rewritten at every validation: its seconds belong to its last epoch
    return LossCurve(label or str(path), epochs, losses, float(seconds) if seconds is not None else None)


def load_run_history(folder: str | Path, label: str | None = None) -> LossCurve:
    """The validation curve of a ``hmmrnn.train`` run folder (the history in its ``config.json``)."""
    folder = Path(folder)
    c = _read(folder / "config.json")
    try:
        h = c["history"]
        epochs = np.asarray(h["val_epoch"], dtype=np.int64)
        losses = np.asarray(h["val_loss"], dtype=np.float64)
    except KeyError as err:
        raise CheckpointError(f"{folder / 'config.json'}: no training history (no {err.args[0]!r})") from None
    return LossCurve(label or str(folder), epochs, losses, None)


@dataclass(frozen=True)
class CurveSummary:
    """What the A/B compares of one run, up to epoch ``upto``.

    Attributes:
        label: the run.
        best: the lowest validation loss at an epoch <= upto.
        best_epoch: its epoch.
        first: the first validation loss (the plateau's level).
        exit_epoch: the first epoch whose loss is < exit_fraction * first (None: not by upto).
        at: {epoch: loss} at the requested epochs that were validated (missing ones omitted).
    """

    label: str
    best: float
    best_epoch: int
    first: float
    exit_epoch: int | None
    at: dict[int, float]


def summarise(curve: LossCurve, upto: int = 150, exit_fraction: float = 0.9,
              at: Sequence[int] = (50, 100, 150)) -> CurveSummary:
    """Summarise ``curve`` over its validations at epochs <= ``upto`` (see the module)."""
    if not 0 < exit_fraction < 1:
        raise ValueError(f"exit_fraction must be in (0, 1), got {exit_fraction}")
    keep = curve.epochs <= upto
    if not keep.any():
        raise ValueError(f"{curve.label}: no validation at or before epoch {upto}")
    if curve.epochs[keep][-1] < upto:
        raise ValueError(f"{curve.label}: validated only up to epoch {int(curve.epochs[keep][-1])}, "
                         f"not {upto} (the run is not that far yet)")
    epochs, losses = curve.epochs[keep], curve.val_loss[keep]
    i = int(np.argmin(losses))
    first = float(losses[0])
    below = np.nonzero(losses < exit_fraction * first)[0]
    values = {int(e): float(v) for e, v in zip(epochs, losses)}
    return CurveSummary(curve.label, float(losses[i]), int(epochs[i]), first,
                        int(epochs[below[0]]) if len(below) else None,
                        {int(e): values[int(e)] for e in at if int(e) in values})


@dataclass(frozen=True)
class LoopAgreement:
    """The verdict of the A/B (see the module for the rule).

    Attributes:
        low, high: the ``hmmrnn.train`` seeds' range of best losses, widened by its width.
        inside: {label: whether that authors' run's best loss lies in [low, high]}.
        agree: every authors' run inside.
    """

    low: float
    high: float
    inside: dict[str, bool]

    @property
    def agree(self) -> bool:
        return all(self.inside.values())


def loops_agree(reference: Sequence[CurveSummary], other: Sequence[CurveSummary]) -> LoopAgreement:
    """Whether ``other``'s best losses lie within ``reference``'s seed range widened by its width.

    Args:
        reference: summaries of the ``hmmrnn.train`` seeds (at least 2).
        other: summaries of the authors' runs (at least 1), same ``upto``.
    """
    if len(reference) < 2:
        raise ValueError(f"the rule needs at least 2 reference seeds for a range, got {len(reference)}")
    if not other:
        raise ValueError("no runs to compare with the reference")
    bests = np.array([s.best for s in reference])
    width = float(bests.max() - bests.min())
    low, high = float(bests.min()) - width, float(bests.max()) + width
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("the reference range is not finite")
    return LoopAgreement(low, high, {s.label: bool(low <= s.best <= high) for s in other})

