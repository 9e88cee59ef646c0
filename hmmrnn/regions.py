"""Local regions of the noise-driven orbit: clusters, kick-zones and transitions (PAPER.md §7).

A trained network circulates along a closed orbit; the paper splits the states it visits by
their *residency time* RT(h), the mean number of steps a noisy continuation started at ``h``
keeps the same argmax output:

* transition:  RT < 2                                         (fast, nearly deterministic)
* kick-zone:   2 <= RT <= 8                                   (entrance of a transition)
* cluster:     RT > 8 and a confident output, max softmax > 0.8 (slow, noise-driven)
* uncertain:   RT > 8 but max softmax <= 0.8 (the paper's code drops these; we keep a label)

Thresholds default to :data:`hmmrnn.paper.RT_THRESHOLDS`. This module measures RT for every
state of a long driven run in one batched computation, labels the states, counts sign changes
of the dominant logit, computes the local Jacobians and their unstable directions, and
measures how sensitive a region is to the input noise. Everything takes a network (a
:class:`~hmmrnn.model.NoiseRNN`, its :class:`~hmmrnn.model.RNNWeights`, or any object with
``step(h, x)``, ``logits(h)`` and ``input_size``) and arrays, and returns small named results,
so later chapters can apply it to ablated or hand-built networks.

Conventions (shapes): ``N`` states, ``H`` hidden units, ``D`` input dimensions, ``K`` outputs,
``n`` continuations per state. A driven run is :class:`DrivenRun`: ``hidden[t]`` = h_t was
produced from ``prev_hidden[t]`` = h_{t-1} by the input ``inputs[t]`` = x_t,
``h_t = relu(W_rec h_{t-1} + W_in x_t)``. Randomness always comes from an explicit
``torch.Generator``; the same seed gives the same numbers.

Definitions used throughout (stated once here, in the docstrings and in the book):

Residency time
    From state h_0 with argmax output a_0 = argmax W_out h_0, a continuation draws fresh noise
    x_1, x_2, ... and runs h_k = step(h_{k-1}, x_k). Its switch time is the first k >= 1 with
    argmax W_out h_k != a_0 (so RT >= 1; a network whose output flips every step has RT = 1).
    A continuation that has not switched after ``max_steps`` steps is *censored*.
    ``rt`` (the paper's RT) is the mean of min(T, max_steps): censored continuations count as
    ``max_steps``. Because every continuation is censored at the same time, this is exactly the
    Kaplan-Meier restricted mean survival time up to ``max_steps`` (the KM curve is then the
    empirical survival curve), so it is censoring-aware *for the restricted mean* but biased low
    as an estimate of the unrestricted mean. ``rt_mle`` is the maximum-likelihood mean of a
    geometric switch time under right censoring: (total steps observed) / (number of switches),
    ``inf`` where no continuation switched. ``censored_fraction`` says how much each estimate
    leans on the censored ones. Regions are classified by ``rt`` (the paper's definition; the
    thresholds 2 and 8 are far below ``max_steps`` = 60, where the two estimates agree).

Sign changes of the dominant logit
    y_k = logit of output a_0 at h_k along a continuation; increments d_k = y_k - y_{k-1},
    k = 1..T (T the switch step, or ``max_steps`` if censored); a sign change is a pair of
    consecutive increments with d_k d_{k+1} < 0. Counted per continuation *within its residency
    window* (up to and including the switching step) and averaged over continuations, so a state
    whose continuations switch after one step has 0. :func:`sign_changes_along_run` gives the
    same count over a fixed window of W steps of the driven run instead, which does not tie the
    window length to RT.

Local Jacobian
    J_t = d h_t / d h_{t-1} = diag(m_t) W_rec with m_t = 1[W_rec h_{t-1} + W_in x_t > 0], the mask
    of the pre-activation that produced h_t with the actual noise input x_t of the run; since
    h_t = relu(pre-activation), m_t = 1[h_t > 0] exactly.

Noise mixing
    Perturbed runs replay the run's own noise x with a fraction gamma redrawn:
    x' = sqrt(1 - gamma) x + sqrt(gamma) x_new, x_new an independent draw of the same scale; for
    unit-variance x this keeps unit variance and has correlation sqrt(1 - gamma) with x
    (gamma = 0: the same run, gamma = 1: fresh noise).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from scipy import special, stats

from . import paper
from .model import NoiseRNN, RNNWeights

__all__ = [
    "REGION_NAMES",
    "TRANSITION",
    "KICK_ZONE",
    "CLUSTER",
    "UNCERTAIN",
    "StepModel",
    "DrivenRun",
    "driven_run",
    "ResidencyResult",
    "residency_times",
    "residency_reference",
    "RegionLabels",
    "classify_regions",
    "sign_changes_along_run",
    "OrbitPlane",
    "orbit_plane",
    "active_masks",
    "local_jacobians",
    "JacobianSpectra",
    "jacobian_spectra",
    "mean_drift",
    "alignment",
    "random_alignment_baseline",
    "select_points",
    "mix_noise",
    "NoiseSensitivity",
    "noise_sensitivity",
    "MeanCI",
    "mean_ci",
    "region_means",
]

REGION_NAMES: tuple[str, ...] = ("transition", "kick_zone", "cluster", "uncertain")
"""Region labels; the integer code of a region is its index here."""
TRANSITION, KICK_ZONE, CLUSTER, UNCERTAIN = range(4)


@runtime_checkable
class StepModel(Protocol):
    """What the analyses need from a network: a one-step map and a readout."""

    input_size: int

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # (B, H), (B, D) -> (B, H)
        ...

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., K)
        ...


def _as_model(model: StepModel | RNNWeights) -> StepModel:
    if isinstance(model, RNNWeights):
        return NoiseRNN.from_weights(model)
    if not isinstance(model, StepModel):
        raise TypeError(f"expected a NoiseRNN, RNNWeights or an object with step/logits/input_size, got {type(model).__name__}")
    return model


def _as_weights(model: NoiseRNN | RNNWeights) -> RNNWeights:
    if isinstance(model, RNNWeights):
        return model.validate()
    if isinstance(model, NoiseRNN):
        return model.weights()
    raise TypeError(f"the Jacobian analysis needs a ReLU RNN (NoiseRNN or RNNWeights), got {type(model).__name__}")


def _param_device(model: StepModel) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _as_tensor(value: np.ndarray | torch.Tensor, name: str, ndim: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries")
    return t


def _check_positive_int(value: int, name: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- driven run


class DrivenRun(NamedTuple):
    """One long noise-driven trajectory (after a burn-in), as NumPy float32 arrays.

    Fields:
        hidden: (N, H) states h_t.
        prev_hidden: (N, H) the states h_{t-1} they came from.
        inputs: (N, D) the noise x_t that produced h_t (already scaled by the noise scale).
        logits: (N, K) readout W_out h_t.
        noise_scale: standard deviation of the input noise.
    """

    hidden: np.ndarray
    prev_hidden: np.ndarray
    inputs: np.ndarray
    logits: np.ndarray
    noise_scale: float

    @property
    def outputs(self) -> np.ndarray:
        """(N,) argmax output of each state."""
        return self.logits.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """(N,) max softmax probability of each state."""
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        return (p.max(axis=1) / p.sum(axis=1)).astype(np.float64)


@torch.no_grad()
def driven_run(
    model: StepModel | RNNWeights,
    length: int,
    generator: torch.Generator,
    noise_scale: float = 1.0,
    burn_in: int = 200,
    h0: np.ndarray | torch.Tensor | None = None,
) -> DrivenRun:
    """Simulate one trajectory of ``burn_in + length`` steps and keep the last ``length``.

    Args:
        model: the network (see module docstring).
        length: N, number of states kept.
        generator: torch generator for the noise.
        noise_scale: standard deviation of x_t ~ N(0, noise_scale^2 I_D).
        burn_in: steps discarded first (the run starts at ``h0``, default zeros).
        h0: (H,) initial state.
    """
    model = _as_model(model)
    length = _check_positive_int(length, "length")
    if burn_in < 0 or int(burn_in) != burn_in:
        raise ValueError(f"burn_in must be a non-negative integer, got {burn_in!r}")
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale!r}")
    device = _param_device(model)
    total = int(burn_in) + length
    x = torch.randn(total, model.input_size, generator=generator, device=device) * noise_scale
    if h0 is None:
        if not hasattr(model, "hidden_size"):
            raise ValueError("give h0 for a model without a hidden_size attribute")
        h = torch.zeros(1, int(model.hidden_size), device=device)
    else:
        h = _as_tensor(h0, "h0", 1, device)[None]
    states = torch.empty(total + 1, h.shape[1], device=device)
    states[0] = h[0]
    for t in range(total):
        h = model.step(h, x[t : t + 1])
        states[t + 1] = h[0]
    hidden = states[burn_in + 1 :]
    return DrivenRun(
        hidden=hidden.cpu().numpy(),
        prev_hidden=states[burn_in:-1].cpu().numpy(),
        inputs=x[burn_in:].cpu().numpy(),
        logits=model.logits(hidden).cpu().numpy(),
        noise_scale=float(noise_scale),
    )


# --------------------------------------------------------------------------- residency times


class ResidencyResult(NamedTuple):
    """Residency times of N states from n noisy continuations each (definitions: module docstring).

    Fields:
        rt: (N,) float64, the paper's RT: mean of min(switch step, max_steps); censored
            continuations count as ``max_steps`` (= Kaplan-Meier restricted mean up to max_steps).
        rt_mle: (N,) float64, censoring-aware geometric MLE of the mean switch time:
            sum of min(T, max_steps) / number of switches; ``inf`` if none switched.
        censored_fraction: (N,) float64, fraction of continuations that never switched.
        switch_step: (N, n) int64, step of the first output change, 0 where censored.
        sign_changes: (N,) float64, mean number of sign changes of the dominant logit's
            increments within each continuation's residency window.
        start_output: (N,) int64, argmax output at each state.
        confidence: (N,) float64, max softmax probability at each state.
        max_steps: the censoring time.
    """

    rt: np.ndarray
    rt_mle: np.ndarray
    censored_fraction: np.ndarray
    switch_step: np.ndarray
    sign_changes: np.ndarray
    start_output: np.ndarray
    confidence: np.ndarray
    max_steps: int

    @property
    def censored(self) -> np.ndarray:
        """(N, n) bool: continuations that did not switch within max_steps."""
        return self.switch_step == 0


def _summarise_switches(switch_step: np.ndarray, sign_changes: np.ndarray, max_steps: int):
    censored = switch_step == 0
    observed = np.where(censored, max_steps, switch_step).astype(np.float64)
    n_switch = (~censored).sum(axis=1)
    exposure = observed.sum(axis=1)
    with np.errstate(divide="ignore"):
        rt_mle = np.where(n_switch > 0, exposure / np.maximum(n_switch, 1), np.inf)
    return observed.mean(axis=1), rt_mle, censored.mean(axis=1), sign_changes.mean(axis=1)


_COMPACT_BELOW = 0.8
"""Compact the batch of continuations once at most this fraction of its rows is still running."""


class _Stepper:
    """Batched steps for :func:`residency_times`.

    For a :class:`NoiseRNN` (or anything exposing ``W_rec``/``W_in`` tensors) the step is fused
    into one matmul, an in-place ``addmm_`` and an in-place ReLU on preallocated ping-pong buffers,
    and the noise is drawn into a preallocated buffer: large temporaries are what a CPU spends
    its time mapping. Any other model goes through its own ``step``. Both compute
    relu(W_rec h + W_in x).
    """

    def __init__(self, model: StepModel) -> None:
        self.model = model
        w_rec, w_in = getattr(model, "W_rec", None), getattr(model, "W_in", None)
        self.fast = isinstance(w_rec, torch.Tensor) and isinstance(w_in, torch.Tensor)
        if self.fast:
            self.w_rec_t = w_rec.detach().T
            self.w_in_t = w_in.detach().T
        self.buffers: list[torch.Tensor] = []
        self.x_buffer: torch.Tensor | None = None

    def start(self, h: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return h
        self.buffers = [h.contiguous(), torch.empty_like(h)]
        self.x_buffer = torch.empty(h.shape[0], self.w_in_t.shape[0], dtype=h.dtype, device=h.device)
        return self.buffers[0]

    def _other(self, h: torch.Tensor) -> torch.Tensor:
        return self.buffers[1] if h.data_ptr() == self.buffers[0].data_ptr() else self.buffers[0]

    def noise(self, rows: int, generator: torch.Generator, noise_scale: float) -> torch.Tensor:
        if self.fast:
            x = self.x_buffer[:rows].normal_(generator=generator)
        else:
            x = torch.randn(rows, self.model.input_size, generator=generator, device=_param_device(self.model))
        return x.mul_(noise_scale) if noise_scale != 1.0 else x

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return self.model.step(h, x)
        out = self._other(h)[: h.shape[0]]
        torch.mm(x, self.w_in_t, out=out)
        out.addmm_(h, self.w_rec_t)
        return out.relu_()

    def select(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return h[keep]
        out = self._other(h)[: keep.shape[0]]
        torch.index_select(h, 0, keep, out=out)
        return out


@torch.no_grad()
def residency_times(
    model: StepModel | RNNWeights,
    states: np.ndarray | torch.Tensor,
    generator: torch.Generator | None = None,
    n_continuations: int = 20,
    max_steps: int = 60,
    noise_scale: float = 1.0,
    inputs: np.ndarray | torch.Tensor | None = None,
    max_batch: int = 262_144,
) -> ResidencyResult:
    """Residency time of every state, all continuations as one batched simulation.

    The N x n continuations are the rows of one (N*n, H) tensor; the only Python loop runs over
    the <= ``max_steps`` time steps. Continuations that have switched are dropped from the batch
    (their noise is not drawn), and the loop stops early once every continuation has switched.
    Rows are processed in chunks of at most ``max_batch`` continuations to bound memory.

    Args:
        model: the network.
        states: (N, H) starting states (e.g. ``DrivenRun.hidden``).
        generator: torch generator for the continuation noise (required unless ``inputs`` given).
        n_continuations: n, continuations per state (paper: 20).
        max_steps: censoring time (paper: 60).
        noise_scale: standard deviation of the continuation noise.
        inputs: optional (N, n, max_steps, D) noise to use instead of drawing it (already
            scaled; ``noise_scale`` is then ignored) — for tests and exact replays.
        max_batch: the largest number of continuations simulated at once.

    Returns:
        :class:`ResidencyResult`.
    """
    model = _as_model(model)
    n = _check_positive_int(n_continuations, "n_continuations")
    max_steps = _check_positive_int(max_steps, "max_steps")
    device = _param_device(model)
    states = _as_tensor(states, "states", 2, device)
    n_states = states.shape[0]
    if inputs is not None:
        inputs = _as_tensor(inputs, "inputs", 4, device)
        expected = (n_states, n, max_steps, model.input_size)
        if tuple(inputs.shape) != expected:
            raise ValueError(f"inputs must have shape (N, n, max_steps, D) = {expected}, got {tuple(inputs.shape)}")
        inputs = inputs.reshape(n_states * n, max_steps, model.input_size)
    elif generator is None:
        raise ValueError("residency_times needs a torch.Generator (or explicit inputs)")
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale!r}")

    start_logits = model.logits(states)
    start_output = start_logits.argmax(dim=-1)
    confidence = torch.softmax(start_logits.double(), dim=-1).max(dim=-1).values

    switch = torch.zeros(n_states * n, dtype=torch.int64, device=device)
    changes = torch.zeros(n_states * n, dtype=torch.int64, device=device)
    stepper = _Stepper(model)
    states_per_chunk = max(1, int(max_batch) // n)
    for first in range(0, n_states, states_per_chunk):
        last = min(n_states, first + states_per_chunk)
        rows = torch.arange(first * n, last * n, device=device)  # global continuation indices
        h = stepper.start(states[first:last].repeat_interleave(n, dim=0))
        target = start_output[first:last].repeat_interleave(n)[:, None]
        y_prev = start_logits[first:last].gather(1, start_output[first:last, None])[:, 0].repeat_interleave(n)
        d_prev = torch.zeros_like(y_prev)
        alive = torch.ones_like(rows, dtype=torch.bool)
        sw = torch.zeros_like(rows)  # switch step of the rows in the batch (0 = not yet)
        chg = torch.zeros_like(rows)  # sign changes counted so far
        for k in range(1, max_steps + 1):
            if inputs is not None:
                x = inputs[rows, k - 1]
            else:
                x = stepper.noise(rows.shape[0], generator, noise_scale)
            h = stepper.step(h, x)
            logit = model.logits(h)
            y = logit.gather(1, target)[:, 0]
            d = y - y_prev
            if k > 1:
                chg += (d * d_prev < 0) & alive
            now = alive & (logit.argmax(dim=-1) != target[:, 0])
            sw.masked_fill_(now, k)
            alive &= ~now
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if n_alive <= _COMPACT_BELOW * rows.shape[0]:
                # lazy compaction: drop switched rows once they are a sizeable part of the batch
                switch[rows], changes[rows] = sw, chg
                keep = alive.nonzero()[:, 0]
                rows, target, y, d, sw, chg = rows[keep], target[keep], y[keep], d[keep], sw[keep], chg[keep]
                h = stepper.select(h, keep)
                alive = torch.ones_like(rows, dtype=torch.bool)
            y_prev, d_prev = y, d
        switch[rows], changes[rows] = sw, chg

    switch_np = switch.reshape(n_states, n).cpu().numpy()
    rt, rt_mle, censored_fraction, sign_changes = _summarise_switches(
        switch_np, changes.reshape(n_states, n).cpu().numpy(), max_steps
    )
    return ResidencyResult(
        rt=rt,
        rt_mle=rt_mle,
        censored_fraction=censored_fraction,
        switch_step=switch_np,
        sign_changes=sign_changes,
        start_output=start_output.cpu().numpy().astype(np.int64),
        confidence=confidence.cpu().numpy(),
        max_steps=max_steps,
    )


def residency_reference(weights: RNNWeights, states: np.ndarray, inputs: np.ndarray) -> ResidencyResult:
    """Slow reference of :func:`residency_times`: NumPy, one state and one continuation at a time.

    Args:
        weights: the network's weights.
        states: (N, H) starting states.
        inputs: (N, n, max_steps, D) the continuation noise.

    For tests: an independent implementation of the same definitions (float64).
    """
    W_in, W_rec, W_out = (np.asarray(w, dtype=np.float64) for w in weights)
    states = np.asarray(states, dtype=np.float64)
    inputs = np.asarray(inputs, dtype=np.float64)
    n_states, n, max_steps, _ = inputs.shape
    switch = np.zeros((n_states, n), dtype=np.int64)
    changes = np.zeros((n_states, n), dtype=np.int64)
    for i in range(n_states):
        a0 = int(np.argmax(W_out @ states[i]))
        for j in range(n):
            h = states[i]
            y_prev = (W_out @ h)[a0]
            increments = []
            for k in range(1, max_steps + 1):
                h = np.maximum(W_rec @ h + W_in @ inputs[i, j, k - 1], 0.0)
                y = W_out @ h
                increments.append(y[a0] - y_prev)
                y_prev = y[a0]
                if int(np.argmax(y)) != a0:
                    switch[i, j] = k
                    break
            changes[i, j] = sum(1 for d0, d1 in zip(increments[:-1], increments[1:]) if d0 * d1 < 0)
    logits = states @ W_out.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    rt, rt_mle, censored_fraction, sign_changes = _summarise_switches(switch, changes, max_steps)
    return ResidencyResult(rt, rt_mle, censored_fraction, switch, sign_changes, logits.argmax(axis=1),
                           p.max(axis=1) / p.sum(axis=1), max_steps)


# --------------------------------------------------------------------------- classification


class RegionLabels(NamedTuple):
    """Region of each state (codes index :data:`REGION_NAMES`).

    Fields:
        labels: (N,) int64 codes: 0 transition, 1 kick_zone, 2 cluster, 3 uncertain.
        thresholds: the thresholds used (keys of :data:`hmmrnn.paper.RT_THRESHOLDS`).
    """

    labels: np.ndarray
    thresholds: dict

    def mask(self, region: str) -> np.ndarray:
        """(N,) bool mask of one region by name."""
        if region not in REGION_NAMES:
            raise ValueError(f"unknown region {region!r}; choose from {REGION_NAMES}")
        return self.labels == REGION_NAMES.index(region)

    def counts(self) -> dict[str, int]:
        """Number of states in each region."""
        return {name: int((self.labels == code).sum()) for code, name in enumerate(REGION_NAMES)}

    def fractions(self) -> dict[str, float]:
        """Fraction of states (of time along the run) in each region."""
        total = max(1, self.labels.shape[0])
        return {name: count / total for name, count in self.counts().items()}


def classify_regions(
    rt: np.ndarray,
    confidence: np.ndarray,
    transition_below: float = paper.RT_THRESHOLDS["transition_below"],
    kick_zone_max: float = paper.RT_THRESHOLDS["kick_zone_max"],
    cluster_confidence: float = paper.RT_THRESHOLDS["cluster_confidence"],
) -> RegionLabels:
    """Label states: transition (RT < 2), kick-zone (2 <= RT <= 8), cluster (RT > 8 and
    max softmax > 0.8), uncertain (RT > 8, max softmax <= 0.8).

    Args:
        rt: (N,) residency times (``ResidencyResult.rt``).
        confidence: (N,) max softmax probability at each state.
        transition_below, kick_zone_max, cluster_confidence: thresholds (paper's defaults).
    """
    rt = np.asarray(rt, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    if rt.ndim != 1 or confidence.shape != rt.shape:
        raise ValueError(f"rt and confidence must be 1-D of equal length, got {rt.shape} and {confidence.shape}")
    if np.isnan(rt).any() or np.isnan(confidence).any():
        raise ValueError("rt and confidence must not contain NaN")
    if not transition_below <= kick_zone_max:
        raise ValueError(f"need transition_below <= kick_zone_max, got {transition_below} > {kick_zone_max}")
    labels = np.full(rt.shape, UNCERTAIN, dtype=np.int64)
    labels[rt < transition_below] = TRANSITION
    labels[(rt >= transition_below) & (rt <= kick_zone_max)] = KICK_ZONE
    labels[(rt > kick_zone_max) & (confidence > cluster_confidence)] = CLUSTER
    thresholds = {"transition_below": transition_below, "kick_zone_max": kick_zone_max,
                  "cluster_confidence": cluster_confidence}
    return RegionLabels(labels, thresholds)


def sign_changes_along_run(logits: np.ndarray, window: int) -> np.ndarray:
    """Sign changes of the dominant logit's increments over the next ``window`` steps of a run.

    For each t, a_t = argmax logits[t]; increments d_k = logits[t+k, a_t] - logits[t+k-1, a_t],
    k = 1..window; count consecutive pairs with d_k d_{k+1} < 0 (at most window - 1).

    Args:
        logits: (N, K) logits along a driven run.
        window: W, steps looked ahead.

    Returns:
        (N - W,) int64 counts for t = 0..N-W-1 (states too close to the end are dropped).
    """
    logits = np.asarray(logits, dtype=np.float64)
    window = _check_positive_int(window, "window")
    if logits.ndim != 2 or logits.shape[0] <= window:
        raise ValueError(f"logits must be (N, K) with N > window={window}, got {logits.shape}")
    starts = np.arange(logits.shape[0] - window)
    dominant = logits[starts].argmax(axis=1)
    y = logits[starts[:, None] + np.arange(window + 1)[None, :], dominant[:, None]]  # (N-W, W+1)
    d = np.diff(y, axis=1)
    return (d[:, :-1] * d[:, 1:] < 0).sum(axis=1)


# --------------------------------------------------------------------------- orbit plane


class OrbitPlane(NamedTuple):
    """PC1-PC2 plane of a run.

    Fields:
        mean: (H,) mean state.
        components: (2, H) orthonormal principal axes.
        explained: (2,) fraction of variance explained by each.
        coords: (N, 2) projections of the run's states.
    """

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray
    coords: np.ndarray


def orbit_plane(hidden: np.ndarray) -> OrbitPlane:
    """PCA of the states of a run: the plane in which the orbit is drawn. ``hidden``: (N, H).

    The sign of each axis is fixed (largest-magnitude loading positive) so plots are reproducible.
    """
    hidden = np.asarray(hidden, dtype=np.float64)
    if hidden.ndim != 2 or hidden.shape[0] < 3:
        raise ValueError(f"hidden must be (N >= 3, H), got {hidden.shape}")
    mean = hidden.mean(axis=0)
    centred = hidden - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    explained = s[:2] ** 2 / np.sum(s**2)
    return OrbitPlane(mean, comps, explained, centred @ comps.T)


# --------------------------------------------------------------------------- local linear analysis


def active_masks(hidden: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, H) bool masks m_t = 1[h_t > 0], equal to 1[pre-activation that produced h_t > 0]."""
    return np.asarray(hidden) > 0


def local_jacobians(model: NoiseRNN | RNNWeights, prev_hidden: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Local Jacobians J_t = diag(1[W_rec h_{t-1} + W_in x_t > 0]) W_rec, with the run's noise.

    Args:
        model: a ReLU RNN (NoiseRNN or RNNWeights).
        prev_hidden: (N, H) states h_{t-1}.
        inputs: (N, D) the inputs x_t.

    Returns:
        (N, H, H) float64 Jacobians d h_t / d h_{t-1}.
    """
    w = _as_weights(model)
    prev_hidden = np.asarray(prev_hidden, dtype=np.float64)
    inputs = np.asarray(inputs, dtype=np.float64)
    if prev_hidden.ndim != 2 or inputs.ndim != 2 or prev_hidden.shape[0] != inputs.shape[0]:
        raise ValueError(f"prev_hidden (N, H) and inputs (N, D) must be 2-D with equal N, got {prev_hidden.shape}, {inputs.shape}")
    pre = prev_hidden @ w.W_rec.T.astype(np.float64) + inputs @ w.W_in.T.astype(np.float64)
    return (pre > 0)[:, :, None] * w.W_rec.astype(np.float64)[None]


class JacobianSpectra(NamedTuple):
    """Eigen-decompositions of local Jacobians diag(m) W_rec.

    Fields:
        eigvals: (S, H) complex128 eigenvalues, sorted by decreasing modulus.
        n_unstable: (S,) int64 number of eigenvalues with |lambda| > 1.
        leading: (S,) complex128 eigenvalue of largest modulus.
        leading_vector: (S, H) float64 real part of the leading eigenvector, unit norm
            (the direction of the leading unstable mode where n_unstable > 0).
    """

    eigvals: np.ndarray
    n_unstable: np.ndarray
    leading: np.ndarray
    leading_vector: np.ndarray


def jacobian_spectra(model: NoiseRNN | RNNWeights, masks: np.ndarray, chunk: int = 256) -> JacobianSpectra:
    """Eigenvalues of J = diag(m) W_rec for a stack of masks, batched (``torch.linalg.eig``).

    Args:
        model: a ReLU RNN (NoiseRNN or RNNWeights).
        masks: (S, H) bool active-unit masks (:func:`active_masks`); subsample states first,
            an eigen-decomposition of a 150 x 150 matrix costs ~ms.
        chunk: matrices decomposed per call.
    """
    w = _as_weights(model)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[1] != w.hidden_size:
        raise ValueError(f"masks must be (S, H={w.hidden_size}), got {masks.shape}")
    W = torch.as_tensor(w.W_rec, dtype=torch.float64)
    m = torch.as_tensor(masks)
    vals, vecs = [], []
    for first in range(0, masks.shape[0], chunk):
        J = m[first : first + chunk, :, None].double() * W[None]
        lam, v = torch.linalg.eig(J)
        order = lam.abs().argsort(dim=-1, descending=True)
        lam = lam.gather(-1, order)
        lead = v.gather(-1, order[:, None, :1].expand(-1, v.shape[1], 1))[..., 0].real
        vals.append(lam)
        vecs.append(lead)
    if not vals:
        h = w.hidden_size
        empty_c = np.zeros((0, h), dtype=np.complex128)
        return JacobianSpectra(empty_c, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.complex128), np.zeros((0, h)))
    eigvals = torch.cat(vals).numpy()
    lead_vec = torch.cat(vecs).numpy()
    norms = np.linalg.norm(lead_vec, axis=1, keepdims=True)
    lead_vec = lead_vec / np.where(norms > 0, norms, 1.0)
    n_unstable = (np.abs(eigvals) > 1.0).sum(axis=1).astype(np.int64)
    return JacobianSpectra(eigvals, n_unstable, eigvals[:, 0], lead_vec)


@torch.no_grad()
def mean_drift(model: StepModel | RNNWeights, states: np.ndarray, generator: torch.Generator,
               n_samples: int = 64, noise_scale: float = 1.0) -> np.ndarray:
    """Noise-averaged one-step displacement E_x[step(h, x)] - h (Monte Carlo, ``n_samples`` draws).

    The local direction of the orbit's flow at each state (the noisy step-to-step difference of a
    single run is dominated by noise inside clusters).

    Args:
        states: (S, H). Returns (S, H) float64.
    """
    model = _as_model(model)
    n_samples = _check_positive_int(n_samples, "n_samples")
    device = _param_device(model)
    h = _as_tensor(states, "states", 2, device)
    x = torch.randn(h.shape[0] * n_samples, model.input_size, generator=generator, device=device) * noise_scale
    nxt = model.step(h.repeat_interleave(n_samples, dim=0), x).reshape(h.shape[0], n_samples, -1)
    return (nxt.double().mean(dim=1) - h.double()).cpu().numpy()


def alignment(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|cos| between each vector and a reference line or subspace (norm of the unit vector's projection).

    Args:
        vectors: (S, H).
        reference: (S, H) one reference direction per vector, or (k, H) a fixed k-dim subspace
            spanned by orthonormal rows (e.g. ``OrbitPlane.components``).

    Returns:
        (S,) values in [0, 1]: |cos| for a line, cosine of the angle to the subspace otherwise.
    """
    v = np.asarray(vectors, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    if r.shape == v.shape:
        r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-300)
        return np.abs((v * r).sum(axis=1))
    if r.ndim != 2 or r.shape[1] != v.shape[1] or not np.allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-6):
        raise ValueError("reference must be (S, H) directions or (k, H) orthonormal rows")
    return np.linalg.norm(v @ r.T, axis=1)


