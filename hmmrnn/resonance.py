"""Stochastic resonance: noise sweeps, and regularity and coherence measures (Torre et al., NeurIPS 2025: its discussion of self-induced stochastic resonance).

The paper calls the switching of its networks *self-induced stochastic resonance* (SISR) but
draws no resonance curve. This module measures one: it runs a network, or many variants of
it, under noise of varying strength or shape, and measures for each variant how often and
how regularly the dominant output switches, how coherent the switching is (a peak in the
spectrum of the output sequence), and how well the sampled outputs still fit the HMM.

**Why a plain amplitude sweep shows nothing.** The network is bias-free and starts at
``h_0 = 0``: ``h_{t+1} = relu(W_rec h_t + W_in x_t)``, ``x_t ~ N(0, s^2 I)``. ReLU is positively
homogeneous, so the run at noise scale ``s`` is exactly ``s`` times the run at scale 1 driven
by the same standard-normal draws (:func:`hmmrnn.dynamics.scaled_copy_check`). The argmax of
the logits, and everything computed from it (switching rate, dwell times, their CV, the
spectrum of the dominant-output sequence) does not depend on ``s`` at all; only the sampled
outputs do, because the logits scale with ``s`` while the Gumbel noise of the output sampling
does not: input noise scale ``s`` is output temperature ``1 / s``. Noise axes that change the
dynamics must change the *shape* of the noise, or break the homogeneity:

* ``"input_scale"``: the amplitude ``s`` (the invariance, measured);
* ``"hidden_noise"``: private noise of standard deviation ``sigma_h`` added to every unit's
  pre-activation on top of the trained input noise, ``relu(W_rec h + W_in x + sigma_h xi)``
  (only the ratio ``sigma_h / s`` matters, so this is a real axis);
* ``"subspace_gain"``: the part of the noise drive ``W_in x`` inside a subspace of the hidden
  space (e.g. the orbit plane) multiplied by a gain ``g``, ``W_in -> (I + (g - 1) Q Q^T) W_in``;
* ``"threshold_scale"``: a control that breaks homogeneity: every unit gets a fixed negative
  bias ``-theta`` and the amplitude ``s`` is swept (equivalent to a threshold ``theta / s`` at
  unit noise): what an amplitude sweep would do if the network had biases.

All variants of an axis are one stacked :class:`NetworkVariants` and are simulated in one
batched recurrence (:func:`simulate`), with *common random numbers*: every variant is driven
by the same input draws, private-noise draws and Gumbel draws, so differences between
variants are not sampling noise, and the amplitude invariance is exact (up to float rounding).
Trajectories are grouped into ``n_seeds`` independent replicates; confidence bands are
t intervals over the replicates (:func:`band`).

Measures (each a small function on arrays, tested on analytic cases):

* :func:`run_lengths` / :func:`dwell_times`: lengths of the runs of equal value in (B, T)
  sequences; the first and last run of each trajectory are censored and dropped;
* :func:`coefficient_of_variation` (regularity: a Poisson-like process with geometric dwells
  has ``CV = sqrt(1 - p) ~ 1``, a periodic one 0) and :func:`hazard` (switching probability
  after ``k`` steps in an output: flat for a memoryless process, rising when something
  accumulates);
* :func:`power_spectrum` of the one-hot output sequence and :func:`spectral_peak` (coherence:
  peak frequency, height, prominence over the low-frequency level, quality factor
  ``f_peak / FWHM``); :func:`renewal_peak`, the peak that a two-state alternation with gamma
  dwells of a given CV would have (how regular switching must be to show a peak at all);
* :func:`lagged_joint`, :func:`hmm_lagged_joint`, :func:`fit_error`: total-variation distance
  between the joint distributions of outputs ``k`` steps apart, RNN samples vs the exact HMM,
  averaged over lags (emission fit, sensitive to the slow time scale as well as to the
  marginals and the one-step transitions);
* :func:`time_scales`: time in clusters vs time through transitions, from the residency
  times of :mod:`hmmrnn.regions`;
* :func:`optimum`: where a measure is smallest along an axis and whether that is a
  significant interior optimum (the resonance criterion).

Any number of frequent outputs: the *orbit plane* is the PC1-PC2 plane of a driven run
(:func:`orbit_pca`; for three or more frequent outputs, one cluster each, the plane holding
most of the clusters and the paths between them), and a *dwell* is a maximal run of the same
dominant output among the *tracked* outputs, the HMM's :func:`frequent_outputs` (a step on
which an untracked, rare output is dominant keeps the last tracked one: :func:`track_outputs`).
:func:`plane_gain_sweep` makes the central measurement for one network (orbit plane, in-plane
gain sweep, measures, optimum) and reports a network whose activity explodes under its own
noise as ``"diverged"`` (:class:`DivergedError`, the rule of :func:`simulate`) instead of failing.

Controls and comparisons: :func:`shuffled_columns`, :func:`shuffled_entries` and
:func:`linearised` (modified copies of the weights), :func:`bifurcation_snapshots` (training
snapshots on either side of the bifurcation).

Shapes: ``V`` variants (axis values), ``S`` replicates ("seeds"), ``B`` trajectories per
replicate, ``T`` steps, ``H`` hidden units, ``D`` input dimensions, ``K`` outputs.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from . import regions
from .dynamics import PCA, detect_transition, pca, snapshot_dynamics
from .hmm import HMM, sample as hmm_sample, stationary_distribution
from .model import NoiseRNN, RNNWeights

__all__ = [
    "AXES",
    "dwell_times_by_regime",
    "ACTIVATIONS",
    "NetworkVariants",
    "variants",
    "shuffled_columns",
    "shuffled_entries",
    "linearised",
    "DivergedError",
    "orbit_pca",
    "orbit_plane",
    "pick_snapshots",
    "SweepRun",
    "simulate",
    "RunLengths",
    "run_lengths",
    "dwell_times",
    "frequent_outputs",
    "track_outputs",
    "switching_rate",
    "coefficient_of_variation",
    "geometric_cv",
    "hazard",
    "Spectrum",
    "power_spectrum",
    "one_hot",
    "SpectralPeak",
    "spectral_peak",
    "renewal_peak",
    "lagged_joint",
    "hmm_lagged_joint",
    "fit_error",
    "hmm_fit_floor",
    "SweepMeasures",
    "measure",
    "band",
    "largest_change",
    "Optimum",
    "optimum",
    "PlaneSweep",
    "plane_sweep",
    "plane_gain_sweep",
    "named_generator",
    "SnapshotChoice",
    "bifurcation_snapshots",
    "variant_model",
    "TimeScales",
    "cluster_passages",
    "time_scales",
]

AXES: tuple[str, ...] = ("input_scale", "hidden_noise", "subspace_gain", "threshold_scale")
"""Noise axes understood by :func:`variants` (see the module docstring)."""

ACTIVATIONS: tuple[str, ...] = ("relu", "linear")


@contextlib.contextmanager
def _no_subnormals() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block: a network with a negative bias decays
    towards 0 and subnormal arithmetic would make it ~100x slower without changing results."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


# =============================================================================== variants


class NetworkVariants(NamedTuple):
    """``V`` variants of a noise-driven RNN, stacked along the first axis (weights float32).

    The variant ``v`` runs
    ``h_{t+1} = act(W_rec[v] h_t + input_scale[v] W_in[v] x_t + hidden_std[v] xi_t + bias[v])``,
    ``x_t ~ N(0, I_D)``, ``xi_t ~ N(0, I_H)``, with logits ``W_out[v] h_t``, from ``h_0 = 0``;
    ``act`` is ReLU or the identity (``activation``).

    Fields:
        W_in: (V, H, D).
        W_rec: (V, H, H).
        W_out: (V, K, H).
        bias: (V, H).
        input_scale: (V,) standard deviation of the input noise.
        hidden_std: (V,) standard deviation of the private noise on each unit.
        values: (V,) the axis value of each variant.
        axis: the axis name (one of :data:`AXES`).
        activation: ``"relu"`` or ``"linear"``.
    """

    W_in: np.ndarray
    W_rec: np.ndarray
    W_out: np.ndarray
    bias: np.ndarray
    input_scale: np.ndarray
    hidden_std: np.ndarray
    values: np.ndarray
    axis: str
    activation: str

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.values.shape[0])

    @property
    def homogeneous(self) -> np.ndarray:
        """(V,) True where the variant is positively homogeneous (no bias)."""
        return ~np.any(self.bias != 0, axis=1)


def _check_weights(weights: RNNWeights) -> RNNWeights:
    if not isinstance(weights, RNNWeights):
        raise TypeError(f"expected RNNWeights, got {type(weights).__name__}")
    return weights.validate()


def _values(values: Sequence[float], name: str, allow_zero: bool = True) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v < 0) or (not allow_zero and np.any(v == 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {v.tolist()}")
    return v


def variants(
    weights: RNNWeights,
    axis: str,
    values: Sequence[float],
    *,
    basis: np.ndarray | None = None,
    threshold: float | None = None,
    activation: str = "relu",
) -> NetworkVariants:
    """Stack the variants of ``weights`` along a noise axis.

    Args:
        weights: the network.
        axis: one of :data:`AXES`:
            ``"input_scale"``: ``values`` are input-noise standard deviations ``s``;
            ``"hidden_noise"``: ``values`` are private-noise standard deviations ``sigma_h``
            (input noise at scale 1);
            ``"subspace_gain"``: ``values`` are gains ``g`` of the noise drive inside the span
            of ``basis``: ``W_in -> (I + (g - 1) Q Q^T) W_in``, ``Q`` an orthonormal basis of it;
            ``"threshold_scale"``: ``values`` are input-noise standard deviations ``s``, every
            unit with the bias ``-threshold``.
        values: (V,) axis values (>= 0; > 0 for the scales).
        basis: (k, H) rows spanning the subspace (``"subspace_gain"`` only; orthonormalised here).
        threshold: the fixed threshold theta (``"threshold_scale"`` only).
        activation: ``"relu"`` (the paper's network) or ``"linear"`` (a control).

    Returns:
        :class:`NetworkVariants` with ``V`` variants.
    """
    w = _check_weights(weights)
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; choose from {AXES}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    vals = _values(values, "values", allow_zero=axis in ("hidden_noise", "subspace_gain"))
    n, h = vals.size, w.hidden_size
    w_in = np.repeat(np.asarray(w.W_in, dtype=np.float32)[None], n, axis=0)
    bias = np.zeros((n, h), dtype=np.float32)
    scale = np.ones(n)
    hidden = np.zeros(n)
    if (basis is not None) != (axis == "subspace_gain"):
        raise ValueError("give basis exactly when axis is 'subspace_gain'")
    if (threshold is not None) != (axis == "threshold_scale"):
        raise ValueError("give threshold exactly when axis is 'threshold_scale'")
    if axis in ("input_scale", "threshold_scale"):
        scale = vals.copy()
    elif axis == "hidden_noise":
        hidden = vals.copy()
    elif axis == "subspace_gain":
        b = np.asarray(basis, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != h or b.shape[0] < 1 or b.shape[0] >= h:
            raise ValueError(f"basis must be (k, H={h}) with 1 <= k < H, got {b.shape}")
        q, r = np.linalg.qr(b.T)  # (H, k) orthonormal columns spanning the rows of basis
        if np.min(np.abs(np.diag(r))) < 1e-8 * np.max(np.abs(np.diag(r))):
            raise ValueError("basis rows are linearly dependent")
        proj_in = q @ (q.T @ np.asarray(w.W_in, dtype=np.float64))  # (H, D) in-subspace part of W_in
        w_in = (np.asarray(w.W_in, dtype=np.float64)[None] + (vals[:, None, None] - 1.0) * proj_in[None]).astype(np.float32)
    if axis == "threshold_scale":
        if not (threshold is not None and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        bias[:] = -float(threshold)
    return NetworkVariants(
        W_in=w_in,
        W_rec=np.repeat(np.asarray(w.W_rec, dtype=np.float32)[None], n, axis=0),
        W_out=np.repeat(np.asarray(w.W_out, dtype=np.float32)[None], n, axis=0),
        bias=bias,
        input_scale=scale,
        hidden_std=hidden,
        values=vals,
        axis=axis,
        activation=activation,
    )


def shuffled_columns(weights: RNNWeights, generator: torch.Generator) -> RNNWeights:
    """Control: every unit keeps its incoming recurrent weights, from randomly reassigned units.

    ``W_rec' = W_rec[:, p]`` for a random permutation ``p``: the multiset of each row (each
    unit's incoming weights, its total excitation and inhibition) and the singular values are
    kept; which unit talks to which is destroyed. ``W_in`` and ``W_out`` are unchanged. A copy.
    """
    w = _check_weights(weights).copy()
    perm = torch.randperm(w.hidden_size, generator=generator).numpy()
    return RNNWeights(w.W_in, np.ascontiguousarray(w.W_rec[:, perm]), w.W_out)


def shuffled_entries(weights: RNNWeights, generator: torch.Generator) -> RNNWeights:
    """Control: all entries of ``W_rec`` randomly permuted (keeps only their distribution). A copy."""
    w = _check_weights(weights).copy()
    flat = w.W_rec.ravel()
    perm = torch.randperm(flat.size, generator=generator).numpy()
    return RNNWeights(w.W_in, flat[perm].reshape(w.W_rec.shape).copy(), w.W_out)


def linearised(weights: RNNWeights, radius: float) -> RNNWeights:
    """Weights for the linear control: ``W_rec`` rescaled to spectral radius ``radius`` (a copy).

    Run it with ``activation="linear"`` (ReLU replaced by the identity): a stable linear
    Gaussian process driven by the same noise, read out by the same ``W_out``.
    """
    if not (0 < radius < 1):
        raise ValueError(f"radius must be in (0, 1) for a stable linear network, got {radius!r}")
    w = _check_weights(weights).copy()
    rho = float(np.abs(np.linalg.eigvals(w.W_rec.astype(np.float64))).max())
    if rho == 0:
        raise ValueError("W_rec is nilpotent (spectral radius 0): nothing to rescale")
    return RNNWeights(w.W_in, (w.W_rec * (radius / rho)).astype(np.float32), w.W_out)


class DivergedError(ValueError):
    """The activity of a noise-driven network explodes (overflows, or its RMS grows more than
    a million-fold over the kept steps): it has no orbit and no switching to measure."""


def orbit_pca(
    weights: RNNWeights,
    generator: torch.Generator,
    *,
    dims: int = 2,
    n_traj: int = 4,
    n_steps: int = 1000,
    burn_in: int = 200,
    activation: str = "relu",
) -> PCA:
    """Leading principal components of a driven run (noise scale 1, float64, from ``h_0 = 0``).

    The *orbit plane* of the chapter is the span of the first two: for a two-output chain the
    orbit is a closed loop through the two clusters, for three or more frequent outputs (one
    cluster each, e.g. ``fully3``, ``cyclic4``) PC1-PC2 is the plane that best holds the clusters
    and the paths between them; ``explained`` says how much of the state variance it holds.
    ``activation="linear"`` runs the linear control instead.

    Returns:
        :class:`hmmrnn.dynamics.PCA` with ``dims`` components ((dims, H) orthonormal rows).

    Raises:
        DivergedError: the run overflows or its RMS grows more than a million-fold over the
            kept steps (the same rule as :func:`simulate`).
    """
    w = _check_weights(weights)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    w_in, w_rec = torch.from_numpy(w.W_in.astype(np.float64)), torch.from_numpy(w.W_rec.astype(np.float64))
    h = torch.zeros(n_traj, w.hidden_size, dtype=torch.float64)
    states = []
    with torch.no_grad(), _no_subnormals():
        for t in range(burn_in + n_steps):
            pre = h @ w_rec.T + torch.randn(n_traj, w.input_size, generator=generator, dtype=torch.float64) @ w_in.T
            h = torch.relu(pre) if activation == "relu" else pre
            if t >= burn_in:
                states.append(h)
    hidden = torch.cat(states).numpy()
    if not np.all(np.isfinite(hidden)):
        raise DivergedError("the driven run diverged (overflow): no orbit plane")
    size_start = float(np.sqrt(np.mean(states[0].numpy() ** 2)))
    size_end = float(np.sqrt(np.mean(states[-1].numpy() ** 2)))
    if size_start > 0 and size_end > _EXPLOSION * size_start:
        raise DivergedError(f"the driven run diverged (RMS x {size_end / size_start:.1e} over {n_steps} steps): no orbit plane")
    return pca(hidden, dims)


def orbit_plane(
    weights: RNNWeights,
    generator: torch.Generator,
    *,
    dims: int = 2,
    n_traj: int = 4,
    n_steps: int = 1000,
    burn_in: int = 200,
    activation: str = "relu",
) -> np.ndarray:
    """(dims, H) orthonormal leading principal components of a driven run (noise scale 1).

    For a ReLU network this is the PC1-PC2 plane of the orbit (:func:`orbit_pca`, which also
    gives the variance it holds); raises :class:`DivergedError` if the run explodes.
    """
    return orbit_pca(weights, generator, dims=dims, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in,
                     activation=activation).components


def pick_snapshots(epochs: Sequence[int], bifurcation_epoch: float, offset: float) -> tuple[int, int]:
    """Indices of the snapshots ``offset`` epochs before and after a bifurcation.

    ``before``: the latest snapshot at or before ``bifurcation_epoch - offset`` (the epoch-0
    initialisation excluded); ``after``: the earliest at or after ``bifurcation_epoch + offset``.
    Raises ValueError if either does not exist.
    """
    e = np.asarray(epochs, dtype=np.float64)
    if not math.isfinite(bifurcation_epoch):
        raise ValueError("no bifurcation epoch (NaN): cannot pick snapshots around it")
    before = np.flatnonzero((e > 0) & (e <= bifurcation_epoch - offset))
    after = np.flatnonzero(e >= bifurcation_epoch + offset)
    if before.size == 0 or after.size == 0:
        raise ValueError(f"no snapshot {offset} epochs before and after epoch {bifurcation_epoch} in {e.tolist()}")
    return int(before[-1]), int(after[0])


# =============================================================================== simulation


_EXPLOSION = 1e6
"""A variant whose RMS activity grows by more than this factor over the kept steps has exploded."""


class SweepRun(NamedTuple):
    """Outputs of the variants, trajectories grouped into replicates.

    Fields:
        dominant: (V, S, B, T) int8 argmax of the logits.
        sampled: (V, S, B, T) int8 outputs sampled from softmax(logits) (temperature 1).
        diverged: (V,) True where the activity overflowed, or its RMS grew more than a
            million-fold over the kept steps (it explodes under noise; its measures are NaN).
        values: (V,) axis values.
        axis: the axis name.
        n_outputs: K.
    """

    dominant: np.ndarray
    sampled: np.ndarray
    diverged: np.ndarray
    values: np.ndarray
    axis: str
    n_outputs: int


def simulate(
    net: NetworkVariants,
    generator: torch.Generator,
    *,
    n_seeds: int,
    n_traj: int,
    n_steps: int,
    burn_in: int = 200,
    dtype: torch.dtype = torch.float32,
) -> SweepRun:
    """Run every variant on ``n_seeds x n_traj`` trajectories, all in one batched recurrence.

    Common random numbers: at each step one input draw ``x`` (B, D), one private-noise draw
    ``xi`` (B, H) and one Gumbel draw (B, K) are shared by all variants (trajectory ``b`` of
    every variant sees the same draws). The only Python loop is over time steps.

    Args:
        net: the stacked variants.
        generator: torch generator for every draw.
        n_seeds: S, independent replicates (the unit of the confidence bands).
        n_traj: B, trajectories per replicate.
        n_steps: T, steps kept per trajectory (after the burn-in, from ``h_0 = 0``).
        burn_in: steps discarded first.
        dtype: float32, or float64 where float32 rounding matters (e.g. to compare the argmax
            of variants that are exact rescalings of each other, at near-ties).
    """
    for name, value, low in (("n_seeds", n_seeds, 1), ("n_traj", n_traj, 1), ("n_steps", n_steps, 2), ("burn_in", burn_in, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    v_count, h_dim, d_dim = net.W_in.shape
    k_dim = net.W_out.shape[1]
    if net.W_rec.shape != (v_count, h_dim, h_dim) or net.W_out.shape[::2] != (v_count, h_dim):
        raise ValueError(f"inconsistent variant shapes {net.W_in.shape}, {net.W_rec.shape}, {net.W_out.shape}")
    if k_dim > 127:
        raise ValueError("at most 127 outputs (int8 storage)")
    b_total = int(n_seeds) * int(n_traj)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(dtype)

    w_in_t = tensor(net.W_in.transpose(0, 2, 1)) * tensor(net.input_scale)[:, None, None]
    w_rec_t = tensor(net.W_rec.transpose(0, 2, 1))
    w_out_t = tensor(net.W_out.transpose(0, 2, 1))
    bias = tensor(net.bias)[:, None, :]
    sig_h = tensor(net.hidden_std)[:, None, None]
    private = bool(np.any(net.hidden_std > 0))
    with_bias = bool(np.any(net.bias != 0))
    relu = net.activation == "relu"
    dominant = torch.empty(v_count, b_total, int(n_steps), dtype=torch.int8)
    sampled = torch.empty_like(dominant)
    tiny = torch.finfo(dtype).tiny
    h = torch.zeros(v_count, b_total, h_dim, dtype=dtype)
    size_start = torch.zeros(v_count, dtype=torch.float64)
    with torch.no_grad(), _no_subnormals():
        for t in range(int(burn_in) + int(n_steps)):
            if t == int(burn_in):
                size_start = h.double().pow(2).mean(dim=(1, 2)).sqrt()
            x = torch.randn(b_total, d_dim, generator=generator, dtype=dtype)
            pre = torch.baddbmm(torch.matmul(x, w_in_t), h, w_rec_t)  # (V, B, H)
            if private:
                pre.add_(sig_h * torch.randn(b_total, h_dim, generator=generator, dtype=dtype))
            if with_bias:
                pre.add_(bias)
            h = pre.relu_() if relu else pre
            if t >= burn_in:
                logits = torch.bmm(h, w_out_t)  # (V, B, K)
                u = torch.rand(b_total, k_dim, generator=generator, dtype=dtype).clamp_min(tiny)
                gumbel = -torch.log((-torch.log(u)).clamp_min(tiny))
                j = t - int(burn_in)
                dominant[:, :, j] = logits.argmax(-1).to(torch.int8)
                sampled[:, :, j] = (logits + gumbel).argmax(-1).to(torch.int8)
        size_end = h.double().pow(2).mean(dim=(1, 2)).sqrt()
        exploded = (size_start > 0) & (size_end > _EXPLOSION * size_start)
        diverged = ((~torch.isfinite(h)).flatten(1).any(1) | exploded).numpy()
    shape = (v_count, int(n_seeds), int(n_traj), int(n_steps))
    return SweepRun(dominant.numpy().reshape(shape), sampled.numpy().reshape(shape), diverged,
                    np.asarray(net.values, dtype=np.float64), net.axis, int(k_dim))


# =============================================================================== measures: dwell times


class RunLengths(NamedTuple):
    """Runs of equal value in (B, T) sequences, in order (trajectory by trajectory).

    Fields:
        traj: (R,) trajectory of each run.
        start: (R,) first step of the run.
        length: (R,) number of steps.
        value: (R,) the value held.
        censored: (R,) True for the first and the last run of a trajectory (their true length
            is unknown: they started before or end after the window).
    """

    traj: np.ndarray
    start: np.ndarray
    length: np.ndarray
    value: np.ndarray
    censored: np.ndarray


def _as_sequences(seq: np.ndarray) -> np.ndarray:
    s = np.asarray(seq)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"sequences must be (B, T) with T >= 1, got shape {s.shape}")
    return s


def run_lengths(seq: np.ndarray) -> RunLengths:
    """All runs of equal consecutive values in each row of ``seq`` (B, T) (a 1-D array is one row)."""
    s = _as_sequences(seq)
    b, t = s.shape
    change = np.ones((b, t), dtype=bool)
    change[:, 1:] = s[:, 1:] != s[:, :-1]  # a run starts here
    traj, start = np.nonzero(change)
    end = np.empty_like(start)
    end[:-1] = start[1:]
    new_traj = np.ones(traj.size, dtype=bool)
    new_traj[1:] = traj[1:] != traj[:-1]
    last = np.ones(traj.size, dtype=bool)
    last[:-1] = new_traj[1:]
    end[last] = t
    return RunLengths(traj, start, end - start, s[traj, start], new_traj | last)


def dwell_times(seq: np.ndarray) -> np.ndarray:
    """(n,) lengths of the uncensored runs (all but the first and last of each trajectory)."""
    runs = run_lengths(seq)
    return runs.length[~runs.censored]


def dwell_times_by_regime(seq: np.ndarray, in_regime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uncensored dwell times split by a per-step regime flag (e.g. "the state is in a burst").

    Args:
        seq: (B, T) dominant outputs (a 1-D array is one row).
        in_regime: (B, T) bool, same shape.

    Returns:
        ``(inside, outside)``: lengths of the uncensored runs whose every step is in the
        regime, and of those with no step in it (runs that straddle the border are dropped).
    """
    s = _as_sequences(seq)
    flag = _as_sequences(np.asarray(in_regime, dtype=bool))
    if flag.shape != s.shape:
        raise ValueError(f"in_regime must have the shape of seq {s.shape}, got {flag.shape}")
    runs = run_lengths(s)
    cum = np.zeros((s.shape[0], s.shape[1] + 1), dtype=np.int64)
    np.cumsum(flag, axis=1, out=cum[:, 1:])
    count = cum[runs.traj, runs.start + runs.length] - cum[runs.traj, runs.start]
    keep = ~runs.censored
    return runs.length[keep & (count == runs.length)], runs.length[keep & (count == 0)]


def frequent_outputs(hmm: HMM, min_frequency: float = 0.1) -> np.ndarray:
    """Outputs whose stationary frequency under the HMM is at least ``min_frequency``, sorted.

    The *tracked* outputs of the switching measures: ``[0, 2]`` for the linear chains (output 1
    has frequency 0.01), ``[0, 1, 2]`` for ``fully3`` (1/3 each) and ``cyclic4`` (0.25, 0.5, 0.25).
    """
    if not 0 < min_frequency <= 1:
        raise ValueError(f"min_frequency must be in (0, 1], got {min_frequency!r}")
    freq = stationary_distribution(hmm) @ hmm.emission
    out = np.flatnonzero(freq >= min_frequency)
    if out.size == 0:
        raise ValueError(f"no output of {hmm.name or 'the HMM'} has frequency >= {min_frequency}")
    return out


def track_outputs(seq: np.ndarray, outputs: Sequence[int]) -> np.ndarray:
    """The sequence of the last *tracked* output: every step whose value is not in ``outputs``
    takes the value of the latest earlier step whose value is (the first tracked value where
    there is none earlier; a row with no tracked value at all is left as it is).

    With it a *dwell* is a maximal run of the same tracked output, for any number of tracked
    outputs: a step on which a rare output is dominant (e.g. output 1 of a linear chain in the
    middle of a transition) neither ends a dwell nor counts as one. Vectorised (no loop over
    rows or steps).

    Args:
        seq: (B, T) or (T,) ints.
        outputs: the tracked values (e.g. :func:`frequent_outputs`).

    Returns:
        An array of the shape and dtype of ``seq``.
    """
    s = np.asarray(seq)
    flat = _as_sequences(s)
    keep = np.isin(flat, np.asarray(outputs))
    t = flat.shape[1]
    idx = np.where(keep, np.arange(t)[None], -1)
    last = np.maximum.accumulate(idx, axis=1)  # latest tracked step at or before t (-1: none yet)
    first = np.where(keep.any(axis=1), keep.argmax(axis=1), 0)  # first tracked step of each row
    src = np.where(last >= 0, last, first[:, None])
    out = np.take_along_axis(flat, src, axis=1)
    return out.reshape(s.shape)


def switching_rate(seq: np.ndarray) -> float:
    """Changes of value per step: ``mean(seq[:, t+1] != seq[:, t])`` (NaN if T < 2)."""
    s = _as_sequences(seq)
    if s.shape[1] < 2:
        return math.nan
    return float(np.mean(s[:, 1:] != s[:, :-1]))


def coefficient_of_variation(x: np.ndarray) -> float:
    """``std / mean`` (population std, ddof 0) of the values; NaN for fewer than 2 values."""
    v = np.asarray(x, dtype=np.float64).ravel()
    if v.size < 2 or v.mean() == 0:
        return math.nan
    return float(v.std() / v.mean())


def geometric_cv(mean: float) -> float:
    """CV of a geometric dwell time (memoryless switching, probability ``1 / mean`` per step):
    ``sqrt(1 - 1 / mean)``; it approaches 1 (the continuous-time Poisson value) for long dwells."""
    if not mean >= 1:
        raise ValueError(f"a dwell time has mean >= 1, got {mean!r}")
    return math.sqrt(1.0 - 1.0 / mean)


def hazard(dwells: np.ndarray, max_length: int, min_at_risk: int = 20) -> np.ndarray:
    """Discrete hazard of dwell times: ``P(dwell = k | dwell >= k)`` for k = 1..max_length.

    A memoryless (geometric) dwell has a flat hazard ``p``; a hazard that rises with ``k``
    means that the chance of leaving grows with the time spent (something accumulates).

    Returns:
        (max_length,) float64; NaN where fewer than ``min_at_risk`` dwells reach ``k``.
    """
    d = np.asarray(dwells, dtype=np.int64).ravel()
    if int(max_length) != max_length or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    if d.size and d.min() < 1:
        raise ValueError("dwell times must be >= 1")
    counts = np.bincount(d, minlength=max_length + 1)[1 : max_length + 1].astype(np.float64)
    at_risk = d.size - np.concatenate([[0], np.cumsum(np.bincount(d, minlength=max_length + 1)[1:max_length])])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(at_risk >= min_at_risk, counts / np.maximum(at_risk, 1), np.nan)


# =============================================================================== measures: spectra


class Spectrum(NamedTuple):
    """A power spectral density normalised to unit total power.

    Fields:
        freq: (F,) frequencies ``j / T`` in cycles per step, j = 1..T // 2 (0 excluded).
        density: (F,) power per unit frequency, ``sum(density) * (1 / T) = 1``.
    """

    freq: np.ndarray
    density: np.ndarray


def power_spectrum(signal: np.ndarray) -> Spectrum:
    """Mean periodogram of (B, T) or (B, T, C) signals, summed over channels, unit total power.

    Each trajectory and channel has its own mean removed (so frequency 0 carries no power);
    no window (a periodic signal with a whole number of periods in T gives one sharp line).

    Args:
        signal: (B, T) real signal, or (B, T, C) with C channels (e.g. a one-hot output
            sequence: the spectrum of the output sequence, whatever the number of outputs).
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[1] < 4:
        raise ValueError(f"signal must be (B, T) or (B, T, C) with T >= 4, got shape {np.shape(signal)}")
    t = x.shape[1]
    x = x - x.mean(axis=1, keepdims=True)
    power = (np.abs(np.fft.rfft(x, axis=1)) ** 2).sum(axis=2).mean(axis=0)[1 : t // 2 + 1]
    total = power.sum()
    density = power * t / total if total > 0 else np.full(power.shape, np.nan)
    return Spectrum(np.arange(1, t // 2 + 1) / t, density)


def one_hot(seq: np.ndarray, n_outputs: int) -> np.ndarray:
    """(..., T) ints -> (..., T, K) float32 one-hot."""
    s = np.asarray(seq)
    if s.size and (s.min() < 0 or s.max() >= n_outputs):
        raise ValueError(f"values must lie in [0, {n_outputs})")
    return np.eye(n_outputs, dtype=np.float32)[s.astype(np.int64)]


class SpectralPeak(NamedTuple):
    """The largest peak of a (smoothed) normalised spectrum within a frequency band.

    Fields:
        freq: frequency of the peak (cycles per step): the maximum of the smoothed density in
            the band, refined to the largest raw value under the smoothing window there.
        height: smoothed density there.
        low: mean (unsmoothed) density below the band: the low-frequency level.
        prominence: ``height / low``: above 1 for a peak at a non-zero frequency; at most about
            1 for a spectrum that only falls from frequency 0 (e.g. the Lorentzian of a
            memoryless switching process, which is flat below its corner frequency); ``inf``
            when there is no power below the band (a strictly periodic signal).
        width: full width at half height of the smoothed peak (cycles per step); a side that
            never falls to half height is taken to the end of the frequency range.
        q: quality factor ``freq / width`` (coherence: oscillation cycles per correlation time).
    """

    freq: float
    height: float
    low: float
    prominence: float
    width: float
    q: float


def spectral_peak(spectrum: Spectrum, band: tuple[float, float] | None = None, smooth: int = 5) -> SpectralPeak:
    """Find the peak of a spectrum in ``band`` after a centred running mean over ``smooth`` bins.

    Args:
        spectrum: a :class:`Spectrum`.
        band: ``(f_low, f_high)``: the peak is searched at ``f_low <= f <= f_high`` and the
            low-frequency level is the mean density at ``f < f_low``. Default: from the 4th
            frequency bin to the end. For a switching process with rate ``r`` (switches per
            step) a natural band is ``(r / 8, 2 r)``: two outputs alternating regularly peak at
            ``r / 2``, and a memoryless process is still flat at ``r / 8``.
        smooth: odd number of bins of the running mean.

    Returns:
        :class:`SpectralPeak` (all NaN for a spectrum with NaN, or an empty band or
        low-frequency range).
    """
    if int(smooth) != smooth or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be an odd positive integer, got {smooth!r}")
    dens = np.asarray(spectrum.density, dtype=np.float64)
    freq = np.asarray(spectrum.freq, dtype=np.float64)
    nan = float("nan")
    if dens.size < 4 or not np.all(np.isfinite(dens)):
        return SpectralPeak(nan, nan, nan, nan, nan, nan)
    f_low, f_high = (freq[3], freq[-1]) if band is None else (float(band[0]), float(band[1]))
    in_band = (freq >= f_low) & (freq <= f_high)
    below = freq < f_low
    if not in_band.any() or not below.any():
        return SpectralPeak(nan, nan, nan, nan, nan, nan)
    half = smooth // 2
    sm = np.convolve(np.pad(dens, half, mode="edge"), np.ones(smooth) / smooth, mode="valid")
    i = int(np.flatnonzero(in_band)[np.argmax(sm[in_band])])
    window = np.arange(max(i - half, 0), min(i + half + 1, sm.size))
    window = window[in_band[window]]
    i = int(window[np.argmax(dens[window])])  # the raw maximum under the smoothing window
    height = float(sm[i])
    low = float(dens[below].mean())
    left = i
    while left > 0 and sm[left] >= height / 2:
        left -= 1
    right = i
    while right < sm.size - 1 and sm[right] >= height / 2:
        right += 1
    df = freq[1] - freq[0]
    f_left = freq[left] if sm[left] < height / 2 else freq[0] - df
    f_right = freq[right] if sm[right] < height / 2 else freq[-1]
    width = float(max(f_right - f_left, df))
    return SpectralPeak(float(freq[i]), height, low, height / low if low > 0 else math.inf, width, float(freq[i] / width))


def renewal_peak(cv: float, n_freq: int = 20000, max_freq: float = 4.0) -> tuple[float, float]:
    """Spectral peak of a symmetric two-state alternating renewal process with gamma dwells.

    A reference for how regular switching must be before its spectrum has a peak: both
    states have i.i.d. gamma-distributed dwells of mean 1 and coefficient of variation ``cv``
    (continuous time). The spectrum of the state indicator is (Stratonovich)
    ``S(f) ~ Re[(1 - phi) / (1 + phi)] / f^2`` with ``phi(f) = (1 - 2 pi i f cv^2)^(-1 / cv^2)``
    the dwells' characteristic function; ``cv = 1`` gives a Lorentzian (no peak).

    Args:
        cv: coefficient of variation of the dwells (> 0).
        n_freq, max_freq: the frequency grid searched, ``(0, max_freq]`` cycles per mean dwell.

    Returns:
        ``(freq, ratio)``: the frequency of the maximum (cycles per mean dwell; the mean
        switching rate is 1) and ``S(freq) / S(0)`` (1 where the maximum is at 0: no peak).
    """
    if not cv > 0:
        raise ValueError(f"cv must be > 0, got {cv!r}")
    k = 1.0 / cv**2
    f = np.linspace(max_freq / n_freq, max_freq, n_freq)
    w = 2 * np.pi * f
    phi = (1 - 1j * w / k) ** (-k)
    s = np.real((1 - phi) / (1 + phi)) / w**2
    s0 = cv**2 / 4.0  # the limit at f -> 0: Re[(1 - phi) / (1 + phi)] ~ w^2 var / 4, var = cv^2 for mean 1
    i = int(np.argmax(s))
    return (float(f[i]), float(s[i] / s0)) if s[i] > s0 else (0.0, 1.0)


# =============================================================================== measures: emission fit


def _check_lags(lags: Sequence[int]) -> np.ndarray:
    lag = np.asarray(lags, dtype=np.int64)
    if lag.ndim != 1 or lag.size == 0 or np.any(lag < 1):
        raise ValueError(f"lags must be a non-empty sequence of integers >= 1, got {lags!r}")
    return lag


def lagged_joint(outputs: np.ndarray, n_outputs: int, lags: Sequence[int]) -> np.ndarray:
    """Empirical joint distribution of outputs ``k`` steps apart, for each lag.

    Args:
        outputs: (n, L) ints in ``[0, K)``; pairs never straddle two sequences.
        n_outputs: K.
        lags: (G,) lags ``k >= 1`` (each ``< L``).

    Returns:
        (G, K, K) float64, ``P[g, a, b]`` = fraction of pairs ``(o_t, o_{t+k})`` equal to ``(a, b)``.
    """
    o = _as_sequences(outputs).astype(np.int64)
    lag = _check_lags(lags)
    if o.size and (o.min() < 0 or o.max() >= n_outputs):
        raise ValueError(f"outputs must lie in [0, {n_outputs})")
    if lag.max() >= o.shape[1]:
        raise ValueError(f"the largest lag {int(lag.max())} must be < the sequence length {o.shape[1]}")
    out = np.empty((lag.size, n_outputs, n_outputs))
    for g, k in enumerate(lag):
        idx = o[:, :-k] * n_outputs + o[:, k:]
        out[g] = np.bincount(idx.ravel(), minlength=n_outputs**2).reshape(n_outputs, n_outputs) / idx.size
    return out


def hmm_lagged_joint(hmm: HMM, lags: Sequence[int]) -> np.ndarray:
    """Exact ``P(o_t = a, o_{t+k} = b)`` of the stationary HMM, (G, K, K):
    ``sum_{i,j} pi_i E[i, a] (T^k)[i, j] E[j, b]``."""
    lag = _check_lags(lags)
    pi = stationary_distribution(hmm)
    left = (pi[:, None] * hmm.emission).T  # (K, M)
    return np.stack([left @ np.linalg.matrix_power(hmm.transition, int(k)) @ hmm.emission for k in lag])


def fit_error(outputs: np.ndarray, hmm: HMM, lags: Sequence[int]) -> float:
    """Emission-fit error: total-variation distance between the RNN's and the HMM's joint
    distributions of outputs ``k`` steps apart, averaged over ``lags``.

    ``TV_k = 1/2 sum_{a,b} |P_rnn(o_t = a, o_{t+k} = b) - P_hmm(...)|`` in [0, 1]; 0 for a perfect
    fit (up to sampling noise: see :func:`hmm_fit_floor`). Lag 1 covers the marginals and the
    one-step transitions (the paper's metrics), longer lags the slow switching.
    """
    emp = lagged_joint(outputs, hmm.n_outputs, lags)
    exact = hmm_lagged_joint(hmm, lags)
    return float(0.5 * np.abs(emp - exact).sum(axis=(1, 2)).mean())


def hmm_fit_floor(hmm: HMM, n: int, length: int, lags: Sequence[int], rng: np.random.Generator, repeats: int = 5) -> np.ndarray:
    """:func:`fit_error` of ``repeats`` samples of the HMM itself (n sequences of ``length``):
    the sampling-noise floor of the error at that sample size. Returns (repeats,)."""
    return np.array([fit_error(hmm_sample(hmm, n, length, rng)[1], hmm, lags) for _ in range(int(repeats))])


# =============================================================================== all measures of a sweep


class SweepMeasures(NamedTuple):
    """Measures of every variant and replicate; every array is (V, S) float64.

    Fields:
        values: (V,) axis values.
        axis: the axis name.
        rate: switches of the dominant output per step (of the tracked output, where
            :func:`measure` is given ``outputs``).
        dwell_mean: mean dwell time of the dominant output (uncensored runs). A dwell is a
            maximal run of the same (tracked) dominant output, whatever the number of outputs;
            the dwells of all outputs are pooled (with several frequent outputs of different
            mean dwell the pooled CV is a little larger than the per-output CVs).
        dwell_cv: CV of those dwell times (regularity).
        cv_ratio: ``dwell_cv / sqrt(1 - 1 / dwell_mean)``: the CV relative to that of a
            memoryless (geometric) dwell with the same mean; 1 for a memoryless switching
            process, below 1 for a more regular one, above 1 for a bursty one.
        n_dwells: number of uncensored dwells.
        peak_freq, peak_prominence, peak_q: :class:`SpectralPeak` of the one-hot dominant-output
            sequence (coherence), searched in the band ``(rate / 8, 2 rate)``.
        sampled_rate: changes of the sampled output per step (the lability).
        sampled_cv: CV of the dwell times of the sampled output.
        fit: :func:`fit_error` of the sampled outputs against the HMM.
        occupancy: (V, S, K) fraction of steps with each dominant output (raw, before tracking).
        spectra: (V, F) the mean spectrum of the dominant output over the replicates.
        freq: (F,) its frequencies.
        dwells: list of V arrays, all uncensored dominant dwell times of the variant.
        diverged: (V,) variants whose activity exploded (all their measures NaN).
    """

    values: np.ndarray
    axis: str
    rate: np.ndarray
    dwell_mean: np.ndarray
    dwell_cv: np.ndarray
    cv_ratio: np.ndarray
    n_dwells: np.ndarray
    peak_freq: np.ndarray
    peak_prominence: np.ndarray
    peak_q: np.ndarray
    sampled_rate: np.ndarray
    sampled_cv: np.ndarray
    fit: np.ndarray
    occupancy: np.ndarray
    spectra: np.ndarray
    freq: np.ndarray
    dwells: list
    diverged: np.ndarray


def measure(
    run: SweepRun,
    hmm: HMM | None,
    lags: Sequence[int] = (1, 2, 5, 10, 20),
    smooth: int = 5,
    outputs: Sequence[int] | None = None,
) -> SweepMeasures:
    """Every measure of every variant and replicate of a :class:`SweepRun`.

    Args:
        run: the simulated variants.
        hmm: the target (for the fit error; None skips it: NaN).
        lags: lags of :func:`fit_error`.
        smooth: smoothing of :func:`spectral_peak`.
        outputs: the tracked outputs (e.g. :func:`frequent_outputs`): the dominant-output
            measures (rate, dwells, spectrum) are taken on :func:`track_outputs` of the dominant
            sequence, so that a dwell is a run of the same tracked output. None: every output
            counts. ``occupancy`` is always of the raw dominant output (its share of untracked
            outputs is what the tracking relabelled); the sampled-output measures and the fit
            use the raw samples.
    """
    v_count, s_count, _, t_count = run.dominant.shape
    k = run.n_outputs
    if hmm is not None and hmm.n_outputs != k:
        raise ValueError(f"the HMM has {hmm.n_outputs} outputs, the network {k}")
    fields = {name: np.full((v_count, s_count), np.nan) for name in
              ("rate", "dwell_mean", "dwell_cv", "cv_ratio", "n_dwells", "peak_freq", "peak_prominence", "peak_q",
               "sampled_rate", "sampled_cv", "fit")}
    occupancy = np.full((v_count, s_count, k), np.nan)
    spectra = np.full((v_count, t_count // 2), np.nan)
    freq = np.arange(1, t_count // 2 + 1) / t_count
    dwells: list = []
    for v in range(v_count):
        if run.diverged[v]:
            dwells.append(np.zeros(0, dtype=np.int64))
            continue
        all_dwells = []
        dens = []
        for s in range(s_count):
            raw, smp = run.dominant[v, s], run.sampled[v, s]
            dom = raw if outputs is None else track_outputs(raw, outputs)
            d = dwell_times(dom)
            all_dwells.append(d)
            spec = power_spectrum(one_hot(dom, k))
            dens.append(spec.density)
            rate = switching_rate(dom)
            peak = spectral_peak(spec, (rate / 8, min(2 * rate, 0.5)), smooth)
            values = {
                "rate": rate,
                "dwell_mean": float(d.mean()) if d.size else np.nan,
                "dwell_cv": coefficient_of_variation(d),
                "cv_ratio": coefficient_of_variation(d) / geometric_cv(float(d.mean())) if d.size > 1 and d.mean() > 1 else np.nan,
                "n_dwells": float(d.size),
                "peak_freq": peak.freq,
                "peak_prominence": peak.prominence,
                "peak_q": peak.q,
                "sampled_rate": switching_rate(smp),
                "sampled_cv": coefficient_of_variation(dwell_times(smp)),
                "fit": fit_error(smp, hmm, lags) if hmm is not None else np.nan,
            }
            for name, value in values.items():
                fields[name][v, s] = value
            occupancy[v, s] = np.bincount(raw.ravel().astype(np.int64), minlength=k) / raw.size
        stacked = np.stack(dens)
        ok = np.all(np.isfinite(stacked), axis=1)  # a replicate without switching has no spectrum
        if ok.any():
            spectra[v] = stacked[ok].mean(axis=0)
        dwells.append(np.concatenate(all_dwells))
    return SweepMeasures(np.asarray(run.values), run.axis, occupancy=occupancy, spectra=spectra, freq=freq,
                         dwells=dwells, diverged=np.asarray(run.diverged, dtype=bool), **fields)


def band(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t confidence interval over replicates, per variant: (V, S) -> three (V,) arrays.

    Uses :func:`hmmrnn.regions.mean_ci` (NaN replicates are dropped; NaN bounds with < 2 left).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be (V, S), got shape {v.shape}")
    cis = [regions.mean_ci(row, level) for row in v]
    return tuple(np.array([getattr(c, f) for c in cis]) for f in ("mean", "low", "high"))  # type: ignore[return-value]


def largest_change(measures: SweepMeasures, fields: Sequence[str], reference: int) -> float:
    """Largest absolute change of ``fields`` of a :class:`SweepMeasures` from variant ``reference``.

    Compares every variant and replicate with the reference variant's same replicate; two NaN
    count as equal (e.g. no dwell in either), a NaN against a number as an infinite change.
    """
    out = 0.0
    for name in fields:
        values = np.asarray(getattr(measures, name), dtype=np.float64)
        ref = values[reference][None]
        both_nan = np.isnan(values) & np.isnan(ref)
        diff = np.where(both_nan, 0.0, np.abs(values - ref))
        out = max(out, float(np.where(np.isnan(diff), np.inf, diff).max()))
    return out


class Optimum(NamedTuple):
    """Where a measure is smallest along an axis, and whether that is a genuine interior optimum.

    Fields:
        index: index of the axis value with the smallest mean.
        value: that axis value.
        mean, low, high: the measure's mean and confidence interval there.
        interior: the minimum is neither the first nor the last axis value.
        significant: ``interior`` and the interval at the minimum lies entirely below the
            intervals at both ends of the axis (a dip that replicate noise does not explain).
    """

    index: int
    value: float
    mean: float
    low: float
    high: float
    interior: bool
    significant: bool


def optimum(values: Sequence[float], samples: np.ndarray, level: float = 0.95) -> Optimum:
    """Locate the minimum over the axis of a measure sampled per replicate.

    Args:
        values: (V,) axis values, in increasing order.
        samples: (V, S) the measure per variant and replicate (NaN ignored; e.g. the CV ratio,
            smaller = more regular).
        level: confidence level of the t intervals (:func:`band`).
    """
    vals = np.asarray(values, dtype=np.float64)
    mean, low, high = band(samples, level)
    if vals.shape != mean.shape or vals.size < 3:
        raise ValueError(f"need V >= 3 axis values matching samples (V, S); got {vals.shape} and {np.shape(samples)}")
    if not np.all(np.diff(vals) > 0):
        raise ValueError("axis values must increase")
    if not np.any(np.isfinite(mean)):
        nan = float("nan")
        return Optimum(-1, nan, nan, nan, nan, False, False)
    i = int(np.nanargmin(mean))
    interior = 0 < i < vals.size - 1
    significant = bool(interior and high[i] < low[0] and high[i] < low[-1])
    return Optimum(i, float(vals[i]), float(mean[i]), float(low[i]), float(high[i]), bool(interior), significant)


class PlaneSweep(NamedTuple):
    """The in-plane noise-gain sweep of one network: the chapter's central measurement.

    Fields:
        status: ``"ok"``, or ``"diverged"`` when the network's activity explodes under its own
            trained noise (no orbit plane, or the run at gain 1 or at every gain exploded: no
            switching to measure; ``best`` is None and the measures, if any, NaN).
        plane: (dims, H) the orbit plane (None if the driven run diverged before it was found).
        plane_variance: fraction of the driven states' variance in the plane (NaN if unknown).
        input_share: fraction of the input-noise variance ``|W_in|^2`` falling in the plane.
        measures: :class:`SweepMeasures` along the gains (None if diverged).
        best: :func:`optimum` of the CV ratio along the gains (None if diverged).
        tracked: the tracked outputs of the dwell measures.
        relabelled: fraction of the steps, over the gains that did not diverge, whose dominant
            output was not a tracked one (relabelled by :func:`track_outputs`).
        diverged_gains: the gains whose runs exploded (their measures are NaN).
    """

    status: str
    plane: np.ndarray | None
    plane_variance: float
    input_share: float
    measures: SweepMeasures | None
    best: Optimum | None
    tracked: np.ndarray
    relabelled: float
    diverged_gains: np.ndarray


def plane_sweep(
    weights: RNNWeights,
    plane: np.ndarray,
    measures: SweepMeasures,
    tracked: Sequence[int],
    plane_variance: float = math.nan,
) -> PlaneSweep:
    """Wrap an in-plane gain sweep already measured (``measures`` along ``"subspace_gain"``
    in ``plane``, dwell measures tracked on ``tracked``) as a :class:`PlaneSweep`."""
    if measures.axis != "subspace_gain":
        raise ValueError(f"expected measures along 'subspace_gain', got {measures.axis!r}")
    w_in = _check_weights(weights).W_in.astype(np.float64)
    q = np.asarray(plane, dtype=np.float64)
    share = float(np.sum((q @ w_in) ** 2) / np.sum(w_in**2))
    trk = np.asarray(tracked, dtype=np.int64)
    untracked = np.delete(measures.occupancy, trk, axis=2).sum(axis=2)  # (V, S), NaN where diverged
    relabelled = float(np.nanmean(untracked)) if np.isfinite(untracked).any() else math.nan
    at_one = np.isclose(measures.values, 1.0)
    diverged = bool(measures.diverged.all() or measures.diverged[at_one].any())
    best = None if diverged else optimum(measures.values, measures.cv_ratio)
    return PlaneSweep("diverged" if diverged else "ok", q, float(plane_variance), share, measures, best, trk, relabelled,
                      np.asarray(measures.values)[measures.diverged])


def named_generator(seed: int, name: str) -> torch.Generator:
    """A torch generator for the network ``name``, from the chapter's ``seed``: the same for
    the same pair, whatever other networks are swept and in whatever order (the seed
    sequence of ``[seed, crc32(name)]``)."""
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    state = np.random.SeedSequence([int(seed), zlib.crc32(str(name).encode())]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def plane_gain_sweep(
    weights: RNNWeights,
    hmm: HMM,
    gains: Sequence[float],
    generator: torch.Generator,
    *,
    n_seeds: int,
    n_traj: int,
    n_steps: int,
    burn_in: int = 200,
    plane_dims: int = 2,
    plane_steps: int = 1000,
    lags: Sequence[int] = (1, 2, 5, 10, 20),
    smooth: int = 5,
    min_frequency: float = 0.1,
) -> PlaneSweep:
    """Orbit plane, in-plane noise-gain sweep and its measures for one network, any number of outputs.

    :func:`orbit_pca` (``plane_dims`` components of a run of 4 x ``plane_steps`` steps), the
    ``"subspace_gain"`` variants at ``gains`` in that plane (:func:`variants`), one batched
    :func:`simulate`, and :func:`measure` with the dwells tracked on the HMM's
    :func:`frequent_outputs`. A network whose driven run explodes (:class:`DivergedError`, or
    the run at every gain flagged by :func:`simulate`) is returned with status ``"diverged"``
    instead of raising.
    """
    tracked = frequent_outputs(hmm, min_frequency)
    w = _check_weights(weights)
    try:
        p = orbit_pca(w, generator, dims=plane_dims, n_steps=plane_steps, burn_in=burn_in)
    except DivergedError:
        return PlaneSweep("diverged", None, math.nan, math.nan, None, None, tracked, math.nan,
                          np.asarray(gains, dtype=np.float64))
    run = simulate(variants(w, "subspace_gain", gains, basis=p.components), generator, n_seeds=n_seeds,
                   n_traj=n_traj, n_steps=n_steps, burn_in=burn_in)
    m = measure(run, hmm, lags, smooth, outputs=tracked)
    return plane_sweep(w, p.components, m, tracked, float(p.explained.sum()))


class SnapshotChoice(NamedTuple):
    """Training snapshots on either side of the bifurcation (see :func:`bifurcation_snapshots`).

    Fields:
        bifurcation_epoch: epoch of the bifurcation by the midpoint rule on the transition rate.
        before: index of the snapshot ``offset`` epochs before it; after: ``offset`` epochs after.
        epochs: (N,) all snapshot epochs; rate: (N,) their transition rates.
    """

    bifurcation_epoch: float
    before: int
    after: int
    epochs: np.ndarray
    rate: np.ndarray


def bifurcation_snapshots(
    snapshots,
    generator: torch.Generator,
    *,
    offset: float = 30,
    n_traj: int = 4,
    n_steps: int = 500,
    burn_in: int = 100,
    early: tuple[float, float] = (10, 30),
    final_count: int = 5,
) -> SnapshotChoice | None:
    """Date the training bifurcation from the snapshots and pick one snapshot on each side.

    The transition rate of every snapshot (:func:`hmmrnn.dynamics.snapshot_dynamics`), the
    midpoint rule (:func:`hmmrnn.dynamics.detect_transition`, early window ``early``, final level
    the last ``final_count`` snapshots), then :func:`pick_snapshots`. Returns None where no
    bifurcation is found or there is no snapshot ``offset`` epochs on either side of it (e.g. a
    network whose transition comes after the last snapshot).
    """
    run = snapshot_dynamics(snapshots, generator, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, n_eig=1)
    try:
        found = detect_transition(run.epochs, run.transition_rate, early=early, final_count=final_count)
        before, after = pick_snapshots(run.epochs, found.epoch, offset)
    except ValueError:
        return None
    return SnapshotChoice(found.epoch, before, after, np.asarray(run.epochs), np.asarray(run.transition_rate))


# =============================================================================== time-scale separation


class _VariantModel:
    """One variant as a :class:`hmmrnn.regions.StepModel` (generic path: bias, linear activation).

    The private noise is folded into the input: the input is (D + H)-dimensional standard
    normal, the first D entries drive ``input_scale W_in``, the last H ``hidden_std I``.
    """

    def __init__(self, w_in: np.ndarray, w_rec: np.ndarray, w_out: np.ndarray, bias: np.ndarray, relu: bool) -> None:
        self.W_in = torch.from_numpy(np.asarray(w_in, dtype=np.float32))
        self.W_rec = torch.from_numpy(np.asarray(w_rec, dtype=np.float32))
        self.W_out = torch.from_numpy(np.asarray(w_out, dtype=np.float32))
        self.bias = torch.from_numpy(np.asarray(bias, dtype=np.float32))
        self.relu = relu
        self.input_size = int(self.W_in.shape[1])
        self.hidden_size = int(self.W_rec.shape[0])

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pre = h @ self.W_rec.T + x @ self.W_in.T + self.bias
        return torch.relu(pre) if self.relu else pre

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.W_out.T


def variant_model(net: NetworkVariants, index: int):
    """Variant ``index`` as a model with ``step(h, x)`` and unit-variance input (for :mod:`regions`).

    The input scale and the private noise are folded into the input weights
    ``[input_scale W_in, hidden_std I]`` (the private noise becomes H extra input dimensions);
    a bias-free ReLU variant is returned as a :class:`hmmrnn.model.NoiseRNN` (the fast path of
    :func:`hmmrnn.regions.residency_times`), anything else as a generic step model.
    """
    if not 0 <= index < len(net):
        raise IndexError(f"variant {index} of {len(net)}")
    w_in = net.W_in[index].astype(np.float64) * net.input_scale[index]
    if net.hidden_std[index] > 0:
        w_in = np.concatenate([w_in, net.hidden_std[index] * np.eye(net.W_rec.shape[1])], axis=1)
    if net.activation == "relu" and not np.any(net.bias[index] != 0):
        return NoiseRNN.from_weights(RNNWeights(w_in.astype(np.float32), net.W_rec[index], net.W_out[index]))
    return _VariantModel(w_in, net.W_rec[index], net.W_out[index], net.bias[index], net.activation == "relu")


class TimeScales(NamedTuple):
    """Time in clusters vs time through transitions along one driven run (see :func:`time_scales`).

    Fields:
        fractions: (4,) fraction of the run's states in each region of
            :data:`hmmrnn.regions.REGION_NAMES` (transition, kick_zone, cluster, uncertain).
        cluster_dwell: mean duration of a cluster dwell (steps).
        passage: mean duration of a passage between clusters of different outputs (steps).
        ratio: ``cluster_dwell / passage`` (the time-scale separation).
        n_passages: passages seen.
        passages: (n_passages,) their durations.
        dwells: their cluster dwells (uncensored), in steps.
    """

    fractions: np.ndarray
    cluster_dwell: float
    passage: float
    ratio: float
    n_passages: int
    passages: np.ndarray
    dwells: np.ndarray


def cluster_passages(is_cluster: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster dwells and passages from per-step cluster labels along one run.

    A *cluster dwell* runs from the first to the last cluster state of one output, across
    excursions out of the cluster that return to a cluster of the same output; a *passage*
    is the stretch of non-cluster states between a cluster state of output ``a`` and the next
    cluster state of an output ``b != a``. Dwells touching either end of the run are censored
    and dropped.

    Args:
        is_cluster: (N,) bool.
        output: (N,) int, the dominant output of each state.

    Returns:
        ``(dwells, passages)``: int arrays of durations in steps (a passage may last 0 steps).
    """
    c = np.asarray(is_cluster, dtype=bool)
    o = np.asarray(output)
    if c.ndim != 1 or o.shape != c.shape:
        raise ValueError(f"is_cluster and output must be 1-D of equal length, got {c.shape}, {o.shape}")
    idx = np.flatnonzero(c)
    if idx.size < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lab = o[idx]
    switch = np.flatnonzero(lab[1:] != lab[:-1])  # between cluster states idx[i] and idx[i + 1]
    passages = idx[switch + 1] - idx[switch] - 1
    # a dwell: from the first cluster state after a switch to the last one before the next switch
    firsts = idx[switch + 1][:-1]
    lasts = idx[switch[1:]]
    return (lasts - firsts + 1).astype(np.int64), passages.astype(np.int64)


def time_scales(
    model,
    n_states: int,
    generator: torch.Generator,
    *,
    n_continuations: int = 10,
    max_steps: int = 40,
    burn_in: int = 200,
) -> TimeScales:
    """Label the states of one driven run by residency time and measure dwells and passages.

    One run of ``n_states`` states (:func:`hmmrnn.regions.recorded_run`), residency times
    from ``n_continuations`` continuations of at most ``max_steps`` steps
    (:func:`hmmrnn.regions.residency_times`), the paper's classes
    (:func:`hmmrnn.regions.classify_regions`), then :func:`cluster_passages`.

    Args:
        model: a model with ``step``/``logits``/``input_size``/``hidden_size`` and unit input
            noise (e.g. :func:`variant_model`).
        n_states: length of the run.
        generator: torch generator for the run and the continuations.
    """
    run = regions.recorded_run(model, n_states, generator, noise_scale=1.0, burn_in=burn_in)
    res = regions.residency_times(model, run.hidden, generator, n_continuations=n_continuations,
                                  max_steps=max_steps, noise_scale=1.0)
    labels = regions.classify_regions(res.rt, res.confidence)
    is_cluster = labels.labels == regions.CLUSTER
    dwells, passages = cluster_passages(is_cluster, res.start_output)
    fractions = np.bincount(labels.labels, minlength=len(regions.REGION_NAMES)) / labels.labels.size
    dwell = float(dwells.mean()) if dwells.size else float("nan")
    passage = float(passages.mean()) if passages.size else float("nan")
    ratio = dwell / passage if passages.size and passage > 0 else float("nan")
    return TimeScales(fractions, dwell, passage, ratio, int(passages.size), passages, dwells)
