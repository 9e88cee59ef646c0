"""Local regions of the noise-driven orbit: clusters, kick-zones and transitions (Torre et al., NeurIPS 2025: its results on local dynamics).

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
``n`` continuations per state. A driven run is :class:`RecordedRun`: ``hidden[t]`` = h_t was
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
from .dynamics import averaged_map
from .model import NONFINITE_OUTPUT, NoiseRNN, NonFiniteStates, RNNWeights

__all__ = [
    "REGION_NAMES",
    "TRANSITION",
    "KICK_ZONE",
    "CLUSTER",
    "UNCERTAIN",
    "StepModel",
    "RecordedRun",
    "recorded_run",
    "ResidencyResult",
    "residency_times",
    "residency_reference",
    "RegionLabels",
    "classify_regions",
    "sign_changes_along_run",
    "active_masks",
    "JacobianSpectra",
    "jacobian_spectra",
    "alignment",
    "random_alignment_baseline",
    "sample_states",
    "LocalLinear",
    "local_linear_analysis",
    "mix_noise",
    "NoiseSensitivity",
    "noise_sensitivity",
    "MeanCI",
    "mean_ci",
    "difference_ci",
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


class RecordedRun(NamedTuple):
    """One long noise-driven trajectory (after a burn-in) with its noise, as NumPy float32 arrays.

    Unlike :class:`hmmrnn.dynamics.DrivenRun` (many trajectories, sampled outputs) it keeps the
    input noise and the previous states, so that the run can be replayed with part of its
    noise redrawn (:func:`noise_sensitivity`) and its local Jacobians formed (:func:`active_masks`).

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
        """(N,) argmax output of each state; :data:`~hmmrnn.model.NONFINITE_OUTPUT` (-1) where
        the state is not finite (it has no output)."""
        finite = np.isfinite(self.logits).all(axis=1)
        return np.where(finite, self.logits.argmax(axis=1), NONFINITE_OUTPUT)

    @property
    def nonfinite(self) -> NonFiniteStates:
        """The states without an output (not finite): how many, from which step; falsy if none."""
        return NonFiniteStates.from_mask(~np.isfinite(self.logits).all(axis=1)[None])

    @property
    def confidence(self) -> np.ndarray:
        """(N,) max softmax probability of each state."""
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        return (p.max(axis=1) / p.sum(axis=1)).astype(np.float64)


