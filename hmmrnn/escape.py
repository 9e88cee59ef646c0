"""How a network sets its transition probabilities: a reduced model of leaving a cluster (beyond the paper).

The paper shows *that* a trained network switches (noise accumulates, kick neurons gate the
passage) but not *how often*. This module predicts the per-step leaving hazard of each
cluster from the weights, measures it in long batched simulations, and compares both with
the HMM's leaving probability.

**The reduced model** (one per exit ``a -> b`` of a cluster ``a``):

1. *Linear-Gaussian cluster* (:func:`linear_cluster`). Around an operating point ``h_a`` in
   cluster ``a`` (the mean state of the cluster in a driven run: where the cluster *is*, not
   how often it is left) the network is replaced by its noise-averaged linearisation,
   ``h_{t+1} = c + A h_t + eta_t`` with ``A = diag(Phi(mu / sigma)) W_rec`` (the Jacobian of
   the closed-form noise-averaged drift :func:`hmmrnn.dynamics.averaged_map`: the local
   ReLU pattern, softened by the noise), ``c = Fbar(h_a) - A h_a`` and Gaussian noise
   ``eta`` of covariance ``Q = diag(Phi) W_in W_in^T diag(Phi)`` with its diagonal replaced
   by the exact rectified-Gaussian variances (:func:`hmmrnn.dynamics.conditional_moments`).
   Its stationary mean ``m = (I - A)^{-1} c`` and covariance ``S = A S A^T + Q`` (a discrete
   Lyapunov equation) are computed, not fitted.
2. *Kick drive* (:func:`kick_drive`). The kick group ``K`` of the exit (units silent in the
   cluster that switch on at the switch: :func:`kick_units`; chapter "Kick neurons") is
   driven by ``z_t = r . h_{t-1} + w . x_t`` with ``r`` the mean of ``W_rec``'s rows and ``w``
   of ``W_in``'s rows over ``K``. Under the linear-Gaussian cluster, ``z`` is a stationary
   Gaussian sequence whose mean, variance and lag-1 autocorrelation follow from ``m``, ``S``,
   ``A`` and ``W_in`` in closed form.
3. *Escape* (:func:`ar1_escape`). ``z`` is reduced to a discrete-time AR(1) process with that
   mean, variance and lag-1 correlation, and the exit is its first passage through the ReLU
   threshold ``z = 0`` (the kick neurons switch on). The first passage is computed exactly for
   the AR(1) process discretised on a grid (a sub-stochastic matrix): the quasi-stationary
   per-step hazard is one minus its spectral radius; the distribution of the passage time
   from a start point is the survival curve of the matrix chain.

The predicted leaving hazard of a cluster is the sum over its exits.

**What the reduction neglects**: (i) everything non-linear inside the cluster (units that
cross threshold there other than the kick group; the rectification of the noise beyond its
variance); (ii) the memory of ``z`` beyond lag 1 (the AR(1) reduction keeps the variance and
the lag-1 correlation of the Gaussian sequence, not its full autocorrelation); (iii) the
passage itself: it assumes that a kick-group onset commits the network to the switch (no
return from the kick-zone) and that nothing else starts one; (iv) the entry into the cluster
(the refractory period after a switch): the quasi-stationary hazard is the hazard of a dwell
that has forgotten its start.

**Pass criteria, fixed before any result was looked at** (:data:`PASS_FACTOR`,
:data:`MIN_MEAN_DWELL`, :data:`MIN_SWITCHES`): a prediction agrees with a measurement when it
lies within a factor 1.5 of the measured hazard's 95 % interval
(``low / 1.5 <= predicted <= high * 1.5``). The model applies to a cluster only when (a) the
run is stationary (no state-norm bursts, :func:`hmmrnn.family.burst_steps`), (b) the cluster is
a cluster, a mean dwell of at least 8 steps (the paper's cluster threshold RT > 8), (c) the
linearisation is stable (spectral radius of ``A`` below 1); an exit enters the prediction only
if at least 20 switches along it were seen in the identification run (else its kick group
cannot be identified). Where these fail the model is reported as not applicable, with the
reason.

**Causal test** (:func:`accumulation_direction`, :func:`noise_gain`): the model says that the
hazard is set by the variance of the kick drive, to which the input noise contributes along
one direction of input space most (the top eigenvector of the drive's variance as a quadratic
form in the input). Scaling the input noise by ``g`` along that direction only,
``W_in -> W_in (I + (g - 1) v v^T)``, should move the hazard as the model (recomputed on the
changed weights) predicts; the same change along an orthogonal direction of the same norm (the
input noise is isotropic, so the control receives the same noise power) should not.
Its criteria (:func:`causal_verdicts`), fixed with the others: the direction is *causal* when at
every gain the measured hazard's 95 % interval excludes the nominal measured value; the control
is *null* when at every gain its relative change ``|log(h_u(g) / h(1))|`` is at most a third of the
direction's ``|log(h_v(g) / h(1))|``; the model *predicts the response* when at every gain its
predicted ratio ``h(g) / h(1)`` lies on the same side of 1 as the measured ratio and within a
factor :data:`PASS_FACTOR` of it.

Shapes: ``H`` hidden units, ``D`` input dimensions, ``K`` outputs, ``C`` conditions (weight
sets), ``B`` trajectories, ``T`` steps, ``n`` grid cells. Randomness comes from an explicit
``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import scipy.linalg
import torch
from scipy.special import ndtr

from . import dynamics
from .hmm import HMM, stationary_distribution
from .model import RNNWeights

__all__ = [
    "PASS_FACTOR",
    "MIN_MEAN_DWELL",
    "MIN_SWITCHES",
    "ChainEscape",
    "ar1_escape",
    "LinearCluster",
    "linear_cluster",
    "KickDrive",
    "kick_drive",
    "accumulation_direction",
    "noise_gain",
    "orthogonal_direction",
    "Simulation",
    "simulate",
    "carried",
    "kick_units",
    "Hazard",
    "leaving_hazard",
    "dwell_survival",
    "hmm_leaving",
    "agrees",
    "ExitResult",
    "ClusterResult",
    "NetworkResult",
    "analyse",
    "CausalTest",
    "causal_test",
    "CausalVerdicts",
    "causal_verdicts",
]

PASS_FACTOR = 1.5
"""A prediction agrees with a measurement when ``low / PASS_FACTOR <= predicted <= high * PASS_FACTOR``
(``low``, ``high``: the measured 95 % interval). Fixed before any result was seen."""
MIN_MEAN_DWELL = 8.0
"""A cluster is one only if its measured mean dwell is at least this (the paper's cluster threshold RT > 8)."""
MIN_SWITCHES = 20
"""An exit enters the prediction only if at least this many switches along it identify its kick group."""


# =============================================================================== 1-D escape, exact on a grid


class ChainEscape(NamedTuple):
    """First passage of an AR(1) process through 0 from below, exact on a grid.

    Fields:
        hazard: quasi-stationary per-step escape probability (1 - spectral radius of the
            sub-stochastic kernel): the hazard of a dwell that has forgotten its start.
        survival: (max_steps + 1,) P(no escape in the first k steps) from the start, k = 0..
        mean_dwell: mean number of steps until escape (the escape step counted), from the start.
        edges: (n + 1,) grid edges (the last is the boundary 0).
    """

    hazard: float
    survival: np.ndarray
    mean_dwell: float
    edges: np.ndarray

    @property
    def dwell_pmf(self) -> np.ndarray:
        """(max_steps,) P(escape at step k), k = 1..max_steps."""
        return self.survival[:-1] - self.survival[1:]


def ar1_escape(mean: float, sd: float, rho: float, *, start: float | None = None, n_grid: int = 400,
               span: float = 8.0, max_steps: int = 400) -> ChainEscape:
    """Escape of ``z_{t+1} = mean + rho (z_t - mean) + sd sqrt(1 - rho^2) e_t`` through 0.

    The stationary law of ``z`` is N(mean, sd^2). The process lives on ``(-inf, 0]``; the first
    step with ``z > 0`` is the escape. ``(mean - span sd, 0]`` is cut into ``n_grid`` equal cells,
    the kernel from a cell's centre is integrated exactly over each cell (normal cdf), and the
    mass below the grid is put into the lowest cell (it returns from there at once). For
    ``rho = 0`` the result is exact: hazard ``Phi(mean / sd)`` and a geometric dwell.

    Args:
        mean: stationary mean (must be < 0: the process starts on the safe side).
        sd: stationary standard deviation (> 0).
        rho: lag-1 autocorrelation, in (-1, 1).
        start: starting value (default: the stationary mean).
        n_grid, span, max_steps: grid cells, grid extent in sd, length of the survival curve.

    Raises:
        ValueError: non-finite or out-of-range arguments.
    """
    if not (math.isfinite(mean) and mean < 0):
        raise ValueError(f"mean must be finite and < 0 (below the threshold), got {mean!r}")
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sd must be finite and > 0, got {sd!r}")
    if not (math.isfinite(rho) and -1 < rho < 1):
        raise ValueError(f"rho must be in (-1, 1), got {rho!r}")
    if n_grid < 2 or max_steps < 1 or not span > 0:
        raise ValueError("need n_grid >= 2, max_steps >= 1, span > 0")
    lo = min(mean - span * sd, (start if start is not None else mean) - sd)
    edges = np.linspace(lo, 0.0, n_grid + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    step_mean = mean + rho * (centres - mean)
    step_sd = sd * math.sqrt(1.0 - rho * rho)
    cdf = ndtr((edges[None, :] - step_mean[:, None]) / step_sd)  # (n, n + 1)
    kernel = np.diff(cdf, axis=1)
    kernel[:, 0] += cdf[:, 0]  # below the grid: back into the lowest cell
    hazard = 1.0 - float(np.max(np.abs(np.linalg.eigvals(kernel))))
    x0 = mean if start is None else float(start)
    if not (math.isfinite(x0) and x0 <= 0):
        raise ValueError(f"start must be finite and <= 0, got {start!r}")
    p = np.zeros(n_grid)
    p[min(int(np.searchsorted(edges, x0, side="right")) - 1, n_grid - 1)] = 1.0
    survival = np.empty(max_steps + 1)
    survival[0] = 1.0
    for k in range(1, max_steps + 1):
        p = p @ kernel
        survival[k] = p.sum()
    # mean first passage: sum of survival, with the geometric tail beyond max_steps added exactly
    tail = survival[-1] / hazard if hazard > 0 else math.inf
    mean_dwell = float(survival[:-1].sum() + tail)
    return ChainEscape(max(hazard, 0.0), survival, mean_dwell, edges)


# =============================================================================== linear-Gaussian cluster


class LinearCluster(NamedTuple):
    """The noise-averaged linearisation of the network around an operating point (float64).

    Fields:
        point: (H,) the operating point h_a.
        gain: (H,) Phi(mu / sigma): the soft ReLU pattern at the point.
        A: (H, H) ``diag(gain) W_rec``.
        Q: (H, H) one-step noise covariance of the state.
        mean: (H,) stationary mean of the linear process.
        cov: (H, H) stationary covariance S (``S = A S A^T + Q``).
        radius: spectral radius of A (the model needs < 1).
    """

    point: np.ndarray
    gain: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    radius: float

    @property
    def stable(self) -> bool:
        return self.radius < 1.0


def _f64(weights: RNNWeights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    weights = weights.validate()
    return (np.asarray(weights.W_in, dtype=np.float64), np.asarray(weights.W_rec, dtype=np.float64),
            np.asarray(weights.W_out, dtype=np.float64))


def linear_cluster(weights: RNNWeights, point: np.ndarray, noise_scale: float = 1.0) -> LinearCluster:
    """Linear-Gaussian model of the network around ``point`` (see the module docstring).

    Args:
        weights: the network.
        point: (H,) operating point (e.g. the mean state of a cluster).
        noise_scale: standard deviation of the input noise.

    Returns:
        A :class:`LinearCluster`; ``mean`` and ``cov`` are NaN if the linearisation is not stable.
    """
    w_in, w_rec, _ = _f64(weights)
    h = np.asarray(point, dtype=np.float64)
    if h.shape != (w_rec.shape[0],) or not np.all(np.isfinite(h)):
        raise ValueError(f"point must be a finite ({w_rec.shape[0]},) state, got shape {h.shape}")
    sigma = noise_scale * np.linalg.norm(w_in, axis=1)
    mu = w_rec @ h
    gain = np.where(sigma > 0, ndtr(mu / np.where(sigma > 0, sigma, 1.0)), (mu > 0).astype(np.float64))
    A = gain[:, None] * w_rec
    mean1, var1 = dynamics.conditional_moments(weights, h[None], noise_scale)
    g_in = gain[:, None] * w_in * noise_scale
    Q = g_in @ g_in.T
    Q[np.diag_indices_from(Q)] = var1[0]
    radius = float(np.max(np.abs(np.linalg.eigvals(A))))
    n = w_rec.shape[0]
    if radius < 1.0:
        c = mean1[0] - A @ h
        mean = np.linalg.solve(np.eye(n) - A, c)
        cov = scipy.linalg.solve_discrete_lyapunov(A, Q)
        cov = 0.5 * (cov + cov.T)
    else:
        mean = np.full(n, np.nan)
        cov = np.full((n, n), np.nan)
    return LinearCluster(h, gain, A, Q, mean, cov, radius)


class KickDrive(NamedTuple):
    """The drive ``z_t = r . h_{t-1} + w . x_t`` of a kick group under the linear-Gaussian cluster.

    Fields:
        units: (k,) the kick group.
        mean, sd: stationary mean and standard deviation of z.
        rho: lag-1 autocorrelation of z.
    """

    units: np.ndarray
    mean: float
    sd: float
    rho: float

    def escape(self, **kwargs) -> ChainEscape:
        """:func:`ar1_escape` of this drive (keyword arguments passed on)."""
        return ar1_escape(self.mean, self.sd, self.rho, **kwargs)


def kick_drive(weights: RNNWeights, cluster: LinearCluster, units: Sequence[int], noise_scale: float = 1.0) -> KickDrive:
    """Mean, sd and lag-1 correlation of the kick group's mean pre-activation, in closed form.

    With ``r = mean_K W_rec[k]``, ``w = mean_K W_in[k] * noise_scale`` and the linear process
    ``h_t = c + A h_{t-1} + G x_t + (rectification noise)``, ``G = diag(gain) W_in``:
    ``E z = r . m``, ``Var z = r S r + |w|^2`` and
    ``Cov(z_{t+1}, z_t) = r A S r + r . G w`` (``h_t`` shares the input ``x_t`` with ``z_t``).
    """
    w_in, w_rec, _ = _f64(weights)
    idx = np.asarray(units, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= w_rec.shape[0]:
        raise ValueError(f"units must be a non-empty list of neuron indices < {w_rec.shape[0]}")
    if not cluster.stable:
        raise ValueError(f"the linearisation is not stable (spectral radius {cluster.radius:.3f})")
    r = w_rec[idx].mean(0)
    w = w_in[idx].mean(0) * noise_scale
    g_in = cluster.gain[:, None] * w_in * noise_scale
    var = float(r @ cluster.cov @ r + w @ w)
    lag1 = float(r @ cluster.A @ cluster.cov @ r + r @ g_in @ w)
    return KickDrive(idx, float(r @ cluster.mean), math.sqrt(var), lag1 / var)


def accumulation_direction(weights: RNNWeights, cluster: LinearCluster, units: Sequence[int], n_lags: int = 200) -> np.ndarray:
    """(D,) unit vector of input space along which the noise raises the kick drive's variance most.

    ``z_t = r . h_{t-1} + w . x_t`` and ``h_{t-1} = sum_k A^k G x_{t-1-k} + ...``, so
    ``Var z = sum_k |G^T (A^T)^k r|^2 + |w|^2``: a quadratic form ``v^T M v`` in the input
    direction, ``M = w w^T + sum_k u_k u_k^T`` with ``u_k = G^T (A^T)^k r`` (``k < n_lags``). Its
    top eigenvector is returned, signed to have a positive overlap with ``w + sum_k u_k``.
    """
    w_in, w_rec, _ = _f64(weights)
    idx = np.asarray(units, dtype=np.int64)
    r = w_rec[idx].mean(0)
    w = w_in[idx].mean(0)
    G = cluster.gain[:, None] * w_in
    vecs = [w]
    v = r.copy()
    for _ in range(n_lags):
        vecs.append(G.T @ v)
        v = cluster.A.T @ v
    U = np.stack(vecs)  # (n_lags + 1, D)
    _, _, vt = np.linalg.svd(U, full_matrices=False)
    top = vt[0]
    return top if top @ U.sum(0) >= 0 else -top


def noise_gain(weights: RNNWeights, direction: np.ndarray, gain: float) -> RNNWeights:
    """A copy whose input noise is scaled by ``gain`` along one input direction only:
    ``W_in (I + (gain - 1) v v^T)`` (v normalised). The noise covariance of the drive becomes
    ``W_in (I + (gain^2 - 1) v v^T) W_in^T``."""
    v = np.asarray(direction, dtype=np.float64)
    if v.shape != (weights.input_size,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) == 0:
        raise ValueError(f"direction must be a finite non-zero ({weights.input_size},) vector")
    if not (math.isfinite(gain) and gain >= 0):
        raise ValueError(f"gain must be finite and >= 0, got {gain!r}")
    v = v / np.linalg.norm(v)
    w_in = np.asarray(weights.W_in, dtype=np.float64)
    new = w_in + (gain - 1.0) * np.outer(w_in @ v, v)
    return RNNWeights(new.astype(np.float32), np.array(weights.W_rec, copy=True), np.array(weights.W_out, copy=True))


def orthogonal_direction(direction: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """A random unit vector orthogonal to ``direction`` (the matched control direction)."""
    v = np.asarray(direction, dtype=np.float64)
    v = v / np.linalg.norm(v)
    u = torch.randn(v.size, generator=generator, dtype=torch.float64).numpy()
    u = u - (u @ v) * v
    return u / np.linalg.norm(u)


# =============================================================================== simulation and measurement


class Simulation(NamedTuple):
    """Batched driven runs of several weight sets under the same noise.

    Fields:
        dominant: (C, B, T) argmax outputs.
        sampled: (C, B, T) outputs sampled from the readout as the network emits them (Gumbel-max
            with temperature 1, i.e. from softmax(logits)).
        norms: (C, B, T) state norms (float64).
        hidden: (B, keep, H) states of the first condition's first ``keep`` steps (float32), or None.
        pre: (B, keep, H) their pre-activations, or None.
    """

    dominant: np.ndarray
    sampled: np.ndarray
    norms: np.ndarray
    hidden: np.ndarray | None
    pre: np.ndarray | None


@torch.no_grad()
def simulate(weights: Sequence[RNNWeights], n_traj: int, n_steps: int, generator: torch.Generator, *,
             burn_in: int = 200, keep: int = 0, noise_scale: float = 1.0) -> Simulation:
    """Run every weight set ``n_traj`` x ``n_steps`` steps after a burn-in from 0, all in one batch.

    Every condition sees the same noise draws and the same Gumbel draws for the sampled outputs
    (common random numbers). The states and
    pre-activations of condition 0 are kept for its first ``keep`` steps (for :func:`kick_units`).
    float32; non-finite states are reported by the norms (inf/NaN), never hidden.
    """
    if not weights:
        raise ValueError("give at least one weight set")
    if n_traj < 1 or n_steps < 2 or burn_in < 0 or not 0 <= keep <= n_steps:
        raise ValueError("need n_traj >= 1, n_steps >= 2, burn_in >= 0, 0 <= keep <= n_steps")
    w_in = torch.stack([torch.from_numpy(np.asarray(w.validate().W_in, dtype=np.float32)) for w in weights])  # (C, H, D)
    w_rec = torch.stack([torch.from_numpy(np.asarray(w.W_rec, dtype=np.float32)) for w in weights])
    w_out = torch.stack([torch.from_numpy(np.asarray(w.W_out, dtype=np.float32)) for w in weights])
    n_cond, hidden_size, input_size = w_in.shape
    h = torch.zeros(n_cond, n_traj, hidden_size)
    dominant = np.empty((n_cond, n_traj, n_steps), dtype=np.int64)
    sampled = np.empty((n_cond, n_traj, n_steps), dtype=np.int64)
    n_out = w_out.shape[1]
    norms = np.empty((n_cond, n_traj, n_steps))
    kept_h = np.empty((n_traj, keep, hidden_size), dtype=np.float32) if keep else None
    kept_z = np.empty((n_traj, keep, hidden_size), dtype=np.float32) if keep else None
    w_rec_t, w_in_t, w_out_t = w_rec.transpose(1, 2), w_in.transpose(1, 2), w_out.transpose(1, 2)
    for t in range(burn_in + n_steps):
        x = torch.randn(n_traj, input_size, generator=generator) * noise_scale
        z = torch.bmm(h, w_rec_t) + torch.matmul(x, w_in_t)
        h = torch.relu(z)
        if t >= burn_in:
            s = t - burn_in
            logits = torch.bmm(h, w_out_t)
            u = torch.rand(n_traj, n_out, generator=generator).clamp_min(1e-20)
            dominant[:, :, s] = logits.argmax(-1).numpy()
            sampled[:, :, s] = (logits - torch.log(-torch.log(u))).argmax(-1).numpy()
            norms[:, :, s] = h.double().norm(dim=-1).numpy()
            if s < keep:
                kept_h[:, s] = h[0].numpy()
                kept_z[:, s] = z[0].numpy()
    return Simulation(dominant, sampled, norms, kept_h, kept_z)


def carried(dominant: np.ndarray, outputs: Sequence[int]) -> np.ndarray:
    """(..., T) the last tracked output up to each step (-1 before the first; a rare output passed
    on the way is not a switch); see :func:`hmmrnn.circuits.carried_outputs`."""
    from .circuits import carried_outputs

    return carried_outputs(dominant, outputs)


def kick_units(pre: np.ndarray, dominant: np.ndarray, outputs: Sequence[int], source: int, target: int,
               size: int = 3) -> tuple[np.ndarray, int]:
    """The kick group of the exit ``source -> target``: the ``size`` units with the largest
    ``P(z_i > 0 | the step that switches source -> target) - P(z_i > 0 | dominant output source)``
    (silent in the cluster, on at the switch: the kick signature of chapter "Kick neurons",
    with the switching step standing in for the residency-labelled transition states).

    Args:
        pre: (B, T, H) pre-activations ``z_t`` (``h_t = relu(z_t)``).
        dominant: (B, T) argmax outputs.
        outputs: tracked outputs.

    Returns:
        ``(units (size,), n_switches)``; units are empty when there is no switch.
    """
    if pre.ndim != 3 or pre.shape[:2] != dominant.shape:
        raise ValueError(f"shapes disagree: pre {pre.shape}, dominant {dominant.shape}")
    c = carried(dominant, outputs)
    at = np.nonzero((c[:, :-1] == source) & (c[:, 1:] == target))
    n = int(at[0].size)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    on_switch = (pre[at[0], at[1] + 1] > 0).mean(0)
    on_cluster = (pre[dominant == source] > 0).mean(0)
    score = on_switch - on_cluster
    return np.sort(np.argsort(-score, kind="stable")[:size]).astype(np.int64), n


class Hazard(NamedTuple):
    """A measured per-step hazard with a 95 % interval over trajectories.

    Fields:
        value: events / steps at risk, pooled.
        low, high: 95 % interval (ratio estimator, delta method over trajectories; low >= 0).
        events: number of events.
        at_risk: number of steps at risk.
    """

    value: float
    low: float
    high: float
    events: int
    at_risk: int


def _ratio(events: np.ndarray, at_risk: np.ndarray) -> Hazard:
    e, n = events.astype(np.float64), at_risk.astype(np.float64)
    total = n.sum()
    if total == 0:
        return Hazard(math.nan, math.nan, math.nan, 0, 0)
    r = e.sum() / total
    b = e.size
    se = math.sqrt(((e - r * n) ** 2).sum() / (b * (b - 1))) / n.mean() if b > 1 else math.nan
    return Hazard(float(r), max(float(r - 1.96 * se), 0.0), float(r + 1.96 * se), int(e.sum()), int(total))


def leaving_hazard(dominant: np.ndarray, outputs: Sequence[int], source: int, target: int | None = None,
                   min_age: int = 0, valid: np.ndarray | None = None) -> Hazard:
    """Per-step probability that the tracked output leaves ``source`` (for ``target``, or for any).

    A step ``t`` is at risk when the carried output is ``source`` at ``t`` and, with ``min_age``
    > 0, at least ``min_age`` steps have passed since the switch into ``source`` (steps before
    the first switch of a trajectory have unknown age and are then left out); the event is a
    carried output at ``t + 1`` equal to ``target`` (any other output if None).

    Args:
        dominant: (B, T) argmax outputs.
        outputs: tracked outputs.
        valid: (B, T) optional mask of usable steps (e.g. outside bursts); both t and t+1 must be valid.
    """
    d = np.asarray(dominant)
    if d.ndim != 2:
        raise ValueError(f"dominant must be (B, T), got {d.shape}")
    c = carried(d, outputs)
    risk = c[:, :-1] == source
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != d.shape:
            raise ValueError(f"valid must have the shape of dominant {d.shape}, got {v.shape}")
        risk &= v[:, :-1] & v[:, 1:]
    if min_age > 0:
        change = np.zeros(d.shape, dtype=bool)
        change[:, 1:] = (c[:, 1:] != c[:, :-1]) & (c[:, :-1] >= 0)
        steps = np.broadcast_to(np.arange(d.shape[1]), d.shape)
        last = np.maximum.accumulate(np.where(change, steps, -1), axis=1)
        age = np.where(last >= 0, steps - last, -1)[:, :-1]
        risk &= age >= min_age
    nxt = c[:, 1:]
    event = risk & ((nxt == target) if target is not None else (nxt != source))
    return _ratio(event.sum(1), risk.sum(1))


def dwell_survival(dominant: np.ndarray, outputs: Sequence[int], source: int, max_steps: int) -> np.ndarray:
    """(max_steps + 1,) empirical P(dwell in ``source`` > k), k = 0..max_steps, from complete dwells."""
    c = carried(np.asarray(dominant), outputs)
    lengths = []
    for row in c:  # a loop over trajectories (B of them), vectorised within each
        change = np.flatnonzero((row[1:] != row[:-1]) & (row[:-1] >= 0)) + 1
        if change.size < 2:
            continue
        starts, ends = change[:-1], change[1:]
        lengths.append((ends - starts)[row[starts] == source])
    d = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    if d.size == 0:
        return np.full(max_steps + 1, np.nan)
    return (d[None, :] > np.arange(max_steps + 1)[:, None]).mean(1)


def hmm_leaving(hmm: HMM) -> dict[int, float]:
    """The HMM's leaving probability of each output's cluster of states.

    The cluster of output ``a`` is the set ``S_a`` of hidden states whose most probable emission
    is ``a`` (a state with a tie belongs to none); the leaving probability is
    ``P(s_{t+1} not in S_a | s_t in S_a)`` in the stationary chain. For a linear chain with
    M = 2 or 3 it is the chain's q; for M = 4 and 5 the two states of an end share a cluster
    and it is q / 2.

    Returns:
        ``{a: q_a}`` for every output that owns at least one state.
    """
    pi = stationary_distribution(hmm)
    em = hmm.emission
    top = em.max(axis=1, keepdims=True)
    owner = np.where((em == top).sum(1) == 1, em.argmax(1), -1)
    out = {}
    for a in range(hmm.n_outputs):
        s = owner == a
        if not s.any():
            continue
        mass = pi[s].sum()
        stay = (pi[s][:, None] * hmm.transition[np.ix_(s, s)]).sum()
        out[a] = float(1.0 - stay / mass)
    return out


def agrees(predicted: float, measured: Hazard, factor: float = PASS_FACTOR) -> bool:
    """The pre-registered criterion: ``low / factor <= predicted <= high * factor``."""
    if not (math.isfinite(predicted) and math.isfinite(measured.low) and math.isfinite(measured.high)):
        return False
    return measured.low / factor <= predicted <= measured.high * factor


# =============================================================================== one network, end to end


class ExitResult(NamedTuple):
    """Prediction and measurement for one exit ``source -> target`` of a cluster.

    Fields:
        source, target: the outputs.
        n_switches: switches ``source -> target`` seen in the identification run.
        units: (k,) its kick group (empty if not identified).
        drive: the kick drive of the linear-Gaussian model (None where not computed).
        drive_measured: (mean, sd, rho) of the same drive measured in the identification run
            while the carried output is ``source`` (NaN if no kick group).
        predicted: quasi-stationary hazard of the model (NaN where not applicable).
        from_measured: the same escape computed from the *measured* moments of the drive (the
            second stage of the reduction alone; NaN where not computable).
        measured: measured hazard of this exit at dwell ages >= ``plateau_age``.
        reason: why the model does not apply ('' where it does).
    """

    source: int
    target: int
    n_switches: int
    units: np.ndarray
    drive: KickDrive | None
    drive_measured: tuple[float, float, float]
    predicted: float
    from_measured: float
    measured: Hazard
    reason: str


class ClusterResult(NamedTuple):
    """Prediction and measurement for leaving one cluster (all its exits).

    Fields:
        source: the cluster's output.
        q: the HMM's leaving probability of the output's cluster of states (:func:`hmm_leaving`; NaN if none).
        radius: spectral radius of the linearisation.
        exits: one :class:`ExitResult` per other tracked output.
        predicted: sum of the exits' predicted hazards (NaN if any exit that is seen is not applicable).
        measured: measured leaving hazard at dwell ages >= ``plateau_age``.
        measured_all: measured leaving hazard over all dwell ages (= 1 / mean dwell, about).
        mean_dwell: measured mean of the complete dwells.
        survival: (max_dwell + 1,) measured P(dwell > k).
        survival_predicted: (max_dwell + 1,) the model's P(no exit in k steps) from the drive's mean
            (product over the exits; NaN where not applicable).
        sampled: the leaving probability of the network's *sampled* output (what it emits), all ages.
        hmm_emitted: the same statistic of the HMM's emitted outputs (a sample of the same size).
        reason: why the model does not apply to the cluster ('' where it does).
    """

    source: int
    q: float
    radius: float
    exits: list
    predicted: float
    measured: Hazard
    measured_all: Hazard
    mean_dwell: float
    survival: np.ndarray
    survival_predicted: np.ndarray
    sampled: Hazard
    hmm_emitted: Hazard
    reason: str

    @property
    def agrees(self) -> bool | None:
        """The pre-registered verdict (:func:`agrees`); None where the model does not apply."""
        return None if self.reason else agrees(self.predicted, self.measured)


class NetworkResult(NamedTuple):
    """Every cluster of one network.

    Fields:
        outputs: the tracked outputs (shown >= 5 % of the time in the measurement run).
        clusters: one :class:`ClusterResult` per tracked output.
        burst_fraction: fraction of the measurement run's steps in state-norm bursts.
        reason: why the model does not apply to the network ('' where it may).
    """

    outputs: tuple
    clusters: list
    burst_fraction: float
    reason: str


def _measured_drive(pre: np.ndarray, carried_out: np.ndarray, units: np.ndarray, source: int) -> tuple[float, float, float]:
    z = pre[:, :, units].astype(np.float64).mean(-1)  # (B, T)
    inside = carried_out == source
    if inside.sum() < 3:
        return (math.nan, math.nan, math.nan)
    both = inside[:, 1:] & inside[:, :-1]
    z0, z1 = z[:, :-1][both], z[:, 1:][both]
    rho = float(np.corrcoef(z0, z1)[0, 1]) if z0.size > 2 else math.nan
    return (float(z[inside].mean()), float(z[inside].std()), rho)


def _escape_or_nan(mean: float, sd: float, rho: float, max_steps: int) -> ChainEscape | None:
    if not (math.isfinite(mean) and math.isfinite(sd) and math.isfinite(rho)) or mean >= 0 or sd <= 0 or abs(rho) >= 1:
        return None
    return ar1_escape(mean, sd, rho, max_steps=max_steps)


def analyse(weights: RNNWeights, hmm: HMM, generator: torch.Generator, *, id_traj: int = 128, id_steps: int = 1000,
            n_traj: int = 256, n_steps: int = 3000, burn_in: int = 200, kick_size: int = 3, plateau_age: int = 15,
            max_dwell: int = 150, min_occupancy: float = 0.05) -> NetworkResult:
    """Predict and measure the leaving hazard of every cluster of a network.

    Two independent runs from ``generator``: an identification run (``id_traj`` x ``id_steps``,
    states kept) that locates the clusters (their mean states) and the kick group of every exit
    (:func:`kick_units`) and measures the kick drives' moments; and a measurement run
    (``n_traj`` x ``n_steps``) for the hazards and dwells; and an HMM sample of the measurement
    run's size (NumPy generator seeded from ``generator``) for the HMM's emitted-output leaving
    probability. The applicability rules and the pass criterion are those of the module docstring.
    """
    ident = simulate([weights], id_traj, id_steps, generator, burn_in=burn_in, keep=id_steps)
    meas = simulate([weights], n_traj, n_steps, generator, burn_in=burn_in)
    dom_id, dom = ident.dominant[0], meas.dominant[0]
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    from .hmm import sample as hmm_sample

    _, emitted = hmm_sample(hmm, n_traj, n_steps, rng)
    from .family import burst_steps

    bursts = burst_steps(meas.norms[0])
    burst_fraction = float(bursts.mean())
    valid = ~bursts
    occ = np.bincount(dom[valid].ravel(), minlength=weights.output_size) / max(int(valid.sum()), 1)
    outputs = tuple(int(k) for k in np.flatnonzero(occ >= min_occupancy))
    net_reason = ""
    if burst_fraction > 0:
        net_reason = f"not stationary: {burst_fraction:.0%} of the steps in state-norm bursts"
    if len(outputs) < 2:
        raise ValueError(f"fewer than two outputs shown >= {min_occupancy:.0%} of the time: no switching to predict")
    id_bursts = burst_steps(ident.norms[0])
    c_id = carried(np.where(id_bursts, -1, dom_id), outputs)
    q = hmm_leaving(hmm)
    clusters = []
    for a in outputs:
        inside = (dom_id == a) & ~id_bursts
        cluster = linear_cluster(weights, ident.hidden[inside].astype(np.float64).mean(0))
        exits = []
        for b in outputs:
            if b == a:
                continue
            units, n_sw = kick_units(ident.pre, np.where(id_bursts, -1, dom_id), outputs, a, b, kick_size)
            m_exit = leaving_hazard(dom, outputs, a, b, min_age=plateau_age, valid=valid)
            reason, drive, pred, from_meas = "", None, math.nan, math.nan
            drive_meas = (math.nan, math.nan, math.nan)
            if n_sw < MIN_SWITCHES:
                reason = f"{n_sw} switches: kick group not identified"
            else:
                drive_meas = _measured_drive(ident.pre, c_id, units, a)
                esc_m = _escape_or_nan(*drive_meas, max_dwell)
                from_meas = esc_m.hazard if esc_m is not None else math.nan
                if not cluster.stable:
                    reason = f"linearisation unstable (spectral radius {cluster.radius:.2f})"
                else:
                    drive = kick_drive(weights, cluster, units)
                    if drive.mean >= 0:
                        reason = f"kick drive above threshold at the cluster (mean {drive.mean:.2f})"
                    else:
                        pred = drive.escape(max_steps=max_dwell).hazard
            exits.append(ExitResult(a, b, n_sw, units, drive, drive_meas, pred, from_meas, m_exit, reason))
        seen = [e for e in exits if e.reason == "" or e.n_switches >= MIN_SWITCHES]
        measured = leaving_hazard(dom, outputs, a, min_age=plateau_age, valid=valid)
        measured_all = leaving_hazard(dom, outputs, a, valid=valid)
        survival = dwell_survival(np.where(bursts, -1, dom), outputs, a, max_dwell)
        mean_dwell = float(survival[:-1].sum()) if np.isfinite(survival).all() else math.nan
        reason = net_reason
        if not reason and not (mean_dwell >= MIN_MEAN_DWELL):
            reason = f"no cluster: mean dwell {mean_dwell:.1f} < {MIN_MEAN_DWELL:g} steps"
        if not reason:
            bad = [e for e in seen if e.reason]
            if bad:
                reason = "; ".join(f"exit to {e.target}: {e.reason}" for e in bad)
        if not reason and not seen:
            reason = "no exit identified"
        if reason:
            predicted, surv_pred = math.nan, np.full(max_dwell + 1, np.nan)
        else:
            predicted = float(sum(e.predicted for e in seen))
            surv_pred = np.prod([e.drive.escape(max_steps=max_dwell).survival for e in seen], axis=0)
        sampled = leaving_hazard(meas.sampled[0], outputs, a, valid=valid)
        emitted_hz = leaving_hazard(emitted, outputs, a)
        clusters.append(ClusterResult(a, q.get(a, math.nan), cluster.radius, exits, predicted, measured, measured_all,
                                      mean_dwell, survival, surv_pred, sampled, emitted_hz, reason))
    return NetworkResult(outputs, clusters, burst_fraction, net_reason)


class CausalTest(NamedTuple):
    """Noise scaled along the accumulation direction against an orthogonal control.

    Fields:
        source, target: the exit tested.
        units: its kick group.
        direction, control: (D,) unit vectors of input space (orthogonal).
        gains: (G,) noise gains along the direction.
        predicted: (2, G) the model's hazard of the exit (row 0 direction, row 1 control).
        measured: (2, G) list of :class:`Hazard` (same layout).
        predicted_nominal: the model at gain 1.
        measured_nominal: the measured :class:`Hazard` at gain 1.
    """

    source: int
    target: int
    units: np.ndarray
    direction: np.ndarray
    control: np.ndarray
    gains: np.ndarray
    predicted: np.ndarray
    measured: list
    predicted_nominal: float
    measured_nominal: Hazard


def causal_test(weights: RNNWeights, outputs: Sequence[int], source: int, target: int, gains: Sequence[float],
                generator: torch.Generator, *, id_traj: int = 128, id_steps: int = 1000, n_traj: int = 256,
                n_steps: int = 3000, burn_in: int = 200, kick_size: int = 3, plateau_age: int = 15) -> CausalTest:
    """Scale the input noise along the exit's accumulation direction (and, as a control, along an
    orthogonal direction) by each gain; predict the exit's hazard with the model recomputed on the
    changed weights (same operating point and kick group as the nominal network) and measure it
    (all conditions in one batch, same noise).

    Raises:
        ValueError: if the exit's kick group cannot be identified or the model does not apply to it.
    """
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or not np.all(np.isfinite(g)) or np.any(g < 0):
        raise ValueError(f"gains must be a non-empty list of finite numbers >= 0, got {gains!r}")
    ident = simulate([weights], id_traj, id_steps, generator, burn_in=burn_in, keep=id_steps)
    dom_id = ident.dominant[0]
    units, n_sw = kick_units(ident.pre, dom_id, outputs, source, target, kick_size)
    if n_sw < MIN_SWITCHES:
        raise ValueError(f"{n_sw} switches {source} -> {target}: the kick group cannot be identified")
    point = ident.hidden[dom_id == source].astype(np.float64).mean(0)
    nominal = linear_cluster(weights, point)
    if not nominal.stable:
        raise ValueError(f"the linearisation is not stable (spectral radius {nominal.radius:.2f})")
    v = accumulation_direction(weights, nominal, units)
    u = orthogonal_direction(v, generator)

    def predict(w: RNNWeights) -> float:
        drive = kick_drive(w, linear_cluster(w, point), units)
        return drive.escape().hazard if drive.mean < 0 else math.nan

    variants = [weights] + [noise_gain(weights, d, float(x)) for d in (v, u) for x in g]
    predicted = np.array([predict(w) for w in variants])
    sim = simulate(variants, n_traj, n_steps, generator, burn_in=burn_in)
    measured = [leaving_hazard(sim.dominant[i], outputs, source, target, min_age=plateau_age) for i in range(len(variants))]
    n = g.size
    return CausalTest(source, target, units, v, u, g, predicted[1:].reshape(2, n),
                      [measured[1 : 1 + n], measured[1 + n :]], float(predicted[0]), measured[0])


class CausalVerdicts(NamedTuple):
    """The causal test's three verdicts (criteria: module docstring).

    Fields:
        direction_causal: the measured hazard moves at every gain along the accumulation direction.
        control_null: the control's relative change is at most a third of the direction's, at every gain.
        predicted_response: the model's predicted ratio matches the measured one at every gain.
        measured_ratio: (2, G) measured h(g) / h(1) (direction, control).
        predicted_ratio: (2, G) the model's h(g) / h(1).
    """

    direction_causal: bool
    control_null: bool
    predicted_response: bool
    measured_ratio: np.ndarray
    predicted_ratio: np.ndarray


def causal_verdicts(test: CausalTest) -> CausalVerdicts:
    """Judge a :class:`CausalTest` by the criteria of the module docstring."""
    h1 = test.measured_nominal.value
    measured = np.array([[m.value for m in row] for row in test.measured]) / h1
    predicted = test.predicted / test.predicted_nominal
    moved = all(not (m.low <= h1 <= m.high) for m in test.measured[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = np.abs(np.log(measured))
        same_side = np.sign(np.log(predicted[0])) == np.sign(np.log(measured[0]))
        close = np.abs(np.log(predicted[0] / measured[0])) <= math.log(PASS_FACTOR)
    null = bool(np.all(log_m[1] <= log_m[0] / 3.0))
    response = bool(np.all(same_side & close & np.isfinite(predicted[0])))
    return CausalVerdicts(bool(moved), null, response, measured, predicted)