def random_alignment_baseline(hidden_size: int, dim: int = 1) -> float:
    """Expected :func:`alignment` of a uniformly random direction in R^H with a fixed dim-subspace.

    The squared projection is Beta(dim/2, (H-dim)/2), so the mean of its square root is
    B((dim+1)/2, (H-dim)/2) / B(dim/2, (H-dim)/2) (e.g. H=150: 0.065 for a line, 0.115 for a plane).
    """
    if not 1 <= dim < hidden_size:
        raise ValueError(f"need 1 <= dim < hidden_size, got dim={dim}, hidden_size={hidden_size}")
    a, b = dim / 2, (hidden_size - dim) / 2
    return float(math.exp(special.betaln(a + 0.5, b) - special.betaln(a, b)))


# --------------------------------------------------------------------------- noise sensitivity


def select_points(labels: RegionLabels, region: str, n: int, generator: torch.Generator, margin: int = 0) -> np.ndarray:
    """Draw ``n`` distinct states of ``region`` uniformly (seeded); sorted indices into the run.

    ``margin`` excludes the last ``margin`` states (they need that many future steps of the run).
    Raises ValueError if the region has fewer than ``n`` eligible states.
    """
    n = _check_positive_int(n, "n")
    mask = labels.mask(region).copy()
    if margin > 0:
        mask[-margin:] = False
    candidates = np.flatnonzero(mask)
    if candidates.size < n:
        raise ValueError(f"region {region!r} has {candidates.size} eligible states, fewer than n={n}")
    pick = torch.randperm(candidates.size, generator=generator)[:n].numpy()
    return np.sort(candidates[pick])