@torch.no_grad()
def recorded_run(
    model: StepModel | RNNWeights,
    length: int,
    generator: torch.Generator,
    noise_scale: float = 1.0,
    burn_in: int = 200,
    h0: np.ndarray | torch.Tensor | None = None,
) -> RecordedRun:
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
    logits = model.logits(hidden)
    return RecordedRun(
        hidden=hidden.cpu().numpy(),
        prev_hidden=states[burn_in:-1].cpu().numpy(),
        inputs=x[burn_in:].cpu().numpy(),
        logits=logits.cpu().numpy(),
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


class _GenericSim:
    """A batch of continuations of any :class:`StepModel`, through its own ``step`` and ``logits``.

    Protocol shared with :class:`_FusedSim`: ``set_inputs(x)`` gives the inputs of the next
    step (``draw`` draws them), ``advance()`` returns the logits of the current states and
    then moves every row one step on; ``select(keep)`` keeps some rows.
    """

    def __init__(self, model: StepModel, h: torch.Tensor) -> None:
        self.model, self.h, self.x = model, h, None

    def draw(self, generator: torch.Generator, noise_scale: float) -> None:
        x = torch.randn(self.h.shape[0], self.model.input_size, generator=generator, device=self.h.device)
        self.x = x * noise_scale if noise_scale != 1.0 else x

    def set_inputs(self, x: torch.Tensor) -> None:
        self.x = x

    def advance(self) -> torch.Tensor:
        logits = self.model.logits(self.h)
        if self.x is not None:
            self.h, self.x = self.model.step(self.h, self.x), None
        return logits

    def select(self, keep: torch.Tensor) -> None:
        self.h = self.h[keep]
        self.x = None if self.x is None else self.x[keep]


class _FusedSim:
    """A batch of continuations of a :class:`NoiseRNN`.

    One matmul per step. The batch lives in columns: ``A`` is (H + K + D, B) with the states
    h in rows [0, H), scratch in [H, H + K) and the inputs x in [H + K, H + K + D), and

        M = [[W_rec, 0, W_in], [W_out, 0, 0]]   ((H + K) x (H + K + D))

    so that ``M @ A`` is [W_rec h + W_in x ; W_out h]: the next pre-activation and the logits
    of the current states at once. It is written straight into the first H + K rows of the
    other buffer, the ReLU is applied there in place and the next noise is drawn into its last
    D rows, all contiguous blocks. On a CPU this is about 1.5-2x faster than separate matmuls
    for the input, the recurrence and the readout (a (B, 150) x (150, 3) readout matmul costs
    as much as a large one), and nothing large is allocated inside the loop.
    """

    def __init__(self, model: StepModel, h: torch.Tensor) -> None:
        w_rec, w_in, w_out = (getattr(model, name).detach() for name in ("W_rec", "W_in", "W_out"))
        self.H, self.K, self.D = w_rec.shape[0], w_out.shape[0], w_in.shape[1]
        H, K = self.H, self.K
        self.M = torch.zeros(H + K, H + K + self.D, dtype=h.dtype, device=h.device)
        self.M[:H, :H], self.M[:H, H + K :], self.M[H:, :H] = w_rec, w_in, w_out
        # zeros, not empty: the scratch rows meet the zero columns of M, and 0 * NaN from
        # uninitialised memory would be NaN (it made the first logits NaN now and then)
        self.A = torch.zeros(H + K + self.D, h.shape[0], dtype=h.dtype, device=h.device)
        self.A[:H] = h.T
        self.B = torch.zeros_like(self.A)  # its input rows are read, without a draw, at the last step

    def draw(self, generator: torch.Generator, noise_scale: float) -> None:
        x = self.A[self.H + self.K :].normal_(generator=generator)
        if noise_scale != 1.0:
            x.mul_(noise_scale)

    def set_inputs(self, x: torch.Tensor) -> None:
        self.A[self.H + self.K :] = x.T

    def advance(self) -> torch.Tensor:
        H, K = self.H, self.K
        torch.mm(self.M, self.A, out=self.B[: H + K])
        self.B[:H].relu_()
        self.A, self.B = self.B, self.A
        return self.A[H : H + K].T  # logits of the states before the step (valid until the next advance)

    def select(self, keep: torch.Tensor) -> None:
        self.A = torch.index_select(self.A, 1, keep)
        # zeros, not empty: after the swap these input rows feed the logits rows (0 x NaN = NaN)
        # at the final step, which draws no input; uninitialised memory made its logits NaN
        self.B = torch.zeros_like(self.A)


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """argmax over the last axis (first index among ties, as ``torch.argmax``); a column loop for
    few outputs, much faster than ``argmax`` over a short axis."""
    if logits.shape[-1] > 8:
        return logits.argmax(dim=-1)
    best = logits[..., 0].clone()
    index = torch.zeros(best.shape, dtype=torch.int64, device=logits.device)
    for j in range(1, logits.shape[-1]):
        column = logits[..., j]
        index.masked_fill_(column > best, j)
        torch.maximum(best, column, out=best)
    return index


@torch.no_grad()
def residency_times(
    model: StepModel | RNNWeights,
    states: np.ndarray | torch.Tensor,
    generator: torch.Generator | None = None,
    n_continuations: int = 20,
    max_steps: int = 60,
    noise_scale: float = 1.0,
    inputs: np.ndarray | torch.Tensor | None = None,
    max_batch: int = 131_072,
) -> ResidencyResult:
    """Residency time of every state, all continuations as one batched simulation.

    The N x n continuations are the columns of one tensor; the only Python loop runs over the
    <= ``max_steps`` time steps. Continuations that have switched are dropped from the batch once
    they are a fifth of it, and the loop stops early once every continuation has switched.
    States are processed in chunks of at most ``max_batch`` continuations to bound memory
    (~2 kB per continuation for |h| = 150, d = 100). A :class:`NoiseRNN` runs through a fused
    step (:class:`_FusedSim`), any other model through its ``step`` and ``logits``.

    Args:
        model: the network.
        states: (N, H) starting states (e.g. ``RecordedRun.hidden``).
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
    simulator = _FusedSim if isinstance(model, NoiseRNN) else _GenericSim
    states_per_chunk = max(1, int(max_batch) // n)
    for first in range(0, n_states, states_per_chunk):
        last = min(n_states, first + states_per_chunk)
        rows = torch.arange(first * n, last * n, device=device)  # global continuation indices
        sim = simulator(model, states[first:last].repeat_interleave(n, dim=0))
        target = start_output[first:last].repeat_interleave(n)
        y_prev = start_logits[first:last].gather(1, start_output[first:last, None])[:, 0].repeat_interleave(n)
        d_prev = torch.zeros_like(y_prev)
        alive = torch.ones_like(rows, dtype=torch.bool)
        sw = torch.zeros_like(rows)  # switch step of the rows in the batch (0 = not yet)
        chg = torch.zeros_like(rows)  # sign changes counted so far
        # iteration k feeds x_k and gets back the logits of h_{k-1}: step k-1 is judged after it
        for k in range(1, max_steps + 2):
            if k <= max_steps:
                if inputs is not None:
                    sim.set_inputs(inputs[rows, k - 1])
                else:
                    sim.draw(generator, noise_scale)
            logit = sim.advance()
            j = k - 1  # the step whose state these logits belong to
            if j == 0:
                continue
            y = logit.gather(1, target[:, None])[:, 0]
            d = y - y_prev
            if j > 1:
                chg += (d * d_prev < 0) & alive
            now = alive & (_argmax(logit) != target)
            sw.masked_fill_(now, j)
            alive &= ~now
            n_alive = int(alive.sum())
            if n_alive == 0 or j == max_steps:
                break
            if n_alive <= _COMPACT_BELOW * rows.shape[0]:
                # lazy compaction: drop switched rows once they are a sizeable part of the batch
                switch[rows], changes[rows] = sw, chg
                keep = alive.nonzero()[:, 0]
                rows, target, y, d, sw, chg = (torch.index_select(t, 0, keep) for t in (rows, target, y, d, sw, chg))
                sim.select(keep)
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


# --------------------------------------------------------------------------- local linear analysis


def active_masks(model: NoiseRNN | RNNWeights, prev_hidden: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Masks m_t = 1[W_rec h_{t-1} + W_in x_t > 0] of the pre-activations that produced h_t.

    Computed from the pre-activation with the run's actual noise input x_t; since
    h_t = relu(pre-activation), this equals ``hidden > 0`` (up to float rounding of the sum).

    Args:
        model: a ReLU RNN (NoiseRNN or RNNWeights).
        prev_hidden: (N, H) states h_{t-1}.
        inputs: (N, D) the inputs x_t.

    Returns:
        (N, H) bool. The local Jacobian is ``dynamics.relu_jacobian(W_rec, mask)`` = diag(m_t) W_rec.
    """
    w = _as_weights(model)
    prev_hidden = np.asarray(prev_hidden, dtype=np.float64)
    inputs = np.asarray(inputs, dtype=np.float64)
    if prev_hidden.ndim != 2 or inputs.ndim != 2 or prev_hidden.shape[0] != inputs.shape[0]:
        raise ValueError(f"prev_hidden (N, H) and inputs (N, D) must be 2-D with equal N, got {prev_hidden.shape}, {inputs.shape}")
    if prev_hidden.shape[1] != w.hidden_size or inputs.shape[1] != w.input_size:
        raise ValueError(f"expected H={w.hidden_size}, D={w.input_size}, got {prev_hidden.shape[1]}, {inputs.shape[1]}")
    return prev_hidden @ w.W_rec.T.astype(np.float64) + inputs @ w.W_in.T.astype(np.float64) > 0


class JacobianSpectra(NamedTuple):
    """Eigen-decompositions of local Jacobians J = diag(m) W_rec.

    Fields:
        eigvals: (S, H) complex128 eigenvalues, sorted by decreasing modulus.
        n_unstable: (S,) int64 number of eigenvalues with |lambda| > 1.
        leading: (S,) complex128 eigenvalue of largest modulus.
        leading_vector: (S, H) float64 real part of its eigenvector, unit norm (the direction
            of the leading unstable mode where n_unstable > 0; for a complex pair, the real part
            is one direction of the pair's rotation plane).
    """

    eigvals: np.ndarray
    n_unstable: np.ndarray
    leading: np.ndarray
    leading_vector: np.ndarray


class _single_thread:
    """Run torch single-threaded inside the block.

    Multi-threaded LAPACK ``geev`` on a stack of small matrices was 10-30x *slower* than one
    thread on the 2-core machines of this book while another process kept the cores busy
    (OpenMP threads waiting on each other); one thread is also deterministic.
    """

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)


