"""The six trained networks side by side: emission fit and orbit geometry (Torre et al., NeurIPS 2025: its targets, fit quality and global dynamics across HMM architectures).

One row per shipped target network: its emission fit against the exact HMM statistics (the
fit bar of :func:`hmmrnn.metrics.fit_checks`), the matched Euclidean distance beside its
HMM-vs-HMM baseline, and the geometry of its noise-driven orbit: the variance explained by
the first principal components and the alignment of the frequent outputs' readout vectors
with the PC1-PC2 plane (the same definitions as the global-dynamics chapter).

Sample sizes are parameters: the fit bar is judged on ``n`` sequences (the paper: 5,000 of
length 100); the matched distance, whose cost grows as ``n_matched ** 2``, on the first
``n_matched`` of them, beside a baseline computed from two HMM samples of the same size
(the baseline shrinks as the samples grow, so only same-size numbers are compared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from . import dynamics as dyn
from . import paper
from .checkpoints import Checkpoint, load
from .hmm import sample
from .model import RNNWeights
from .metrics import (
    FitReport,
    fit_report,
    frequent_outputs,
    matched_euclidean_distances,
    sample_rnn_outputs,
)


@dataclass
class OrbitGeometry:
    """Principal components of a network's noise-driven orbit.

    Fields:
        name: checkpoint name.
        explained: (n_components,) fraction of variance of each PC.
        alignment: (len(outputs),) norm of each unit readout vector's projection on PC1-PC2.
        outputs: the outputs whose readouts are measured (the frequent ones).
        n_states: number of states in the PCA.
    """

    name: str
    explained: np.ndarray
    alignment: np.ndarray
    outputs: tuple[int, ...]
    n_states: int


def orbit_geometry(checkpoint: Checkpoint | str, generator: torch.Generator, *, n_traj: int = 4,
                   n_steps: int = 5000, burn_in: int = 500, n_components: int = 3) -> OrbitGeometry:
    """PCA of ``n_traj * n_steps`` driven states and the readout alignment with PC1-PC2.

    Same definitions as the global-dynamics chapter (:func:`hmmrnn.dynamics.driven_run`,
    :func:`hmmrnn.dynamics.pca`, :func:`hmmrnn.dynamics.readout_alignment`).
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint)
    run = dyn.driven_run(ck.weights, n_steps, generator, n_traj=n_traj, burn_in=burn_in)
    pcs = dyn.pca(run.states.astype(np.float64), n_components)
    outputs = frequent_outputs(ck.hmm)
    alignment = dyn.readout_alignment(ck.weights.W_out, pcs.components[:2], outputs)
    return OrbitGeometry(ck.name, pcs.explained, alignment, outputs, int(run.states.shape[0]))


