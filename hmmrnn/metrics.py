"""Emission-fit statistics: how well a network's output sequences match its HMM.

The paper (Torre et al., NeurIPS 2025) shows them in its figure on the fit of the emission
statistics: transition-matrix errors, marginals, lability and matched distances.

Notation: ``K`` outputs; sampled output sequences are integer arrays ``outputs`` of shape
(n, L) (n sequences of L steps, values in ``[0, K)``). Every function here is vectorised
over sequences and steps; every random draw comes from an explicit generator.

The statistics of the paper's fit figure:

* marginal output frequencies (K,);
* the output transition matrix (K, K): consecutive pairs ``(o_t, o_{t+1})`` counted over all
  sequences and steps, rows normalised, ``M[a, b] = P(o_{t+1} = b | o_t = a)``; its error is the
  elementwise *squared* difference to the HMM's exact matrix (the paper's heatmap);
* lability: the fraction of consecutive pairs that differ (a probability per step), and the
  paper's form of it, the mean number of output changes per sequence (``(L-1)`` times it);
* the Sinkhorn-matched Euclidean distance (:func:`matched_euclidean_distance`).

The fit bar of this book (:func:`fit_checks`; the issue's definition), on ``n = 5000`` sampled
sequences of length 100 for the linear chains and of the training length (30, 40) for the
fully connected and cyclic targets, as the paper (:func:`default_eval_length`):

* every entry of the squared transition-matrix error (RNN empirical vs HMM exact) is
  ``<= 0.02`` (:data:`hmmrnn.paper.TRANSITION_ERROR_MAX`, the paper's worst cell), and
* the marginal of every *frequent* output (HMM marginal ``>= 0.05``) is within ``0.03``
  (:data:`hmmrnn.paper.MARGINAL_TOLERANCE`) of the HMM's.

:func:`evaluate` computes all of it for a checkpoint and returns a :class:`FitReport`;
:func:`format_fit_table` prints it next to the exact values, an HMM sample of the same size
(what sampling noise alone gives) and the paper's numbers; :func:`fit_table` and
:func:`transition_table` give the same strings as :class:`~hmmrnn.tables.Table` s for a page.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from . import paper
from .hmm import HMM, one_hot, output_marginals, output_transition_matrix, sample
from .hmm import lability as exact_lability
from .sinkhorn import epsilon_schedule, onehot_diameter, sinkhorn_divergence
from .model import NONFINITE_OUTPUT, NonFiniteStates, NonFiniteStatesError
from .tables import Table

__all__ = [
    "FREQUENT_OUTPUT_THRESHOLD",
    "DEFAULT_EVAL_LENGTH",
    "default_eval_length",
    "frequent_outputs",
    "CHECK_DESCRIPTIONS",
    "running_median",
    "secondary_drop_epoch",
    "output_transition_counts",
    "TransitionEntry",
    "worst_transition_entry",
    "rollout_transition_counts",
    "empirical_transition_matrix",
    "empirical_marginals",
    "empirical_lability",
    "changes_per_sequence",
    "transition_matrix_error",
    "euclidean_cost_onehot",
    "EntropicSolution",
    "entropic_plan_potentials",
    "MatchedDistance",
    "matched_euclidean_distances",
    "matched_euclidean_distance",
    "heldout_sinkhorn",
    "sample_rnn_outputs",
    "EmissionStatistics",
    "emission_statistics",
    "exact_emission_statistics",
    "fit_checks",
    "FitReport",
    "fit_report",
    "evaluate",
    "format_fit_table",
    "fit_table",
    "transition_table",
]

FREQUENT_OUTPUT_THRESHOLD = 0.05
"""Outputs whose exact HMM marginal is at least this are 'frequent' (their marginal is checked)."""

DEFAULT_EVAL_LENGTH = 100
"""Sequence length of the paper's fit figure (linear grid)."""


def frequent_outputs(hmm: HMM) -> tuple[int, ...]:
    """Outputs whose exact HMM marginal is at least :data:`FREQUENT_OUTPUT_THRESHOLD`
    (linear chains: (0, 2); fully3 and cyclic4: all three)."""
    return tuple(int(k) for k in np.flatnonzero(output_marginals(hmm) >= FREQUENT_OUTPUT_THRESHOLD))


def default_eval_length(hmm: HMM) -> int:
    """The paper's evaluation length (its fit-quality figure): 100 for the linear chains (its grid of
    fits), the training sequence length for the fully connected and cyclic targets."""
    if hmm.name.startswith("linear") or hmm.seq_len is None:
        return DEFAULT_EVAL_LENGTH
    return int(hmm.seq_len)


CHECK_DESCRIPTIONS: dict[str, str] = {
    "transition_error": (
        f"every squared entry of the output transition-matrix error (RNN empirical vs HMM exact) "
        f"<= {paper.TRANSITION_ERROR_MAX} (an undefined entry, an output the RNN never emits "
        f"before the last step, fails)"
    ),
    "frequent_marginals": (
        f"marginal of every output with HMM marginal >= {FREQUENT_OUTPUT_THRESHOLD} within "
        f"{paper.MARGINAL_TOLERANCE} of the HMM's"
    ),
}
"""The fit bar, one entry per key of :attr:`FitReport.checks`."""


# --------------------------------------------------------------------------- empirical statistics

def _as_outputs(outputs: np.ndarray | torch.Tensor, n_outputs: int | None = None, name: str = "outputs") -> np.ndarray:
    """Validate an (n, L) integer array of outputs (a torch tensor is moved to NumPy)."""
    if isinstance(outputs, torch.Tensor):
        outputs = outputs.detach().cpu().numpy()
    array = np.asarray(outputs)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, L) array, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(array == np.round(array)):
            raise ValueError(f"{name} must hold integers, got dtype {array.dtype} with fractional values")
        array = array.astype(np.int64)
    if array.size and np.any(array == NONFINITE_OUTPUT):
        raise NonFiniteStatesError(name, NonFiniteStates.from_mask(array == NONFINITE_OUTPUT))
    if n_outputs is not None and array.size and (array.min() < 0 or array.max() >= n_outputs):
        raise ValueError(f"{name} must lie in [0, {n_outputs}), got range [{array.min()}, {array.max()}]")
    return array.astype(np.int64, copy=False)