def jacobian_spectra(model: NoiseRNN | RNNWeights, masks: np.ndarray, chunk: int = 64) -> JacobianSpectra:
    """Eigenvalues and leading eigenvectors of J = diag(m) W_rec for a stack of masks.

    Exact reduction used for speed: with the active units a = {i: m_i = 1} first, J is block
    upper-triangular [[W_aa, W_ai], [0, 0]], so its spectrum is eig(W_aa) plus H - |a| zeros, and
    an eigenvector of a nonzero eigenvalue is zero on the inactive units and an eigenvector of
    W_aa on the active ones. States are sorted by their number of active units and decomposed in
    chunks (one batched ``torch.linalg.eig`` per chunk) on the active blocks, zero-padded to the
    largest block of the chunk (padding adds exact zero eigenvalues only). The masked H x H
    matrices themselves are slow for LAPACK (many exact zeros) and (H/|a|)^3 times larger.

    Args:
        model: a ReLU RNN (NoiseRNN or RNNWeights).
        masks: (S, H) bool active-unit masks (:func:`active_masks`); subsample states first
            (:func:`sample_states`): each decomposition costs a few ms.
        chunk: matrices per batched call.
    """
    w = _as_weights(model)
    masks = np.asarray(masks, dtype=bool)
    h = w.hidden_size
    if masks.ndim != 2 or masks.shape[1] != h:
        raise ValueError(f"masks must be (S, H={h}), got {masks.shape}")
    chunk = _check_positive_int(chunk, "chunk")
    n = masks.shape[0]
    eigvals = np.zeros((n, h), dtype=np.complex128)
    lead_vec = np.zeros((n, h), dtype=np.float64)
    W = torch.as_tensor(w.W_rec, dtype=torch.float64)
    sizes = masks.sum(axis=1)
    by_size = np.argsort(sizes, kind="stable")
    with torch.no_grad(), _single_thread():
        for first in range(0, n, chunk):
            idx = by_size[first : first + chunk]
            width = max(1, int(sizes[idx].max()))
            m = torch.as_tensor(masks[idx])
            order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)[:, :width]  # active units first
            act = torch.gather(m, 1, order).to(torch.float64)
            block = W[order[:, :, None], order[:, None, :]] * act[:, :, None] * act[:, None, :]
            lam, vec = torch.linalg.eig(block)
            rank = lam.abs().argsort(dim=-1, descending=True)
            lam = lam.gather(-1, rank)
            lead = vec.gather(-1, rank[:, None, :1].expand(-1, width, 1))[..., 0].real * act
            full = torch.zeros(len(idx), h, dtype=torch.float64).scatter_(1, order, lead)
            eigvals[idx, :width] = lam.numpy()
            lead_vec[idx] = full.numpy()
    norms = np.linalg.norm(lead_vec, axis=1, keepdims=True)
    lead_vec = lead_vec / np.where(norms > 0, norms, 1.0)
    n_unstable = (np.abs(eigvals) > 1.0).sum(axis=1).astype(np.int64)
    return JacobianSpectra(eigvals, n_unstable, eigvals[:, 0].copy(), lead_vec)