def family_fit(checkpoint: Checkpoint | str, *, n: int = 5000, length: int = 100, n_matched: int = 1000,
               seed: int = 0) -> FitReport:
    """Emission fit of one network (:func:`hmmrnn.metrics.fit_report`) with a sub-sampled matched distance.

    Draws ``n`` RNN sequences (torch generator seeded ``seed``) and 2 ``n`` HMM sequences
    (``numpy.random.default_rng(seed)``), all of ``length`` steps, exactly as
    :func:`hmmrnn.metrics.evaluate` does, so with ``n_matched = n`` the numbers are those of
    ``python -m hmmrnn evaluate``. The matched distances (RNN vs HMM, and the HMM-vs-HMM
    baseline) use the first ``n_matched`` sequences of each sample; 0 skips them (NaN).
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint)
    if not 0 <= n_matched <= n:
        raise ValueError(f"n_matched must be in 0..n ({n}), got {n_matched}")
    generator = torch.Generator().manual_seed(int(seed))
    rnn_outputs = sample_rnn_outputs(ck.model("cpu"), int(n), int(length), generator)
    rng = np.random.default_rng(seed)
    _, hmm_outputs = sample(ck.hmm, int(n), int(length), rng)
    _, baseline_outputs = sample(ck.hmm, int(n), int(length), rng)
    report = fit_report(ck.hmm, rnn_outputs, hmm_outputs, None, name=ck.name, seed=int(seed))
    if n_matched:
        k = ck.hmm.n_outputs
        m = int(n_matched)
        ours = matched_euclidean_distances(rnn_outputs[:m], hmm_outputs[:m], k)
        base = matched_euclidean_distances(baseline_outputs[:m], hmm_outputs[:m], k)
        report.matched_distance, report.matched_distance_argmax = ours.plan, ours.argmax
        report.matched_distance_baseline, report.matched_distance_baseline_argmax = base.plan, base.argmax
    return report


class FitUncertainty(NamedTuple):
    """Standard errors of a network's emission statistics (:func:`fit_uncertainty`).

    Fields:
        marginals: (K,) standard error of each output's marginal.
        lability: standard error of the lability.
        max_transition_error: bootstrap standard error of the largest squared entry of the
            output transition-matrix error.
        n: number of sequences.
    """

    marginals: np.ndarray
    lability: float
    max_transition_error: float
    n: int


def fit_uncertainty(outputs: np.ndarray, exact_transition: np.ndarray, rng: np.random.Generator,
                    n_boot: int = 200) -> FitUncertainty:
    """Standard errors of the marginals, lability and largest squared transition error.

    The sequences are independent and of equal length, so a statistic that is a mean over
    all steps (a marginal, the lability) is the mean of its per-sequence values, and its
    standard error is their standard deviation over sqrt(n); the correlation between the
    steps of one sequence is accounted for. The largest squared error (a maximum of
    ratios) gets a bootstrap over sequences: ``n_boot`` resamples of the (n, K, K) per-sequence
    pair counts.

    Args:
        outputs: (n, L) ints in [0, K), n >= 2, L >= 2: sampled output sequences.
        exact_transition: (K, K) the HMM's exact output transition matrix.
        rng: numpy generator of the bootstrap.
        n_boot: bootstrap resamples.
    """
    outputs = np.asarray(outputs)
    exact = np.asarray(exact_transition, dtype=np.float64)
    k = exact.shape[0]
    if outputs.ndim != 2 or outputs.shape[0] < 2 or outputs.shape[1] < 2:
        raise ValueError(f"outputs must be (n >= 2, L >= 2), got shape {outputs.shape}")
    if exact.shape != (k, k) or outputs.min() < 0 or outputs.max() >= k:
        raise ValueError(f"exact_transition must be (K, K) and outputs in [0, K), got {exact.shape}, "
                         f"outputs in [{outputs.min()}, {outputs.max()}]")
    n = outputs.shape[0]
    freq = (outputs[:, :, None] == np.arange(k)).mean(axis=1)  # (n, K)
    changes = (outputs[:, 1:] != outputs[:, :-1]).mean(axis=1)  # (n,)
    pair = outputs[:, :-1] * k + outputs[:, 1:]  # (n, L-1)
    offsets = np.arange(n)[:, None] * (k * k)  # one block of K*K bins per sequence: one bincount for all
    counts = np.bincount((pair + offsets).ravel(), minlength=n * k * k).reshape(n, k * k).astype(np.float64)  # (n, K*K)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        c = counts[rng.integers(0, n, n)].sum(axis=0).reshape(k, k)
        totals = c.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(totals > 0, c / np.where(totals > 0, totals, 1.0), np.nan)
        boot[i] = np.nanmax((p - exact) ** 2)
    return FitUncertainty(marginals=freq.std(axis=0, ddof=1) / np.sqrt(n), lability=float(changes.std(ddof=1) / np.sqrt(n)),
                          max_transition_error=float(np.std(boot, ddof=1)), n=int(n))


def training_summary(checkpoint: Checkpoint | str) -> dict[str, Any]:
    """``{"epochs", "best_val_loss", "best_epoch", "calibrated"}`` of a checkpoint's training run.

    A readout-calibrated checkpoint keeps the results of the run it was calibrated from.
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load(checkpoint)
    r = ck.results
    return {"epochs": r.get("final_epoch"), "best_val_loss": r.get("best_val_loss"),
            "best_epoch": r.get("best_epoch"), "calibrated": bool(r.get("calibrated", False))}