def mix_noise(x: torch.Tensor, x_new: torch.Tensor, gamma: float) -> torch.Tensor:
    """x' = sqrt(1 - gamma) x + sqrt(gamma) x_new: keeps the variance, corr(x', x) = sqrt(1 - gamma)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    return math.sqrt(1.0 - gamma) * x + math.sqrt(gamma) * x_new


class NoiseSensitivity(NamedTuple):
    """Spread of perturbed continuations from chosen points of a run.

    Fields:
        gammas: (G,) fractions of the noise redrawn.
        points: (P,) indices of the starting states in the run.
        trace_cov: (G, P, S) trace of the covariance of the ``n_runs`` states after 1..S steps.
        distance: (G, P, S) mean Euclidean distance of those states to the unperturbed run.
    """

    gammas: np.ndarray
    points: np.ndarray
    trace_cov: np.ndarray
    distance: np.ndarray


@torch.no_grad()
def noise_sensitivity(
    model: StepModel | RNNWeights,
    run: DrivenRun,
    points: np.ndarray,
    generator: torch.Generator,
    gammas: tuple[float, ...] = (0.5, 1.0),
    n_runs: int = 100,
    n_steps: int = 5,
) -> NoiseSensitivity:
    """Replay the run from each point with part of its noise redrawn; measure the spread.

    From h_t = ``run.hidden[p]`` the unperturbed future is ``run.hidden[p+1 .. p+S]`` driven by
    ``run.inputs[p+1 .. p+S]``; each of ``n_runs`` perturbed runs uses
    x' = sqrt(1 - gamma) x_run + sqrt(gamma) x_new (:func:`mix_noise`, x_new at the run's noise
    scale). All gammas x points x runs are one batch.

    Args:
        model: the network that produced ``run``.
        run: the driven run.
        points: (P,) indices with p + n_steps < N.
        generator: torch generator for x_new.
        gammas: fractions redrawn (paper: 0.5 and 1).
        n_runs: perturbed runs per point (paper: 100).
        n_steps: S, steps followed (paper: 5).
    """
    model = _as_model(model)
    n_runs = _check_positive_int(n_runs, "n_runs")
    n_steps = _check_positive_int(n_steps, "n_steps")
    points = np.asarray(points, dtype=np.int64)
    n_total = run.hidden.shape[0]
    if points.ndim != 1 or points.size == 0 or points.min() < 0 or points.max() + n_steps >= n_total:
        raise ValueError(f"points must be a non-empty 1-D index array with 0 <= p and p + n_steps < {n_total}")
    for g in gammas:
        mix_noise(torch.zeros(1), torch.zeros(1), g)  # validates gamma
    device = _param_device(model)
    g_arr = np.asarray(gammas, dtype=np.float64)
    n_g, n_p = g_arr.size, points.size
    start = torch.as_tensor(run.hidden[points], device=device)  # (P, H)
    future_idx = points[:, None] + np.arange(1, n_steps + 1)[None, :]  # (P, S)
    x_run = torch.as_tensor(run.inputs[future_idx], device=device)  # (P, S, D)
    ref = torch.as_tensor(run.hidden[future_idx], device=device).double()  # (P, S, H)
    batch = n_g * n_p * n_runs
    h = start[None, :, None, :].expand(n_g, n_p, n_runs, -1).reshape(batch, -1)
    trace = np.empty((n_g, n_p, n_steps))
    dist = np.empty((n_g, n_p, n_steps))
    sq_old = torch.tensor(g_arr, device=device, dtype=torch.float32).sub(1).neg().sqrt()[:, None, None, None]
    sq_new = torch.tensor(g_arr, device=device, dtype=torch.float32).sqrt()[:, None, None, None]
    for s in range(n_steps):
        x_new = torch.randn(n_g, n_p, n_runs, model.input_size, generator=generator, device=device) * run.noise_scale
        x = sq_old * x_run[None, :, None, s, :] + sq_new * x_new
        h = model.step(h, x.reshape(batch, -1))
        hs = h.reshape(n_g, n_p, n_runs, -1).double()
        trace[:, :, s] = hs.var(dim=2, unbiased=True).sum(dim=-1).cpu().numpy()
        dist[:, :, s] = (hs - ref[None, :, None, s, :]).norm(dim=-1).mean(dim=2).cpu().numpy()
    return NoiseSensitivity(g_arr, points, trace, dist)


# --------------------------------------------------------------------------- summaries


class MeanCI(NamedTuple):
    """Mean with a two-sided t confidence interval (``level``) across ``n`` values."""

    mean: float
    low: float
    high: float
    n: int


def mean_ci(values: np.ndarray, level: float = 0.95) -> MeanCI:
    """Mean and Student-t interval mean +- t_{(1+level)/2, n-1} sd / sqrt(n) (NaN bounds if n < 2)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if v.size < 2:
        return MeanCI(mean, float("nan"), float("nan"), 1)
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return MeanCI(mean, mean - half, mean + half, int(v.size))


def region_means(values: np.ndarray, labels: RegionLabels | np.ndarray, level: float = 0.95) -> dict[str, MeanCI]:
    """:func:`mean_ci` of ``values`` (N,) within each region (all four, empty ones give NaN)."""
    codes = labels.labels if isinstance(labels, RegionLabels) else np.asarray(labels)
    values = np.asarray(values)
    if values.shape[0] != codes.shape[0]:
        raise ValueError(f"values ({values.shape[0]}) and labels ({codes.shape[0]}) differ in length")
    return {name: mean_ci(values[codes == code], level) for code, name in enumerate(REGION_NAMES)}