def alignment(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|cos| between each vector and a reference line or subspace (norm of the unit vector's projection).

    Args:
        vectors: (S, H).
        reference: (S, H) one reference direction per vector, or (k, H) a fixed k-dim subspace
            spanned by orthonormal rows (e.g. PC1-PC2, ``dynamics.pca(...).components[:2]``).

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
    B((dim+1)/2, (H-dim)/2) / B(dim/2, (H-dim)/2) (e.g. H=150: 0.065 for a line, 0.103 for a plane).
    """
    if not 1 <= dim < hidden_size:
        raise ValueError(f"need 1 <= dim < hidden_size, got dim={dim}, hidden_size={hidden_size}")
    a, b = dim / 2, (hidden_size - dim) / 2
    return float(math.exp(special.betaln(a + 0.5, b) - special.betaln(a, b)))


def sample_states(labels: RegionLabels, n: int, generator: torch.Generator,
                  regions: tuple[str, ...] | str = REGION_NAMES, margin: int = 0) -> np.ndarray:
    """Up to ``n`` states of each region, drawn uniformly without replacement (seeded); sorted indices.

    The automatic point-selection rule of the chapter: no state is chosen by eye. A region with
    fewer than ``n`` eligible states contributes all of them (check the count you get).

    Args:
        labels: region labels of a run.
        n: states per region.
        generator: torch generator for the draw.
        regions: region name(s) to draw from.
        margin: exclude the last ``margin`` states of the run (they need that many future steps).
    """
    n = _check_positive_int(n, "n")
    if margin < 0 or int(margin) != margin:
        raise ValueError(f"margin must be a non-negative integer, got {margin!r}")
    regions = (regions,) if isinstance(regions, str) else tuple(regions)
    eligible = np.ones(labels.labels.shape[0], dtype=bool)
    if margin:
        eligible[-int(margin):] = False
    chosen = [np.zeros(0, dtype=np.int64)]
    for region in regions:
        candidates = np.flatnonzero(labels.mask(region) & eligible)
        pick = torch.randperm(candidates.size, generator=generator)[:n].numpy()
        chosen.append(candidates[pick])
    return np.sort(np.concatenate(chosen))


class LocalLinear(NamedTuple):
    """Local linear analysis of a subsample of a run's states.

    Fields:
        indices: (S,) indices of the states in the run.
        labels: (S,) their region codes.
        n_unstable: (S,) eigenvalues of J_t = diag(m_t) W_rec outside the unit circle.
        spectral_radius: (S,) largest |lambda|.
        cos_tangent: (S,) |cos| between the leading eigenvector (real part) and the local orbit
            tangent, the noise-averaged drift E[h_{t+1} | h_t] - h_t (``dynamics.averaged_map``);
            NaN where the state has no unstable eigenvalue.
        cos_plane: (S,) cosine of the angle between that eigenvector and the PC1-PC2 plane; NaN
            where there is no unstable eigenvalue.
        baseline_tangent: expected |cos| of a random direction with a line in R^H.
        baseline_plane: expected cosine of a random direction with a plane in R^H.
    """

    indices: np.ndarray
    labels: np.ndarray
    n_unstable: np.ndarray
    spectral_radius: np.ndarray
    cos_tangent: np.ndarray
    cos_plane: np.ndarray
    baseline_tangent: float
    baseline_plane: float


def local_linear_analysis(
    model: NoiseRNN | RNNWeights,
    run: RecordedRun,
    labels: RegionLabels,
    plane: np.ndarray,
    per_region: int,
    generator: torch.Generator,
) -> LocalLinear:
    """Unstable eigenvalues per region and the direction of the unstable modes.

    Subsamples up to ``per_region`` states of each region (:func:`sample_states`), builds
    their masks from the producing pre-activation (:func:`active_masks`), decomposes the local
    Jacobians (:func:`jacobian_spectra`) and measures the alignment of the leading unstable
    eigenvector with the orbit tangent and with ``plane``.

    Args:
        model: a ReLU RNN.
        run: the recorded run the labels refer to.
        labels: region labels of the run's states.
        plane: (2, H) orthonormal rows spanning PC1-PC2 of the run.
        per_region: states per region (the cost is a few ms per state).
        generator: torch generator for the subsample.
    """
    w = _as_weights(model)
    if labels.labels.shape[0] != run.hidden.shape[0]:
        raise ValueError(f"labels ({labels.labels.shape[0]}) and run ({run.hidden.shape[0]}) differ in length")
    idx = sample_states(labels, per_region, generator)
    masks = active_masks(w, run.prev_hidden[idx], run.inputs[idx])
    spec = jacobian_spectra(w, masks)
    with torch.no_grad():
        h = torch.as_tensor(run.hidden[idx], dtype=torch.float64)
        tangent = (averaged_map(w, run.noise_scale)(h) - h).numpy()
    unstable = spec.n_unstable > 0
    cos_tangent = np.where(unstable, alignment(spec.leading_vector, tangent), np.nan)
    cos_plane = np.where(unstable, alignment(spec.leading_vector, plane), np.nan)
    return LocalLinear(
        indices=idx,
        labels=labels.labels[idx],
        n_unstable=spec.n_unstable,
        spectral_radius=np.abs(spec.leading),
        cos_tangent=cos_tangent,
        cos_plane=cos_plane,
        baseline_tangent=random_alignment_baseline(w.hidden_size, 1),
        baseline_plane=random_alignment_baseline(w.hidden_size, 2),
    )


# --------------------------------------------------------------------------- noise sensitivity


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
        displacement: (P, S) distance the unperturbed run has moved from the point after 1..S
            steps (the scale against which the spread is small or large).
    """

    gammas: np.ndarray
    points: np.ndarray
    trace_cov: np.ndarray
    distance: np.ndarray
    displacement: np.ndarray


@torch.no_grad()
def noise_sensitivity(
    model: StepModel | RNNWeights,
    run: RecordedRun,
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
    if n_runs < 2:
        raise ValueError(f"n_runs must be >= 2 (a covariance needs two runs), got {n_runs}")
    n_steps = _check_positive_int(n_steps, "n_steps")
    points = np.asarray(points, dtype=np.int64)
    n_total = run.hidden.shape[0]
    if points.ndim != 1 or (points.size and (points.min() < 0 or points.max() + n_steps >= n_total)):
        raise ValueError(f"points must be a 1-D index array with 0 <= p and p + n_steps < {n_total}")
    for g in gammas:
        mix_noise(torch.zeros(1), torch.zeros(1), g)  # validates gamma
    device = _param_device(model)
    g_arr = np.asarray(gammas, dtype=np.float64)
    n_g, n_p = g_arr.size, points.size
    if n_p == 0:  # e.g. a region without states in a short run
        return NoiseSensitivity(g_arr, points, np.zeros((n_g, 0, n_steps)), np.zeros((n_g, 0, n_steps)), np.zeros((0, n_steps)))
    start = torch.as_tensor(run.hidden[points], device=device)  # (P, H)
    future_idx = points[:, None] + np.arange(1, n_steps + 1)[None, :]  # (P, S)
    x_run = torch.as_tensor(run.inputs[future_idx], device=device)  # (P, S, D)
    ref = torch.as_tensor(run.hidden[future_idx], device=device).double()  # (P, S, H)
    batch, hidden, dim = n_g * n_p * n_runs, run.hidden.shape[1], model.input_size
    h = start[None, :, None, :].expand(n_g, n_p, n_runs, hidden).reshape(batch, hidden)
    trace = np.empty((n_g, n_p, n_steps))
    dist = np.empty((n_g, n_p, n_steps))
    sq_old = torch.tensor(g_arr, device=device, dtype=torch.float32).sub(1).neg().sqrt()[:, None, None, None]
    sq_new = torch.tensor(g_arr, device=device, dtype=torch.float32).sqrt()[:, None, None, None]
    for s in range(n_steps):
        x_new = torch.randn(n_g, n_p, n_runs, model.input_size, generator=generator, device=device) * run.noise_scale
        x = sq_old * x_run[None, :, None, s, :] + sq_new * x_new
        h = model.step(h, x.reshape(batch, dim))
        hs = h.reshape(n_g, n_p, n_runs, hidden).double()
        trace[:, :, s] = hs.var(dim=2, unbiased=True).sum(dim=-1).cpu().numpy()
        dist[:, :, s] = (hs - ref[None, :, None, s, :]).norm(dim=-1).mean(dim=2).cpu().numpy()
    displacement = (ref - start.double()[:, None, :]).norm(dim=-1).cpu().numpy()
    return NoiseSensitivity(g_arr, points, trace, dist, displacement)


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


def difference_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> MeanCI:
    """mean(a) - mean(b) with a Welch (unequal variances) t interval; ``n`` = len(a) + len(b).

    NaN bounds if either side has fewer than 2 finite values (NaN mean if one is empty).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:  # no interval without a spread on each side
        nan = float("nan")
        return MeanCI(float(a.mean() - b.mean()) if a.size and b.size else nan, nan, nan, int(a.size + b.size))
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
    return MeanCI(float(a.mean() - b.mean()), float(ci.low), float(ci.high), int(a.size + b.size))


def region_means(values: np.ndarray, labels: RegionLabels | np.ndarray, level: float = 0.95) -> dict[str, MeanCI]:
    """:func:`mean_ci` of ``values`` (N,) within each region (all four, empty ones give NaN)."""
    codes = labels.labels if isinstance(labels, RegionLabels) else np.asarray(labels)
    values = np.asarray(values)
    if values.shape[0] != codes.shape[0]:
        raise ValueError(f"values ({values.shape[0]}) and labels ({codes.shape[0]}) differ in length")
    return {name: mean_ci(values[codes == code], level) for code, name in enumerate(REGION_NAMES)}