def family_rows(reports: Sequence[FitReport], geometries: Sequence[OrbitGeometry],
                trainings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per network, ours beside the paper's numbers (for a table).

    Keys: name, epochs, best_val (paper range), max_sq_error, marginals (exact), lability
    (exact, paper), rare (exact), matched / baseline (argmax reading), pc (paper), alignment
    (paper), passes.
    """
    if not len(reports) == len(geometries) == len(trainings):
        raise ValueError("give one report, geometry and training summary per network")
    rows = []
    for rep, geo, tr in zip(reports, geometries, trainings):
        name = rep.name
        base = name.removesuffix("-paper")
        rows.append({
            "name": name,
            "epochs": tr["epochs"],
            "best_val": tr["best_val_loss"],
            "paper_best_val": paper.BEST_VAL_LOSS.get(base),
            "max_sq_error": float(rep.transition_error.max()),
            "marginals": tuple(float(v) for v in rep.rnn.marginals),
            "exact_marginals": tuple(float(v) for v in rep.hmm_exact.marginals),
            "lability": float(rep.rnn.lability),
            "exact_lability": float(rep.hmm_exact.lability),
            "rare": float(rep.rnn.rare_frequency),
            "exact_rare": float(rep.hmm_exact.rare_frequency),
            "matched": float(rep.matched_distance_argmax),
            "baseline": float(rep.matched_distance_baseline_argmax),
            "pc": tuple(100 * float(v) for v in geo.explained),
            "paper_pc": paper.PCA_VARIANCE.get(base),
            "alignment": tuple(float(v) for v in geo.alignment),
            "paper_alignment": paper.READOUT_ALIGNMENT.get(base),
            "passes": bool(all(rep.checks.values())),
        })
    return rows


class NormGrowth(NamedTuple):
    """How the size of the hidden state evolves in driven runs from h_0 = 0.

    A trained network is meant to be stationary: its state stays on a bounded orbit. A network
    trained on short sequences can be stable only over the training length.

    Fields:
        median: (T,) median ||h_t|| over trajectories at each step t = 1..T.
        upper: (T,) 95th percentile of ||h_t||.
        exploded: (T,) fraction of trajectories with ||h_t|| above ``bound`` (or not finite).
        bound: 100 x the median norm over the first ``reference`` steps.
        time_above: fraction of all steps of all trajectories above ``bound``.
        returned: of the trajectories that ever exceed ``bound``, the fraction that later
            come back below it (NaN if none exceeds it): near 1 for intermittent bursts,
            near 0 for a runaway.
    """

    median: np.ndarray
    upper: np.ndarray
    exploded: np.ndarray
    bound: float
    time_above: float
    returned: float


def norm_growth(weights: RNNWeights, generator: torch.Generator, *, n_traj: int = 200, n_steps: int = 500,
                reference: int = 30, chunk: int = 1000) -> NormGrowth:
    """Norms of ``n_traj`` driven trajectories of ``n_steps`` steps from 0 (float64 statistics).

    The run is simulated ``chunk`` steps at a time, each chunk starting from the last state of
    the one before, and only the (n_traj, n_steps) norms are kept: a 10,000-step check of 200
    trajectories holds 16 MB, not the 1.2 GB of their states. A run of at most ``chunk`` steps
    is one :func:`hmmrnn.dynamics.driven_run` (the same numbers as before chunking); a longer
    one draws its noise chunk by chunk from ``generator``, so its numbers depend on ``chunk``.
    A state that is no longer finite stays so (its norm counts as above every bound).
    """
    if not 1 <= reference <= n_steps:
        raise ValueError(f"need 1 <= reference <= n_steps, got {reference} and {n_steps}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    norms = np.empty((n_traj, n_steps), dtype=np.float64)
    h0 = None
    for start in range(0, n_steps, chunk):
        length = min(chunk, n_steps - start)
        run = dyn.driven_run(weights, length, generator, n_traj=n_traj, burn_in=0, h0=h0)
        with np.errstate(over="ignore", invalid="ignore"):
            norms[:, start:start + length] = np.linalg.norm(run.hidden.astype(np.float64), axis=-1)  # (B, length)
        h0 = run.hidden[:, -1, :]
    return growth_from_norms(norms, reference)


def _finite_or_inf(norms: np.ndarray, reference: int) -> tuple[np.ndarray, float]:
    """(B, T) norms with NaN / inf as inf, and the burst bound: 100 x their median over the first ``reference`` steps."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or not 1 <= reference <= norms.shape[1]:
        raise ValueError(f"norms must be (B, T) with T >= reference ({reference}), got {norms.shape}")
    norms = np.where(np.isfinite(norms), norms, np.inf)
    return norms, 100.0 * float(np.median(norms[:, :reference]))


def burst_steps(norms: np.ndarray, reference: int = 30) -> np.ndarray:
    """(B, T) True where the state norm is beyond the bound of :class:`NormGrowth` (not finite included)."""
    norms, bound = _finite_or_inf(norms, reference)
    return norms > bound


def growth_from_norms(norms: np.ndarray, reference: int = 30) -> NormGrowth:
    """:class:`NormGrowth` of (B, T) state norms (NaN and inf count as above the bound)."""
    norms, bound = _finite_or_inf(norms, reference)
    with np.errstate(over="ignore", invalid="ignore"):
        upper = np.percentile(norms, 95, axis=0, method="lower")
    above = norms > bound
    ever = above.any(axis=1)
    back = (np.cumsum(above, axis=1) > 0) & ~above  # below the bound after having been above it
    returned = float(back.any(axis=1)[ever].mean()) if ever.any() else float("nan")
    return NormGrowth(np.median(norms, axis=0), upper, np.mean(above, axis=0), bound, float(above.mean()), returned)


def bounded_trajectories(hidden: np.ndarray, factor: float = 100.0, reference: int = 10) -> np.ndarray:
    """(B,) True for the trajectories whose state norm stays finite and below ``factor`` times
    the median norm over all trajectories' first ``reference`` steps.

    For a network that is not stationary (:func:`norm_growth`): its trained regime is the
    part of each run that has not run away.

    Args:
        hidden: (B, T, H) states of B trajectories.
    """
    h = np.asarray(hidden, dtype=np.float64)
    if h.ndim != 3 or not 1 <= reference <= h.shape[1]:
        raise ValueError(f"hidden must be (B, T, H) with T >= reference ({reference}), got {h.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(h, axis=-1)
        bound = factor * float(np.median(np.where(np.isfinite(norms[:, :reference]), norms[:, :reference], np.inf)))
        return np.all(np.isfinite(norms) & (norms < bound), axis=1)