def output_transition_counts(outputs: np.ndarray | torch.Tensor, n_outputs: int) -> np.ndarray:
    """Counts of consecutive output pairs.

    Args:
        outputs: (n, L) ints in ``[0, K)``.
        n_outputs: K.

    Returns:
        (K, K) int64, ``counts[a, b]`` = number of (sequence, t) with ``o_t = a`` and
        ``o_{t+1} = b``, t = 0..L-2 (pairs never straddle two sequences). Sums to ``n (L-1)``.
    """
    outputs = _as_outputs(outputs, n_outputs)
    if outputs.shape[1] < 2:
        return np.zeros((n_outputs, n_outputs), dtype=np.int64)
    pair_index = outputs[:, :-1] * n_outputs + outputs[:, 1:]
    return np.bincount(pair_index.ravel(), minlength=n_outputs * n_outputs).reshape(n_outputs, n_outputs)


class TransitionEntry(NamedTuple):
    """One entry of an empirical output transition matrix against the exact one, with its evidence.

    Fields:
        origin, destination: the entry ``(a, b)``.
        visits: steps that emitted ``a`` and have a successor (``counts[a].sum()``).
        count: of them, steps followed by ``b`` (``counts[a, b]``).
        empirical: ``count / visits``; exact: the HMM's ``P(b | a)``.
        squared_error: ``(empirical - exact) ** 2``.
        p_value: two-sided exact binomial test of ``count ~ Binomial(visits, exact)``: how
            often a sampler with the exact row would print an entry at least this unusual
            from the same number of visits.
    """

    origin: int
    destination: int
    visits: int
    count: int
    empirical: float
    exact: float
    squared_error: float
    p_value: float


def worst_transition_entry(counts: np.ndarray, exact: np.ndarray) -> TransitionEntry:
    """The entry with the largest squared error of the row-normalised ``counts`` against ``exact``.

    The fit bar's statistic (:attr:`FitReport.max_transition_error`) is that error; this says
    how many visits it was estimated from and whether the exact row explains it.

    Args:
        counts: (K, K) :func:`output_transition_counts`.
        exact: (K, K) exact transition matrix (rows sum to 1).

    Raises:
        ValueError: shapes differ, or an output is never visited (its row, hence the fit
            bar's statistic, is undefined).
    """
    from scipy.stats import binomtest

    counts = np.asarray(counts)
    exact = np.asarray(exact, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape != exact.shape:
        raise ValueError(f"counts and exact must be equal (K, K) matrices, got {counts.shape}, {exact.shape}")
    visits = counts.sum(axis=1)
    if (visits == 0).any():
        raise ValueError(f"output(s) {np.flatnonzero(visits == 0).tolist()} never visited: their rows are undefined")
    empirical = counts / visits[:, None]
    error = (empirical - exact) ** 2
    a, b = (int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
    n_a, k = int(visits[a]), int(counts[a, b])
    p = float(binomtest(k, n_a, float(exact[a, b])).pvalue)
    return TransitionEntry(a, b, n_a, k, float(empirical[a, b]), float(exact[a, b]), float(error[a, b]), p)


def rollout_transition_counts(checkpoint: Any, n: int, length: int, seed: int, device: str = "cpu") -> np.ndarray:
    """(K, K) :func:`output_transition_counts` of the ``n`` sequences that :func:`evaluate` samples
    with the same ``n``, ``length`` and ``seed`` (the same generator, so the same outputs)."""
    from .checkpoints import Checkpoint, load

    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load(checkpoint)
    return output_transition_counts(_evaluation_outputs(checkpoint, n, length, seed, device), checkpoint.hmm.n_outputs)


def _evaluation_outputs(checkpoint: Any, n: int, length: int, seed: int, device: str) -> np.ndarray:
    """(n, length) outputs of ``checkpoint``'s network as :func:`evaluate` samples them (a
    ``torch.Generator`` on ``device`` seeded with ``seed``)."""
    generator = torch.Generator(device=device).manual_seed(int(seed))
    return sample_rnn_outputs(checkpoint.model(device), int(n), int(length), generator)


def empirical_transition_matrix(outputs: np.ndarray | torch.Tensor, n_outputs: int) -> np.ndarray:
    """Row-normalised :func:`output_transition_counts`: (K, K) ``P(o_{t+1} = b | o_t = a)``.

    A row is NaN where output ``a`` never occurs before the last step of a sequence.
    """
    counts = output_transition_counts(outputs, n_outputs).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)


def empirical_marginals(outputs: np.ndarray | torch.Tensor, n_outputs: int) -> np.ndarray:
    """(K,) fraction of all steps (of all sequences) showing each output; NaN if there are none."""
    outputs = _as_outputs(outputs, n_outputs)
    if outputs.size == 0:
        return np.full(n_outputs, np.nan)
    return np.bincount(outputs.ravel(), minlength=n_outputs) / outputs.size


def empirical_lability(outputs: np.ndarray | torch.Tensor) -> float:
    """Fraction of consecutive pairs ``(o_t, o_{t+1})`` with ``o_t != o_{t+1}`` (NaN if L < 2).

    The estimate of :func:`hmmrnn.hmm.lability` (a probability per step).
    """
    outputs = _as_outputs(outputs)
    if outputs.shape[1] < 2 or outputs.shape[0] == 0:
        return math.nan
    return float(np.mean(outputs[:, 1:] != outputs[:, :-1]))


def changes_per_sequence(outputs: np.ndarray | torch.Tensor) -> float:
    """Mean number of output changes per sequence (the paper's form of lability).

    Equal to ``(L - 1) * empirical_lability(outputs)``; NaN for no sequences.
    """
    outputs = _as_outputs(outputs)
    if outputs.shape[0] == 0:
        return math.nan
    if outputs.shape[1] < 2:
        return 0.0
    return float(np.mean(np.sum(outputs[:, 1:] != outputs[:, :-1], axis=1)))


def transition_matrix_error(empirical: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """(K, K) elementwise squared difference ``(empirical - exact) ** 2`` (the paper's heatmap).

    NaN entries (rows of outputs never seen) stay NaN.
    """
    empirical = np.asarray(empirical, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    if empirical.shape != exact.shape or empirical.ndim != 2:
        raise ValueError(f"both matrices must be (K, K) of the same shape, got {empirical.shape} and {exact.shape}")
    return (empirical - exact) ** 2


# --------------------------------------------------------------------------- matched distance

def euclidean_cost_onehot(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, n_outputs: int,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, m) Euclidean distances between flattened one-hot sequences.

    Two one-hot sequences of length L that differ at ``k`` steps are ``sqrt(2 k)`` apart.
    The number of agreeing steps is an exact integer matrix product, so the cost is exact.

    Args:
        a: (n, L) ints; b: (m, L) ints (same L), values in ``[0, K)``.
        n_outputs: K.
        dtype: torch dtype of the result.
    """
    a = _as_outputs(a, n_outputs, "a")
    b = _as_outputs(b, n_outputs, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same length L, got {a.shape[1]} and {b.shape[1]}")
    length = a.shape[1]
    xa = torch.from_numpy(one_hot(a, n_outputs).reshape(a.shape[0], -1)).to(dtype)
    xb = torch.from_numpy(one_hot(b, n_outputs).reshape(b.shape[0], -1)).to(dtype)
    cost = xa @ xb.T  # (n, m) number of steps with equal outputs (exact: integers <= L)
    return cost.mul_(-2.0).add_(2.0 * length).clamp_(min=0.0).sqrt_()


class EntropicSolution(NamedTuple):
    """Dual potentials of an entropic OT problem between uniform clouds.

    Fields:
        f: (n,) potential of the first cloud; g: (m,) of the second. The plan is
            ``P_ij = exp((f_i + g_j - C_ij) / eps) / (n m)``.
        iterations: Sinkhorn updates at the target temperature.
        violation: L1 distance of the plan's row sums to ``1/n`` (its column sums are exact).
    """

    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    violation: float


def _softmin(cost: torch.Tensor, h: torch.Tensor, eps: float, buffer: torch.Tensor) -> torch.Tensor:
    """(n, m), (m,) -> (n,) ``-eps log sum_j exp(h_j - C_ij / eps)``, in row chunks.

    Works through ``cost`` a chunk of rows at a time in the preallocated ``buffer``
    (chunk, >= m), so no (n, m) temporary is created (each would cost page faults).
    """
    n, m = cost.shape
    chunk = buffer.shape[0]
    out = torch.empty(n, dtype=cost.dtype, device=cost.device)
    for start in range(0, n, chunk):
        rows = cost[start : start + chunk]
        work = buffer[: rows.shape[0], :m]
        torch.add(h, rows, alpha=-1.0 / eps, out=work)
        top = work.amax(dim=1, keepdim=True)
        work.sub_(top).exp_()
        out[start : start + rows.shape[0]] = top.squeeze(1) + work.sum(dim=1).log()
    return out.mul_(-eps)


def entropic_plan_potentials(cost: torch.Tensor, eps: float, max_iter: int = 1000, tol: float = 1e-3,
                             scaling: float = 0.5, omega: float = 1.8, chunk: int = 256) -> EntropicSolution:
    """Log-domain Sinkhorn for the entropic OT problem between two *uniform* clouds.

    Solves ``min_P <P, C> + eps KL(P | a b^T)`` with ``a = 1/n``, ``b = 1/m``; the plan is
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``. The temperature is annealed
    (epsilon-scaling) from ``max C`` down to ``eps`` by factors ``scaling``, one update each;
    then over-relaxed Sinkhorn updates at ``eps`` (``x <- (1 - omega) x + omega T(x)``,
    ``omega`` in [1, 2); 1 is plain Sinkhorn, 1.8 needs ~4x fewer updates here) run until
    the row sums are within ``tol`` (L1, relative to the total mass 1) of ``a``. A last plain
    update of ``g`` makes the column sums exact. If the violation ever grows tenfold the
    relaxation is switched off (plain updates always converge).

    Args:
        cost: (n, m) cost matrix.
        eps: target temperature (in cost units).
        max_iter: most updates at the target temperature.
        tol: L1 marginal violation at which to stop.
        scaling: annealing factor in (0, 1).
        omega: over-relaxation factor.
        chunk: rows per block of the log-sum-exp (memory ``chunk * max(n, m)``).

    Returns:
        :class:`EntropicSolution`.
    """
    if cost.ndim != 2:
        raise ValueError(f"cost must be (n, m), got shape {tuple(cost.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}")
    if not 1 <= omega < 2:
        raise ValueError(f"omega must lie in [1, 2), got {omega}")
    n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    cost_t = cost.T.contiguous()
    buffer = torch.empty(min(chunk, max(n, m)), max(n, m), dtype=cost.dtype, device=cost.device)

    def row_update(g: torch.Tensor, e: float) -> torch.Tensor:
        return _softmin(cost, g / e + log_b, e, buffer)

    def col_update(f: torch.Tensor, e: float) -> torch.Tensor:
        return _softmin(cost_t, f / e + log_a, e, buffer)

    def row_violation(f: torch.Tensor, f_of_g: torch.Tensor) -> float:
        # row sums of the plan: a_i exp((f_i - f_of_g_i) / eps)
        return float((torch.exp((f - f_of_g) / eps) / n - 1.0 / n).abs().sum())

    temps = []
    e = max(float(cost.max()), eps)
    while e > eps:
        temps.append(e)
        e *= scaling
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    f = row_update(g, temps[0] if temps else eps)
    for e in temps:
        g = col_update(f, e)
        f = row_update(g, e)
    relax = omega
    best = math.inf
    iterations = 0
    for iterations in range(1, max_iter + 1):
        g_new = col_update(f, eps)
        g = g_new if iterations == 1 else (1 - relax) * g + relax * g_new
        f_new = row_update(g, eps)
        violation = row_violation(f, f_new)
        if not math.isfinite(violation) or violation > 10 * best:
            relax = 1.0
        best = min(best, violation)
        f = (1 - relax) * f + relax * f_new
        if violation < tol:
            break
    g = col_update(f, eps)
    return EntropicSolution(f, g, iterations, row_violation(f, row_update(g, eps)))


class MatchedDistance(NamedTuple):
    """Both readings of the Sinkhorn-matched Euclidean distance (one shared OT solve).

    Fields:
        plan: ``sum_ij P_ij C_ij / sum_ij P_ij`` (mean distance under the plan).
        argmax: mean of ``C[i, argmax_j P_ij]`` (each sequence of ``a`` with its most
            likely partner).
        iterations: Sinkhorn updates at the target temperature.
        violation: final L1 violation of the row sums.
    """

    plan: float
    argmax: float
    iterations: int
    violation: float


def _plan_mean_costs(cost: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float,
                     chunk: int = 256) -> tuple[float, float]:
    """(``sum P C / sum P``, mean of ``C[i, argmax_j P_ij]``), computed in row chunks."""
    n = cost.shape[0]
    row_log_mass = torch.empty(n, dtype=torch.float64)
    row_mean = torch.empty(n, dtype=torch.float64)
    row_argmax = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        rows = cost[start : start + chunk]
        stop = start + rows.shape[0]
        log_plan = (f[start:stop].unsqueeze(1) + g.unsqueeze(0) - rows) / eps
        partner = log_plan.argmax(dim=1, keepdim=True)
        row_argmax[start:stop] = rows.gather(1, partner).squeeze(1).double()
        log_mass = torch.logsumexp(log_plan, dim=1, keepdim=True)
        row_log_mass[start:stop] = log_mass.squeeze(1).double()
        row_mean[start:stop] = (torch.exp(log_plan.sub_(log_mass)) * rows).sum(dim=1, dtype=torch.float64)
    plan = float((torch.softmax(row_log_mass, dim=0) * row_mean).sum())
    return plan, float(row_argmax.mean())


def matched_euclidean_distances(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    n_outputs: int,
    eps: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-3,
    dtype: torch.dtype = torch.float32,
) -> MatchedDistance:
    """Both readings of :func:`matched_euclidean_distance` from one OT solve (same arguments)."""
    with torch.inference_mode():
        cost = euclidean_cost_onehot(a, b, n_outputs, dtype=dtype)
        if cost.numel() == 0:
            return MatchedDistance(math.nan, math.nan, 0, math.nan)
        solution = entropic_plan_potentials(cost, eps, max_iter=max_iter, tol=tol)
        plan, argmax = _plan_mean_costs(cost, solution.f, solution.g, eps)
        return MatchedDistance(plan, argmax, solution.iterations, solution.violation)


def matched_euclidean_distance(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    n_outputs: int,
    eps: float = 0.1,
    matching: Literal["plan", "argmax"] = "plan",
    max_iter: int = 1000,
    tol: float = 1e-3,
    dtype: torch.dtype = torch.float32,
) -> float:
    """The paper's "Sinkhorn-matched Euclidean distance" between two samples of sequences.

    What is computed, precisely:

    1. each sequence is flattened to a point of R^(L K) (one-hot outputs), so two sequences
       that differ at ``k`` steps are ``sqrt(2 k)`` apart;
    2. the cost matrix is that *Euclidean* (not squared) distance, ``C`` (n, m);
    3. the entropic OT plan ``P`` (n, m) between the two *uniform* clouds (weights 1/n and
       1/m) is solved in the log domain at temperature ``eps`` (0.1, in distance units)
       by :func:`entropic_plan_potentials` (epsilon-scaling, then over-relaxed Sinkhorn
       updates until the row sums are within ``tol`` in L1 of 1/n; the columns are exact);
    4. ``matching="plan"`` (default) returns the mean distance between matched sequences under
       the plan, ``sum_ij P_ij C_ij / sum_ij P_ij`` = the average over the sequences of ``a``
       of the plan-weighted distance to their partners in ``b`` (the transport cost of the
       entropic plan, without the entropy term). ``matching="argmax"`` instead pairs each
       sequence of ``a`` with its most likely partner ``argmax_j P_ij`` and averages those
       distances (a hard reading of the same plan: several sequences of ``a`` may pick the
       same partner). Between two independent HMM samples (n = 5000, L = 100, seed 0) the
       argmax reading gives 4.548 / 7.277 / 7.515 / 7.532 for linear2..5 (the paper's
       baselines: 4.551 / 7.285 / 7.513 / 7.519) and the plan reading about 0.1 more
       (4.641 / 7.391 / 7.636 / 7.655).

    The value depends on the sample sizes (more candidates, closer partners) and on L, so it
    is only comparable between pairs of samples of the same n and L. The paper's *baseline*
    is the same quantity between two independent HMM samples (:func:`evaluate` computes it on
    the same n and L as the RNN-vs-HMM value); a network at the baseline is as close to the
    HMM sample as another HMM sample is. With ``tol=1e-3`` the value is within ~1e-4 of the
    converged one (linear2, n=5000, L=100). Cost: two (n, m) matrices (5000 x 5000 float32:
    100 MB each) and ~30 updates of O(n m): a few seconds on a CPU.

    Args:
        a: (n, L) ints (e.g. RNN outputs); b: (m, L) ints (e.g. HMM outputs), same L.
        n_outputs: K.
        eps: entropic temperature (the paper's 0.1).
        matching: ``"plan"`` or ``"argmax"`` (see above).
        max_iter, tol: Sinkhorn stopping rule at ``eps``.
        dtype: computation dtype (float32 is exact enough: the costs are exact and the
            potentials carry ~1e-6 relative rounding).

    Returns:
        The mean matched Euclidean distance (a float).
    """
    if matching not in ("plan", "argmax"):
        raise ValueError(f"matching must be 'plan' or 'argmax', got {matching!r}")
    result = matched_euclidean_distances(a, b, n_outputs, eps=eps, max_iter=max_iter, tol=tol, dtype=dtype)
    return result.plan if matching == "plan" else result.argmax


# --------------------------------------------------------------------------- sampling and loss

def sample_rnn_outputs(model: torch.nn.Module, n: int, length: int, generator: torch.Generator,
                       chunk: int = 1024) -> np.ndarray:
    """(n, length) int64 sampled outputs of ``model`` (a :class:`~hmmrnn.model.NoiseRNN`).

    Rolls out in chunks of ``chunk`` sequences (to bound memory: a chunk holds
    ``chunk * length * (H + D)`` floats), all drawn from ``generator`` in turn.

    Raises:
        NonFiniteStatesError: some states are not finite (how many, from which step); their
            outputs are undefined and are never returned as outputs.
    """
    if n < 0 or length < 0:
        raise ValueError(f"n and length must be non-negative, got {n}, {length}")
    out = np.empty((n, length), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            out[start : start + count] = model.rollout(count, length, generator).outputs.cpu().numpy()
    if out.size and np.any(out == NONFINITE_OUTPUT):
        raise NonFiniteStatesError("the network's sampled sequences", NonFiniteStates.from_mask(out == NONFINITE_OUTPUT))
    return out


def heldout_sinkhorn(model: torch.nn.Module, hmm_outputs: np.ndarray | torch.Tensor, generator: torch.Generator,
                     blur: float = 0.2, batch: int = 4096) -> float:
    """Debiased Sinkhorn divergence (the training loss) between generated and held-out HMM sequences.

    Generates n sequences of the held-out data's length L with ``model.rollout`` (noise from
    ``generator``), flattens both clouds to (n, L K) one-hot points and evaluates
    :func:`hmmrnn.sinkhorn.sinkhorn_divergence` (p=2, ``blur``; schedule from the one-hot
    diameter, as in training) under ``torch.inference_mode``. For n > ``batch`` the data are
    split into consecutive batches of ``batch`` sequences (the last may be smaller), each
    compared with its own generated batch, and the values are averaged weighted by batch size
    — as the training's validation loss is computed: an estimate from finite clouds depends
    on their size, so clouds of the training's size keep the value comparable with it.

    Args:
        model: a :class:`~hmmrnn.model.NoiseRNN`.
        hmm_outputs: (n, L) held-out HMM outputs.
        generator: torch generator for the model's noise and output samples.
        blur: Sinkhorn blur (eps = blur^2).
        batch: largest cloud size per evaluation.
    """
    n_outputs = int(model.output_size)
    outputs = _as_outputs(hmm_outputs, n_outputs, "hmm_outputs")
    n, length = outputs.shape
    if n == 0:
        return math.nan
    device = model.W_rec.device
    total = 0.0
    with torch.inference_mode():
        for start in range(0, n, batch):
            chunk = outputs[start : start + batch]
            count = chunk.shape[0]
            y = torch.from_numpy(one_hot(chunk, n_outputs).reshape(count, -1)).to(device)
            rnn = model.rollout(count, length, generator).outputs
            if bool((rnn == NONFINITE_OUTPUT).any()):
                raise NonFiniteStatesError("the network's generated sequences", NonFiniteStates.from_mask(rnn == NONFINITE_OUTPUT))
            x = torch.nn.functional.one_hot(rnn, n_outputs).to(y.dtype).reshape(count, -1)
            schedule = epsilon_schedule(onehot_diameter(y), blur)
            total += float(sinkhorn_divergence(x, y, eps_list=schedule)) * count
    return total / n


# --------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class EmissionStatistics:
    """Emission statistics of one source (an RNN sample, an HMM sample, or the exact HMM).

    Attributes:
        marginals: (K,) output frequencies.
        transition: (K, K) output transition matrix (rows ``P(next | current)``).
        lability: probability that the output changes between consecutive steps.
        changes_per_sequence: mean number of changes in a sequence of the report's length.
        rare_frequency: marginal of the report's rare output (the HMM's least frequent).
    """

    marginals: np.ndarray
    transition: np.ndarray
    lability: float
    changes_per_sequence: float
    rare_frequency: float


def emission_statistics(outputs: np.ndarray | torch.Tensor, n_outputs: int, rare_output: int) -> EmissionStatistics:
    """:class:`EmissionStatistics` of sampled (n, L) outputs."""
    marginals = empirical_marginals(outputs, n_outputs)
    return EmissionStatistics(
        marginals=marginals,
        transition=empirical_transition_matrix(outputs, n_outputs),
        lability=empirical_lability(outputs),
        changes_per_sequence=changes_per_sequence(outputs),
        rare_frequency=float(marginals[rare_output]),
    )


def exact_emission_statistics(hmm: HMM, length: int, rare_output: int | None = None) -> EmissionStatistics:
    """:class:`EmissionStatistics` of the stationary HMM (changes per sequence = (L-1) x lability)."""
    marginals = output_marginals(hmm)
    rare = int(np.argmin(marginals)) if rare_output is None else rare_output
    lab = exact_lability(hmm)
    return EmissionStatistics(
        marginals=marginals,
        transition=output_transition_matrix(hmm),
        lability=lab,
        changes_per_sequence=lab * max(length - 1, 0),
        rare_frequency=float(marginals[rare]),
    )


def fit_checks(transition_error: np.ndarray, marginals: np.ndarray, exact_marginals: np.ndarray) -> dict[str, bool]:
    """The fit bar (see :data:`CHECK_DESCRIPTIONS`).

    Args:
        transition_error: (K, K) squared error RNN empirical vs HMM exact (NaN entries fail).
        marginals: (K,) RNN marginals.
        exact_marginals: (K,) HMM marginals.

    Returns:
        ``{"transition_error": bool, "frequent_marginals": bool}``.
    """
    transition_error = np.asarray(transition_error, dtype=np.float64)
    exact_marginals = np.asarray(exact_marginals, dtype=np.float64)
    marginals = np.asarray(marginals, dtype=np.float64)
    frequent = exact_marginals >= FREQUENT_OUTPUT_THRESHOLD
    transition_ok = bool(np.all(np.isfinite(transition_error)) and np.all(transition_error <= paper.TRANSITION_ERROR_MAX))
    deviation = np.abs(marginals[frequent] - exact_marginals[frequent])
    marginals_ok = bool(np.all(np.isfinite(deviation)) and np.all(deviation <= paper.MARGINAL_TOLERANCE))
    return {"transition_error": transition_ok, "frequent_marginals": marginals_ok}


def _paper_numbers(name: str, n: int, length: int) -> dict[str, Any]:
    """The paper's numbers for target ``name`` that a report on n sequences of ``length`` steps
    can be compared with (its matched-distance baselines only for n = 5000 and L = 100: the
    quantity depends on both)."""
    numbers: dict[str, Any] = {"transition_error_max": paper.TRANSITION_ERROR_MAX}
    if name in paper.MARGINALS:
        numbers["marginals"] = list(paper.MARGINALS[name])
    if name in paper.LABILITY:
        numbers["lability"] = paper.LABILITY[name]
    if n == 5000 and length == 100 and name in paper.MATCHED_DISTANCE_BASELINE_L100:
        numbers["matched_distance_baseline"] = paper.MATCHED_DISTANCE_BASELINE_L100[name]
    if name in paper.RARE_COLUMN_SQUARED_ERROR:
        numbers["rare_column_squared_error"] = paper.RARE_COLUMN_SQUARED_ERROR[name]
    if name == "linear2":
        numbers["transition_first_row"] = list(paper.OUTPUT_TRANSITION_FIRST_ROW_LINEAR2)
    if name.startswith("linear"):
        numbers["transition_middle_row"] = list(paper.OUTPUT_TRANSITION_MIDDLE_ROW_LINEAR)
    return numbers


@dataclass
class FitReport:
    """Emission-fit report of a network against its HMM.

    Attributes:
        name: target name (e.g. ``"linear2"``).
        n: sequences sampled from each source; length: steps per sequence.
        seed: seed of the samples.
        rare_output: index of the HMM's least frequent output (first one on ties).
        frequent_outputs: outputs with HMM marginal >= :data:`FREQUENT_OUTPUT_THRESHOLD`.
        rnn: statistics of n RNN sequences.
        hmm_exact: exact statistics of the stationary HMM.
        hmm_sampled: statistics of n HMM sequences (what sampling noise alone gives).
        transition_error: (K, K) squared error, RNN empirical vs HMM exact.
        sampled_transition_error: (K, K) squared error, HMM sample vs HMM exact.
        matched_distance: :func:`matched_euclidean_distance` (``"plan"`` reading) RNN sample
            vs HMM sample (NaN if not computed).
        matched_distance_baseline: the same between a second, independent HMM sample and the
            HMM sample.
        matched_distance_argmax, matched_distance_baseline_argmax: the ``"argmax"`` reading of
            the same two plans (the one that reproduces the paper's baselines).
        paper: the paper's numbers for this target (see :func:`_paper_numbers`).
        checks: the fit bar, ``{name: passed}`` (see :data:`CHECK_DESCRIPTIONS`).
        seconds: wall time of the evaluation.
    """

    name: str
    n: int
    length: int
    seed: int | None
    rare_output: int
    frequent_outputs: tuple[int, ...]
    rnn: EmissionStatistics
    hmm_exact: EmissionStatistics
    hmm_sampled: EmissionStatistics
    transition_error: np.ndarray
    sampled_transition_error: np.ndarray
    matched_distance: float
    matched_distance_baseline: float
    matched_distance_argmax: float = math.nan
    matched_distance_baseline_argmax: float = math.nan
    paper: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    seconds: float = math.nan

    @property
    def passes(self) -> bool:
        """True when every check of the fit bar passes (False if there are none)."""
        return bool(self.checks) and all(self.checks.values())

    @property
    def max_transition_error(self) -> float:
        """Largest squared entry of :attr:`transition_error` (NaN if any entry is undefined)."""
        err = np.asarray(self.transition_error, dtype=np.float64)
        return float(np.max(err)) if np.all(np.isfinite(err)) else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: probabilities to 4 decimals, squared errors to 6, distances to 4; NaN -> None."""

        def stats(s: EmissionStatistics) -> dict[str, Any]:
            return {
                "marginals": _rounded(s.marginals, 4),
                "transition": _rounded(s.transition, 4),
                "lability": _rounded(s.lability, 4),
                "changes_per_sequence": _rounded(s.changes_per_sequence, 3),
                "rare_frequency": _rounded(s.rare_frequency, 5),
            }

        return {
            "name": self.name,
            "n": int(self.n),
            "length": int(self.length),
            "seed": self.seed,
            "rare_output": int(self.rare_output),
            "frequent_outputs": [int(k) for k in self.frequent_outputs],
            "rnn": stats(self.rnn),
            "hmm_exact": stats(self.hmm_exact),
            "hmm_sampled": stats(self.hmm_sampled),
            "transition_error": _rounded(self.transition_error, 6),
            "max_transition_error": _rounded(self.max_transition_error, 6),
            "sampled_transition_error": _rounded(self.sampled_transition_error, 6),
            "matched_distance": _rounded(self.matched_distance, 4),
            "matched_distance_baseline": _rounded(self.matched_distance_baseline, 4),
            "matched_distance_argmax": _rounded(self.matched_distance_argmax, 4),
            "matched_distance_baseline_argmax": _rounded(self.matched_distance_baseline_argmax, 4),
            "paper": _rounded(self.paper, 6),
            "checks": {k: bool(v) for k, v in self.checks.items()},
            "check_descriptions": {k: CHECK_DESCRIPTIONS.get(k, k) for k in self.checks},
            "passes": self.passes,
            "seconds": _rounded(self.seconds, 2),
        }


def _rounded(value: Any, digits: int) -> Any:
    """Round floats (recursively in arrays, lists and dicts); NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_rounded(v, digits) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return round(value, digits) if math.isfinite(value) else None
    return value


def fit_report(
    hmm: HMM,
    rnn_outputs: np.ndarray,
    hmm_outputs: np.ndarray,
    baseline_outputs: np.ndarray | None = None,
    name: str | None = None,
    seed: int | None = None,
    eps: float = 0.1,
) -> FitReport:
    """A :class:`FitReport` from given samples (what :func:`evaluate` calls).

    Args:
        hmm: the target.
        rnn_outputs: (n, L) network outputs.
        hmm_outputs: (n', L) HMM outputs (the reference sample; n' = n in :func:`evaluate`).
        baseline_outputs: (n'', L) a second, independent HMM sample for the matched-distance
            baseline; None skips both matched distances (NaN).
        name: label (default ``hmm.name``).
        seed: recorded in the report.
        eps: temperature of the matched distance.
    """
    start = time.perf_counter()
    k = hmm.n_outputs
    rnn_outputs = _as_outputs(rnn_outputs, k, "rnn_outputs")
    hmm_outputs = _as_outputs(hmm_outputs, k, "hmm_outputs")
    if rnn_outputs.shape[1] != hmm_outputs.shape[1]:
        raise ValueError(f"rnn_outputs and hmm_outputs must have the same length, got {rnn_outputs.shape[1]} and {hmm_outputs.shape[1]}")
    n, length = rnn_outputs.shape
    exact = exact_emission_statistics(hmm, length)
    rare = int(np.argmin(exact.marginals))
    frequent = frequent_outputs(hmm)
    rnn = emission_statistics(rnn_outputs, k, rare)
    sampled = emission_statistics(hmm_outputs, k, rare)
    error = transition_matrix_error(rnn.transition, exact.transition)
    sampled_error = transition_matrix_error(sampled.transition, exact.transition)
    if baseline_outputs is not None:
        distance = matched_euclidean_distances(rnn_outputs, hmm_outputs, k, eps=eps)
        baseline = matched_euclidean_distances(baseline_outputs, hmm_outputs, k, eps=eps)
    else:
        distance = baseline = MatchedDistance(math.nan, math.nan, 0, math.nan)
    label = name if name is not None else hmm.name
    return FitReport(
        name=label,
        n=n,
        length=length,
        seed=seed,
        rare_output=rare,
        frequent_outputs=frequent,
        rnn=rnn,
        hmm_exact=exact,
        hmm_sampled=sampled,
        transition_error=error,
        sampled_transition_error=sampled_error,
        matched_distance=distance.plan,
        matched_distance_baseline=baseline.plan,
        matched_distance_argmax=distance.argmax,
        matched_distance_baseline_argmax=baseline.argmax,
        paper=_paper_numbers(label, n, length),
        checks=fit_checks(error, rnn.marginals, exact.marginals),
        seconds=time.perf_counter() - start,
    )


def evaluate(checkpoint: Any, n: int = 5000, length: int | None = None, seed: int = 0, device: str = "cpu",
             matched: bool = True) -> FitReport:
    """Evaluate a checkpoint's emission fit (the paper's Fig. on fit quality).

    Samples n RNN sequences (``model.rollout``, a ``torch.Generator`` seeded with ``seed``) and
    2n HMM sequences (``numpy.random.default_rng(seed)``: the first n are the HMM sample, the
    next n the independent sample of the matched-distance baseline), all of ``length`` steps.

    Args:
        checkpoint: a :class:`~hmmrnn.checkpoints.Checkpoint`, or a shipped name / folder path.
        n: sequences per sample (the paper: 5000).
        length: steps per sequence; None -> :func:`default_eval_length` (100 for the linear
            chains, the training length for fully3 and cyclic4, as the paper).
        seed: seed of all the samples.
        device: torch device of the rollout.
        matched: also compute the matched distance and its baseline (the slowest part).

    Raises:
        NonFiniteStatesError: the network's states are not finite in some of the n sequences
            (how many, from which step); such a step has no output, so no report is made.
    """
    from .checkpoints import Checkpoint, load

    if not isinstance(checkpoint, Checkpoint):
        if not isinstance(checkpoint, (str, Path)):
            raise TypeError(f"checkpoint must be a Checkpoint, a name or a path, got {type(checkpoint).__name__}")
        checkpoint = load(checkpoint)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    length = default_eval_length(checkpoint.hmm) if length is None else int(length)
    if length < 2:
        raise ValueError(f"length must be at least 2 (transitions need pairs), got {length}")
    start = time.perf_counter()
    hmm = checkpoint.hmm
    rnn_outputs = _evaluation_outputs(checkpoint, n, length, seed, device)
    rng = np.random.default_rng(seed)
    _, hmm_outputs = sample(hmm, int(n), length, rng)
    baseline = sample(hmm, int(n), length, rng)[1] if matched else None
    report = fit_report(hmm, rnn_outputs, hmm_outputs, baseline, name=hmm.name, seed=int(seed))
    report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------- the table

def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = float(value)
    if not math.isfinite(value):
        return "nan"
    return f"{value:.{digits}f}"


def _matrix_lines(title: str, matrix: np.ndarray, digits: int) -> list[str]:
    k = matrix.shape[0]
    width = digits + 4
    lines = [title, " " * 10 + "".join(f"{'-> ' + str(j):>{width}}" for j in range(k))]
    for i in range(k):
        lines.append(f"{'from ' + str(i):<10}" + "".join(f"{_fmt(matrix[i, j], digits):>{width}}" for j in range(k)))
    return lines


_MATCHED_NOTE_LINES = (
    "matched dist.: mean Euclidean distance between one-hot sequences and their partners in the",
    "HMM sample under an entropic OT plan (eps 0.1): plan-weighted, or the most likely partner",
    "(argmax). RNN column: RNN vs HMM sample; HMM sampled column: the baseline, a second HMM",
    "sample of the same size vs the HMM sample; paper: its baseline (shown for n = 5000, L = 100 only).",
)
_MATCHED_NOTE = " ".join(_MATCHED_NOTE_LINES)  # one paragraph in a table's notes; lines in the text report


def _fit_rows(report: FitReport) -> list[list[str]]:
    """The rows of the fit table, formatted: quantity | RNN | HMM exact | HMM sampled | paper.

    Probabilities to 4 decimals, squared errors to 6, changes per sequence and distances to 3;
    ``-`` where a source has no such number, ``nan`` where it is undefined.
    """
    p = report.paper
    k = len(report.hmm_exact.marginals)
    rows: list[tuple[str, Any, Any, Any, Any]] = []
    paper_marg = p.get("marginals")
    for i in range(k):
        rows.append((f"marginal of output {i}", report.rnn.marginals[i], report.hmm_exact.marginals[i],
                     report.hmm_sampled.marginals[i], paper_marg[i] if paper_marg else None))
    rows.append((f"rare-output frequency ({report.rare_output})", report.rnn.rare_frequency,
                 report.hmm_exact.rare_frequency, report.hmm_sampled.rare_frequency,
                 paper_marg[report.rare_output] if paper_marg else None))
    rows.append(("lability (P change/step)", report.rnn.lability, report.hmm_exact.lability,
                 report.hmm_sampled.lability, p.get("lability")))
    rows.append(("changes per sequence", report.rnn.changes_per_sequence, report.hmm_exact.changes_per_sequence,
                 report.hmm_sampled.changes_per_sequence, None))
    sampled_max = report.sampled_transition_error
    sampled_max = float(np.max(sampled_max)) if np.all(np.isfinite(sampled_max)) else math.nan
    rows.append(("max sq. transition error", report.max_transition_error, None, sampled_max,
                 f"<= {p.get('transition_error_max', paper.TRANSITION_ERROR_MAX)}"))
    rows.append(("matched dist. (plan)", report.matched_distance, None, report.matched_distance_baseline, None))
    rows.append(("matched dist. (argmax)", report.matched_distance_argmax, None,
                 report.matched_distance_baseline_argmax, p.get("matched_distance_baseline")))
    out = []
    for label, *values in rows:
        digits = 6 if "error" in label else (3 if "changes" in label or "dist" in label else 4)
        out.append([label] + [_fmt(v, digits) for v in values])
    return out


def _check_lines(report: FitReport) -> list[str]:
    """PASS/FAIL and the description of every check of the fit bar, then the overall verdict."""
    lines = [f"{'PASS' if ok else 'FAIL'}  {key}: {CHECK_DESCRIPTIONS.get(key, key)}" for key, ok in report.checks.items()]
    return lines + [f"overall: {'PASS' if report.passes else 'FAIL'}"]


def _fit_title(report: FitReport) -> str:
    return f"Emission fit: {report.name}  (n={report.n} sequences of L={report.length}, seed={report.seed})"


def format_fit_table(report: FitReport) -> str:
    """A fixed-width text table of a :class:`FitReport` (for terminals; the CLI prints it).

    Columns: quantity | RNN | HMM exact | HMM sampled (same n and L) | paper. Then the RNN,
    exact and squared-error transition matrices side by side, then PASS/FAIL per check.
    :func:`fit_table` and :func:`transition_table` give the same strings as tables for a page.
    """
    header = ("quantity", "RNN", "HMM exact", "HMM sampled", "paper")
    widths = (28, 10, 11, 13, 10)
    lines = [
        _fit_title(report),
        "".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths))),
        "-" * sum(widths),
    ]
    for label, *cells in _fit_rows(report):
        lines.append(f"{label:<{widths[0]}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths[1:])))
    lines.append(_MATCHED_NOTE_LINES[0])
    lines.extend("  " + line for line in _MATCHED_NOTE_LINES[1:])
    lines.append("")
    blocks = [
        _matrix_lines("RNN transition matrix", report.rnn.transition, 4),
        _matrix_lines("HMM exact transition matrix", report.hmm_exact.transition, 4),
        _matrix_lines("squared error (RNN vs exact)", report.transition_error, 6),
    ]
    block_width = max(len(line) for block in blocks for line in block) + 3
    for row in zip(*blocks):
        lines.append("".join(f"{part:<{block_width}}" for part in row).rstrip())
    lines.append("")
    lines += _check_lines(report)
    return "\n".join(lines)


def fit_table(report: FitReport) -> Table:
    """The quantities of a :class:`FitReport` as a :class:`~hmmrnn.tables.Table` (for the book).

    The rows and strings of :func:`format_fit_table` (quantity | RNN | HMM exact | HMM sampled |
    paper), its first line as the title and the meaning of the matched distance as a note; the
    transition matrices and the checks are in :func:`transition_table`.
    """
    return Table(["quantity", "RNN", "HMM exact", "HMM sampled", "paper"], _fit_rows(report),
                 title=_fit_title(report), notes=[_MATCHED_NOTE])


def transition_table(report: FitReport) -> Table:
    """The output transition matrices of a :class:`FitReport` as a :class:`~hmmrnn.tables.Table`.

    One row per current output ``from i``; columns: the RNN's ``P(next = j | i)``, the HMM's
    exact one (4 decimals) and their squared error (6 decimals), as in :func:`format_fit_table`;
    the notes are the checks of the fit bar (PASS/FAIL each) and the overall verdict.
    """
    k = report.rnn.transition.shape[0]
    blocks = [("RNN", report.rnn.transition, 4), ("exact", report.hmm_exact.transition, 4),
              ("sq. error", report.transition_error, 6)]
    columns = ["from"] + [f"{name} -> {j}" for name, _, _ in blocks for j in range(k)]
    rows = [[f"from {i}"] + [_fmt(m[i, j], d) for _, m, d in blocks for j in range(k)] for i in range(k)]
    return Table(columns, rows, title="output transition matrices: RNN, HMM exact, squared error (RNN vs exact)",
                 notes=_check_lines(report))


# --------------------------------------------------------------------------- training curves

def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """(n,) -> (n,) centred running median over ``window`` points (shrinking at the ends)."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    half = window // 2
    return np.array([np.median(values[max(0, i - half): i + half + 1]) for i in range(values.size)])


def secondary_drop_epoch(epochs: np.ndarray, losses: np.ndarray, window: int = 5, skip: int = 10) -> int | None:
    """Epoch of the secondary loss drop (the training bifurcation seen in the loss).

    Rule (stated so anyone can rerun it): smooth the loss with a centred running median of
    ``window`` epochs; ``plateau`` = the largest smoothed value after the first ``skip``
    epochs (the fast initial fall excluded), ``final`` = the median of the last 10 % of
    epochs; the drop epoch is the first epoch after the plateau's maximum at which the
    smoothed loss falls below the midpoint ``(plateau + final) / 2``. Returns None when the
    curve has no such drop (plateau - final smaller than 10 % of the plateau).

    Args:
        epochs: (n,) epoch numbers; losses: (n,) training (or validation) losses.
    """
    epochs = np.asarray(epochs)
    smooth = running_median(np.asarray(losses, dtype=np.float64), window)
    if smooth.size <= skip + 1:
        return None
    tail = smooth[-max(1, smooth.size // 10):]
    final = float(np.median(tail))
    after = np.arange(smooth.size) >= skip
    peak = int(np.flatnonzero(after)[np.argmax(smooth[after])])
    plateau = float(smooth[peak])
    if plateau - final < 0.1 * abs(plateau):
        return None
    below = np.flatnonzero((np.arange(smooth.size) > peak) & (smooth < 0.5 * (plateau + final)))
    return int(epochs[below[0]]) if below.size else None
