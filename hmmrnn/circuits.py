"""Kick neurons, the noise-accumulation population and interventions (Torre et al., NeurIPS 2025: its results on kick neurons, connectivity and interventions).

The paper found two triplets of "kick neurons" in its two-state network by silencing every
3-neuron combination and typed their indices into its code. This module finds such groups by
a criterion that runs on any trained network, for any transition between two outputs, and
tests them causally against random neuron sets under identical noise.

**The criterion** (:func:`find_kick_neurons`), for a transition ``a -> b`` between two outputs:

1. *Kick signature* (descriptive, ranks all H neurons; :func:`kick_signature`). From one long
   driven run whose states are labelled by :mod:`hmmrnn.regions` (cluster / kick-zone /
   transition, from residency times), neuron i scores

       s_i = P(z_i > 0 | transition states leaving a towards b) - P(z_i > 0 | cluster states of a),

   where z = W_rec h_{t-1} + W_in x_t is the pre-activation that produced h_t (the neuron is
   active iff z_i > 0). s_i is near 1 for a neuron that is silent while the network sits in
   cluster a and switched on during every transition a -> b: the paper's description of a kick
   neuron (negative in clusters, crossing the threshold in kick-zones, positive in transitions).
2. *Group size* (causal; :func:`group_size_search`). For k = 1, 2, ..., ``max_size`` the top-k
   neurons of every requested transition's ranking are silenced together (activity x 0), all
   k in one batched simulation with the same noise and start states as the nominal network.
   The hazard reduction pools the requested transitions as 1 - (observed switches) /
   (switches expected at the nominal hazards with the observed time spent in each source
   output). The group size is the **smallest k whose silencing cuts the transition hazard by
   at least ``target`` (default 95 %: the transition is blocked) with 95 % confidence**: the
   5th percentile of a bootstrap over trajectories must reach the target, so that a k which
   passes only by the luck of one noise sample is not chosen. (With a 90 % target the shipped
   two-state network gets groups whose silencing cuts switching by only 0.89-0.95 on fresh
   noise: the smallest k that passes a threshold sits just above it.) If no k reaches the
   target, the best k is returned with ``reached=False``.

   Why jointly, and why not a brute force: silencing a group only partly can *raise* the
   switching (the rest of the network flickers between the outputs), so the effect of a set is
   not the sum of its members' effects and a greedy search over single neurons fails; a brute
   force over all 3-sets of 150 neurons is 551,300 simulations. The signature ranks the
   neurons in one pass over a recorded run, and only ``max_size`` prefixes are simulated.

Calling it. The two-state chain (outputs 0 and 2 frequent, 1 rare)::

    search = find_kick_neurons(weights, [(0, 2), (2, 0)], torch.Generator().manual_seed(0))
    search.groups        # one group per transition, same size, chosen jointly

One transition of a 3-output network (e.g. ``fully3``), or the two directions of one pair of
its outputs::

    find_kick_neurons(weights, [(0, 1)], gen)            # what gates 0 -> 1 alone
    find_kick_neurons(weights, [(0, 1), (1, 0)], gen)    # the pair {0, 1}, both directions

Each call chooses its own group size; outputs outside ``outputs`` (default: every output the
network shows at least 5 % of the time) are ignored when deciding which output the network is
"in" (:func:`carried_outputs`), so that a rare output passed on the way does not count as a
switch. For a 3-output network compare the groups of (a, b) and (c, b): a group that is on in
cluster b may gate every transition *into* b.

**Interventions** are modified copies of the weights (:func:`apply_modulation`), never the
loaded model. A :class:`Modulation` holds two gain vectors: ``activity`` r (neuron i's
activity is multiplied by r_i: rows i of W_rec and W_in scaled by r_i, exact because
relu(r z) = r relu(z) for r >= 0) and ``input`` s (the noise input of neuron i multiplied by
s_i: row i of W_in scaled). Many modulations run as one batch (:func:`simulate_modulations`):
the noise drive W_in x is computed once and every condition sees the same noise and the same
start states (:class:`SharedNoise`), so that differences between conditions are caused by the
intervention. A gain of 1 everywhere reproduces the nominal network bit for bit.

Shapes: ``H`` hidden units, ``D`` input dimensions, ``K`` outputs, ``N`` states of a recorded
run, ``C`` conditions (modulations), ``B`` trajectories, ``T`` time steps, ``S`` transitions.
Randomness always comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import itertools
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import torch

from . import regions
from .dynamics import eigen_counts, local_eigvals
from .model import NONFINITE_OUTPUT, NonFiniteStates, NonFiniteStatesError, NoiseRNN, RNNWeights

__all__ = [
    "MIN_OCCUPANCY",
    "ACTIVITY",
    "INPUT",
    "Modulation",
    "modulation",
    "stack_modulations",
    "apply_modulation",
    "modulate_activity",
    "modulate_input",
    "SharedNoise",
    "shared_noise",
    "ModulatedRuns",
    "simulate_modulations",
    "simulate_reference",
    "carried_outputs",
    "tracked_outputs",
    "transition_context",
    "SwitchStats",
    "switch_stats",
    "pooled_reduction",
    "bootstrap_reduction",
    "dwell_times",
    "preactivations",
    "KickSignature",
    "kick_signature",
    "PROFILE_CATEGORIES",
    "RegionProfiles",
    "region_profiles",
    "single_neuron_effects",
    "GroupSizeSearch",
    "group_size_search",
    "KickSearch",
    "find_kick_neurons",
    "subset_search",
    "random_sets",
    "group_weight_matrix",
    "ConnectivityTest",
    "connectivity_test",
    "NoisePopulation",
    "noise_population",
    "NoisePopulationTest",
    "noise_population_test",
    "ClusterAxis",
    "cluster_axis",
    "switch_peaks",
    "SweepResult",
    "intervention_sweep",
    "spread",
    "NearSwitchEigs",
    "complex_pairs_near_switches",
]

MIN_OCCUPANCY = 0.05
"""Outputs shown at least this fraction of the time are tracked by default (the rare output of the
linear chains, 1 %, is not)."""

ACTIVITY, INPUT = "activity", "input"


def _weights(model: NoiseRNN | RNNWeights) -> RNNWeights:
    if isinstance(model, RNNWeights):
        return model.validate()
    if isinstance(model, NoiseRNN):
        return model.weights()
    raise TypeError(f"expected a NoiseRNN or RNNWeights, got {type(model).__name__}")


def _positive_int(value: int, name: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _neurons(neurons: Sequence[int] | np.ndarray, hidden_size: int, name: str = "neurons") -> np.ndarray:
    idx = np.asarray(neurons, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= hidden_size):
        raise ValueError(f"{name} must be indices in [0, {hidden_size}), got {idx.tolist()}")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"{name} has repeated indices: {idx.tolist()}")
    return idx


# =========================================================================== interventions


class Modulation(NamedTuple):
    """Per-neuron gains of an intervention (one condition (H,) or a stack (C, H), float32).

    Fields:
        activity: r, neuron i's activity h_i is multiplied by r_i >= 0 (rows i of W_rec and of
            W_in scaled by r_i). 0 silences the neuron, 1 leaves it alone, 2 doubles it.
        input: s, the noise input of neuron i is multiplied by s_i (row i of W_in scaled by s_i).

    The modified network is ``h_t = relu(diag(r) (W_rec h_{t-1} + diag(s) W_in x_t))``.
    """

    activity: np.ndarray
    input: np.ndarray

    @property
    def n_conditions(self) -> int:
        return 1 if self.activity.ndim == 1 else int(self.activity.shape[0])


def modulation(hidden_size: int, neurons: Sequence[int] | np.ndarray = (), mu: float = 1.0, kind: str = ACTIVITY) -> Modulation:
    """Gains that multiply the activity (``kind="activity"``) or the noise input (``kind="input"``)
    of ``neurons`` by ``mu`` and leave every other neuron alone.

    Args:
        hidden_size: H.
        neurons: indices of the modulated neurons (none: the nominal network).
        mu: the modulation factor, >= 0 (0 silences, 1 is nominal, 2 doubles).
        kind: ``"activity"`` or ``"input"``.
    """
    hidden_size = _positive_int(hidden_size, "hidden_size")
    if not (np.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be a finite number >= 0, got {mu!r}")
    if kind not in (ACTIVITY, INPUT):
        raise ValueError(f"kind must be {ACTIVITY!r} or {INPUT!r}, got {kind!r}")
    idx = _neurons(neurons, hidden_size)
    r = np.ones(hidden_size, dtype=np.float32)
    s = np.ones(hidden_size, dtype=np.float32)
    (r if kind == ACTIVITY else s)[idx] = np.float32(mu)
    return Modulation(r, s)


def stack_modulations(mods: Sequence[Modulation]) -> Modulation:
    """Stack single modulations into one (C, H) :class:`Modulation` (condition order kept)."""
    if not mods:
        raise ValueError("need at least one modulation")
    rows = [(np.atleast_2d(m.activity), np.atleast_2d(m.input)) for m in mods]
    return Modulation(np.concatenate([r for r, _ in rows]).astype(np.float32), np.concatenate([s for _, s in rows]).astype(np.float32))


def _check_modulation(mod: Modulation, hidden_size: int) -> Modulation:
    r = np.atleast_2d(np.asarray(mod.activity, dtype=np.float32))
    s = np.atleast_2d(np.asarray(mod.input, dtype=np.float32))
    if r.shape != s.shape or r.ndim != 2 or r.shape[1] != hidden_size:
        raise ValueError(f"modulation gains must be (C, H={hidden_size}) each, got {r.shape} and {s.shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(s)) and r.min() >= 0 and s.min() >= 0):
        raise ValueError("modulation gains must be finite and >= 0")
    return Modulation(r, s)


def apply_modulation(model: NoiseRNN | RNNWeights, mod: Modulation) -> RNNWeights:
    """A modified copy of the weights: W_rec' = diag(r) W_rec, W_in' = diag(r s) W_in, W_out unchanged.

    The caller's weights are never modified.

    Args:
        model: the network.
        mod: one condition, gains of shape (H,).
    """
    w = _weights(model)
    m = _check_modulation(mod, w.hidden_size)
    if m.activity.shape[0] != 1:
        raise ValueError(f"apply_modulation takes one condition, got {m.activity.shape[0]}")
    r, s = m.activity[0], m.input[0]
    return RNNWeights(
        W_in=(w.W_in * (r * s)[:, None]).astype(np.float32),
        W_rec=(w.W_rec * r[:, None]).astype(np.float32),
        W_out=np.array(w.W_out, dtype=np.float32, copy=True),
    )


def modulate_activity(model: NoiseRNN | RNNWeights, neurons: Sequence[int] | np.ndarray, mu: float) -> RNNWeights:
    """Copy of the network with the activity of ``neurons`` multiplied by ``mu`` (0: silenced)."""
    w = _weights(model)
    return apply_modulation(w, modulation(w.hidden_size, neurons, mu, ACTIVITY))


def modulate_input(model: NoiseRNN | RNNWeights, neurons: Sequence[int] | np.ndarray, mu: float) -> RNNWeights:
    """Copy of the network with the noise input of ``neurons`` multiplied by ``mu`` (0: cut off)."""
    w = _weights(model)
    return apply_modulation(w, modulation(w.hidden_size, neurons, mu, INPUT))


# =========================================================================== batched simulation


class SharedNoise(NamedTuple):
    """The noise and start states that every condition of a batched simulation shares.

    Fields:
        inputs: (B, T, D) float32 input noise x_t (already scaled by the noise scale).
        h0: (B, H) float32 start states.
    """

    inputs: torch.Tensor
    h0: torch.Tensor

    @property
    def n_traj(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.inputs.shape[1])


def shared_noise(
    model: NoiseRNN | RNNWeights,
    n_traj: int,
    n_steps: int,
    generator: torch.Generator,
    start_states: np.ndarray | None = None,
    noise_scale: float = 1.0,
) -> SharedNoise:
    """Draw the noise of ``n_traj`` trajectories of ``n_steps`` steps and their start states.

    Args:
        model: the network (for H and D).
        n_traj: B.
        n_steps: T.
        generator: torch generator for the start-state choice and the noise.
        start_states: (N, H) states to start from (e.g. ``RecordedRun.hidden`` of a nominal
            run, so that trajectories start on the orbit, in either cluster); ``n_traj`` of them
            are drawn without replacement (with replacement if N < B). Default: zeros.
        noise_scale: standard deviation of x_t.
    """
    w = _weights(model)
    n_traj, n_steps = _positive_int(n_traj, "n_traj"), _positive_int(n_steps, "n_steps")
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale!r}")
    if start_states is None:
        h0 = torch.zeros(n_traj, w.hidden_size)
    else:
        pool = np.asarray(start_states, dtype=np.float32)
        if pool.ndim != 2 or pool.shape[1] != w.hidden_size or pool.shape[0] == 0:
            raise ValueError(f"start_states must be (N, H={w.hidden_size}) with N >= 1, got {pool.shape}")
        if pool.shape[0] >= n_traj:
            pick = torch.randperm(pool.shape[0], generator=generator)[:n_traj]
        else:
            pick = torch.randint(pool.shape[0], (n_traj,), generator=generator)
        h0 = torch.from_numpy(pool[pick.numpy()])
    x = torch.randn(n_traj, n_steps, w.input_size, generator=generator)
    return SharedNoise(x * noise_scale if noise_scale != 1.0 else x, h0)


class ModulatedRuns(NamedTuple):
    """Trajectories of C conditions under shared noise.

    Fields:
        dominant: (C, B, T) int8 argmax output of h_1..h_T; :data:`~hmmrnn.model.NONFINITE_OUTPUT`
            (-1) where the state is not finite (no output: the switch statistics carry the last
            tracked output over such steps, see :func:`carried_outputs`).
        projection: (C, B, T, P) float32 projections ``h_t @ directions.T``, or None.
        active: (C, B, T, H) bool activity masks h_t > 0 (= the ReLU masks of the local
            Jacobians), or None.
        hidden: (C, B, T, H) float32 states, or None.
        max_norm: (C,) float64 largest ||h_t|| of each condition (inf or NaN if its activity
            overflowed): see :meth:`runaway`.
    """

    dominant: np.ndarray
    projection: np.ndarray | None
    active: np.ndarray | None
    hidden: np.ndarray | None
    max_norm: np.ndarray

    @property
    def nonfinite(self) -> NonFiniteStates:
        """The steps without an output (non-finite states) over all conditions and trajectories."""
        return NonFiniteStates.from_mask((self.dominant == NONFINITE_OUTPUT).reshape(-1, self.dominant.shape[-1]))

    def runaway(self, reference: int = 0, factor: float = 100.0) -> np.ndarray:
        """(C,) True where the activity ran away: max ||h|| above ``factor`` times the reference
        condition's, or not finite. Without biases a ReLU loop with gain above 1 grows without
        bound; the outputs of such a condition are meaningless (stuck at one argmax)."""
        ref = self.max_norm[reference]
        return ~np.isfinite(self.max_norm) | (self.max_norm > factor * ref)


@torch.no_grad()
def simulate_modulations(
    model: NoiseRNN | RNNWeights,
    mods: Modulation,
    noise: SharedNoise,
    directions: np.ndarray | None = None,
    keep_active: bool = False,
    keep_hidden: bool = False,
    chunk: int = 256,
) -> ModulatedRuns:
    """Run every condition of ``mods`` on the same noise, as one batched recurrence.

    ``h_t = relu(r * (h_{t-1} W_rec^T + s * d_t))`` with the drive ``d_t = x_t W_in^T`` computed
    once for all conditions; conditions are processed ``chunk`` at a time (each chunk is one
    (chunk * B, H) x (H, H) matmul per step). Equivalent to simulating each
    :func:`apply_modulation` copy on its own (tested; exactly equal for gains that are 0, 1 or
    powers of two, where the scaling is exact in floating point).

    Args:
        model: the nominal network.
        mods: (C, H) gains (:func:`stack_modulations`), or one (H,) condition.
        noise: shared inputs and start states.
        directions: optional (P, H) directions to project every state on.
        keep_active: also return the (C, B, T, H) activity masks.
        keep_hidden: also return the (C, B, T, H) states (memory: 4 C B T H bytes).
        chunk: conditions per batched recurrence.
    """
    w = _weights(model)
    m = _check_modulation(mods, w.hidden_size)
    chunk = _positive_int(chunk, "chunk")
    x, h0 = noise.inputs, noise.h0
    if x.ndim != 3 or x.shape[2] != w.input_size or h0.shape != (x.shape[0], w.hidden_size):
        raise ValueError(f"noise must have inputs (B, T, D={w.input_size}) and h0 (B, H={w.hidden_size}), "
                         f"got {tuple(x.shape)} and {tuple(h0.shape)}")
    n_cond, (n_traj, n_steps, _) = m.activity.shape[0], x.shape
    H = w.hidden_size
    w_rec_t = torch.from_numpy(np.ascontiguousarray(w.W_rec.T))
    w_out_t = torch.from_numpy(np.ascontiguousarray(w.W_out.T))
    drive = x.float() @ torch.from_numpy(w.W_in).T  # (B, T, H), shared by every condition
    dirs = None
    if directions is not None:
        dirs = torch.as_tensor(np.atleast_2d(np.asarray(directions, dtype=np.float32)))
        if dirs.ndim != 2 or dirs.shape[1] != H:
            raise ValueError(f"directions must be (P, H={H}), got {tuple(dirs.shape)}")
    dominant = np.empty((n_cond, n_traj, n_steps), dtype=np.int8)
    projection = None if dirs is None else np.empty((n_cond, n_traj, n_steps, dirs.shape[0]), dtype=np.float32)
    active = np.empty((n_cond, n_traj, n_steps, H), dtype=bool) if keep_active else None
    hidden = np.empty((n_cond, n_traj, n_steps, H), dtype=np.float32) if keep_hidden else None
    max_norm = np.empty(n_cond, dtype=np.float64)
    for first in range(0, n_cond, chunk):
        last = min(n_cond, first + chunk)
        r = torch.from_numpy(m.activity[first:last])[:, None, :]  # (c, 1, H)
        s = torch.from_numpy(m.input[first:last])[:, None, :]
        all_s_one = bool((s == 1).all())
        h = h0.float()[None].expand(last - first, n_traj, H).contiguous()
        dom = torch.empty(last - first, n_traj, n_steps, dtype=torch.int8)
        proj = None if dirs is None else torch.empty(last - first, n_traj, n_steps, dirs.shape[0])
        top = torch.zeros(last - first)
        for t in range(n_steps):
            pre = torch.matmul(h, w_rec_t)
            pre += drive[None, :, t] if all_s_one else drive[None, :, t] * s
            h = pre.mul_(r).relu_()
            top = torch.maximum(top, h.norm(dim=-1).amax(dim=-1))
            logits = torch.matmul(h, w_out_t)
            dom[:, :, t] = torch.where(torch.isfinite(logits).all(-1), logits.argmax(-1), NONFINITE_OUTPUT)
            if proj is not None:
                proj[:, :, t] = torch.matmul(h, dirs.T)
            if active is not None:
                active[first:last, :, t] = (h > 0).numpy()
            if hidden is not None:
                hidden[first:last, :, t] = h.numpy()
        dominant[first:last] = dom.numpy()
        max_norm[first:last] = top.double().numpy()
        if projection is not None:
            projection[first:last] = proj.numpy()
    return ModulatedRuns(dominant, projection, active, hidden, max_norm)


def simulate_reference(weights: RNNWeights, inputs: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow reference for tests: one trajectory at a time, float64 NumPy, on given (modified) weights.

    Args:
        weights: e.g. an :func:`apply_modulation` copy.
        inputs: (B, T, D) noise.
        h0: (B, H) start states.

    Returns:
        ``(hidden (B, T, H) float64, dominant (B, T) int64)``.
    """
    W_in, W_rec, W_out = (np.asarray(a, dtype=np.float64) for a in weights)
    inputs, h0 = np.asarray(inputs, dtype=np.float64), np.asarray(h0, dtype=np.float64)
    hidden = np.empty(inputs.shape[:2] + (W_rec.shape[0],))
    for b in range(inputs.shape[0]):
        h = h0[b]
        for t in range(inputs.shape[1]):
            h = np.maximum(W_rec @ h + W_in @ inputs[b, t], 0.0)
            hidden[b, t] = h
    return hidden, (hidden @ W_out.T).argmax(-1)


# =========================================================================== switches and dwell times


def carried_outputs(dominant: np.ndarray, outputs: Sequence[int]) -> np.ndarray:
    """The last tracked output seen up to each step (-1 before the first).

    Args:
        dominant: (..., T) argmax outputs.
        outputs: the tracked outputs; steps at any other output keep the previous tracked one
            (a rare output passed during a transition is not a switch).

    Returns:
        (..., T) int64.
    """
    d = np.asarray(dominant).astype(np.int64)
    tracked = np.isin(d, np.asarray(outputs, dtype=np.int64))
    steps = np.broadcast_to(np.arange(d.shape[-1]), d.shape)
    last = np.maximum.accumulate(np.where(tracked, steps, -1), axis=-1)
    return np.where(last >= 0, np.take_along_axis(d, np.maximum(last, 0), axis=-1), -1)


def tracked_outputs(dominant: np.ndarray, n_outputs: int, min_occupancy: float = MIN_OCCUPANCY) -> tuple[int, ...]:
    """Outputs shown at least ``min_occupancy`` of the time in ``dominant`` (any shape).

    Raises:
        NonFiniteStatesError: ``dominant`` marks non-finite states (-1): they have no output.
    """
    d = np.asarray(dominant)
    if np.any(d == NONFINITE_OUTPUT):
        mask = (d == NONFINITE_OUTPUT).reshape(-1, d.shape[-1]) if d.ndim else np.zeros((0, 0), bool)
        raise NonFiniteStatesError("the run whose outputs are tracked", NonFiniteStates.from_mask(mask))
    d = d.ravel()
    freq = np.bincount(d.astype(np.int64), minlength=n_outputs) / max(d.size, 1)
    out = tuple(int(k) for k in np.flatnonzero(freq >= min_occupancy))
    if len(out) < 2:
        raise ValueError(f"fewer than two outputs shown >= {min_occupancy:.0%} of the time (frequencies {np.round(freq, 3).tolist()})")
    return out


def transition_context(dominant: np.ndarray, outputs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For each state of a run: the tracked output it is in, and the one it will switch to next.

    Args:
        dominant: (N,) argmax outputs along one run.
        outputs: tracked outputs (:func:`carried_outputs`).

    Returns:
        ``(carried (N,), next_output (N,))`` int64; ``next_output`` is -1 after the last switch.
    """
    carried = carried_outputs(np.asarray(dominant)[None], outputs)[0]
    n = carried.size
    change = np.flatnonzero((carried[1:] != carried[:-1]) & (carried[:-1] >= 0)) + 1  # first step in the new output
    nxt = np.full(n, -1, dtype=np.int64)
    pos = np.searchsorted(change, np.arange(n), side="right")  # index of the next change after t
    has = pos < change.size
    nxt[has] = carried[change[pos[has]]]
    return carried, nxt


class SwitchStats(NamedTuple):
    """Switching of C conditions (measured after ``settle`` steps).

    Fields:
        transitions: (S, 2) the listed transitions (source, target).
        events: (C, S) number of switches of each transition.
        exposure: (C, S) steps spent in each transition's source output (steps that could be
            followed by a switch).
        hazard: (C, S) events / exposure (NaN where the source output was never visited).
        switches: (C,) switches between any two tracked outputs.
        rate: (C,) switches per step (all tracked outputs; a trajectory's first step is not a switch).
        mean_dwell: (C,) steps in tracked outputs per switch: the maximum-likelihood mean dwell
            time of a geometric dwell (inf where nothing switched).
        occupancy: (C, K) fraction of steps at each argmax output.
        events_traj, exposure_traj: (C, B, S) ``events`` and ``exposure`` of each trajectory
            (for :func:`bootstrap_reduction`); None if not computed.
    """

    transitions: np.ndarray
    events: np.ndarray
    exposure: np.ndarray
    hazard: np.ndarray
    switches: np.ndarray
    rate: np.ndarray
    mean_dwell: np.ndarray
    occupancy: np.ndarray
    events_traj: np.ndarray | None = None
    exposure_traj: np.ndarray | None = None


def switch_stats(
    dominant: np.ndarray,
    transitions: Sequence[tuple[int, int]],
    outputs: Sequence[int],
    n_outputs: int,
    settle: int = 0,
) -> SwitchStats:
    """Count switches between tracked outputs per condition.

    Args:
        dominant: (C, B, T) argmax outputs (:attr:`ModulatedRuns.dominant`).
        transitions: (source, target) pairs whose events and hazards are reported.
        outputs: tracked outputs (:func:`carried_outputs`).
        n_outputs: K.
        settle: steps discarded first (the intervention starts at step 0; its effect is measured
            once the network has settled under it).
    """
    d = np.asarray(dominant)
    if d.ndim != 3:
        raise ValueError(f"dominant must be (C, B, T), got {d.shape}")
    if not 0 <= settle < d.shape[2] - 1:
        raise ValueError(f"settle must be in [0, T - 1) = [0, {d.shape[2] - 1}), got {settle}")
    tr = np.asarray(transitions, dtype=np.int64).reshape(-1, 2)
    d = d[:, :, settle:]
    c = carried_outputs(d, outputs)
    prev, nxt = c[:, :, :-1], c[:, :, 1:]
    valid = prev >= 0
    switch = valid & (nxt != prev)
    events_traj = np.stack([((prev == a) & (nxt == b)).sum(axis=2) for a, b in tr], axis=2)  # (C, B, S)
    exposure_traj = np.stack([(prev == a).sum(axis=2) for a, _ in tr], axis=2)
    events, exposure = events_traj.sum(axis=1), exposure_traj.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(exposure > 0, events / np.maximum(exposure, 1), np.nan)
        n_sw = switch.sum(axis=(1, 2))
        steps = valid.sum(axis=(1, 2))
        mean_dwell = np.where(n_sw > 0, steps / np.maximum(n_sw, 1), np.inf)
    occupancy = np.stack([(d == k).mean(axis=(1, 2)) for k in range(n_outputs)], axis=1)
    return SwitchStats(tr, events, exposure, hazard, n_sw, n_sw / (d.shape[1] * (d.shape[2] - 1)), mean_dwell, occupancy,
                       events_traj, exposure_traj)


def pooled_reduction(stats: SwitchStats, reference: int = 0, columns: Sequence[int] | None = None) -> np.ndarray:
    """Reduction of the transition hazard relative to a reference condition, pooled over transitions.

    ``1 - sum_s events[c, s] / sum_s hazard[ref, s] * exposure[c, s]``: the observed switches
    against those expected if each transition kept its reference hazard given the time the
    condition spent in its source output. 1: no switch at all; 0: unchanged; negative: more
    switching. NaN where the condition never visits any source output.

    Args:
        stats: switch statistics of C conditions.
        reference: index of the reference (nominal) condition.
        columns: transitions (columns of ``stats``) to pool; default all.

    Returns:
        (C,) float64.
    """
    cols = list(range(stats.events.shape[1])) if columns is None else list(columns)
    ref = np.nan_to_num(stats.hazard[reference, cols])
    expected = (stats.exposure[:, cols] * ref[None, :]).sum(axis=1)
    observed = stats.events[:, cols].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, 1.0 - observed / np.where(expected > 0, expected, 1.0), np.nan)


def bootstrap_reduction(
    stats: SwitchStats,
    generator: torch.Generator,
    n_boot: int = 1000,
    reference: int = 0,
    columns: Sequence[int] | None = None,
) -> np.ndarray:
    """Bootstrap of :func:`pooled_reduction` over trajectories: (n_boot, C).

    Trajectories are resampled with replacement, the same draw for every condition (they share
    their noise, so the comparison with the reference stays paired), and the reference hazards
    are re-estimated in every resample. Resampling whole trajectories keeps bursts of switching
    within a trajectory together, which a Poisson count would treat as independent.
    """
    if stats.events_traj is None:
        raise ValueError("stats has no per-trajectory counts")
    n_boot = _positive_int(n_boot, "n_boot")
    cols = list(range(stats.events.shape[1])) if columns is None else list(columns)
    ev = stats.events_traj[:, :, cols].astype(np.float64)  # (C, B, S)
    ex = stats.exposure_traj[:, :, cols].astype(np.float64)
    n_traj = ev.shape[1]
    idx = torch.randint(n_traj, (n_boot, n_traj), generator=generator).numpy()
    counts = np.zeros((n_boot, n_traj))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)  # (n_boot, B) multiplicities
    ev_b = np.einsum("nb,cbs->ncs", counts, ev)
    ex_b = np.einsum("nb,cbs->ncs", counts, ex)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.nan_to_num(ev_b[:, reference] / ex_b[:, reference])  # (n_boot, S)
        expected = (ex_b * ref[:, None, :]).sum(axis=2)
        return np.where(expected > 0, 1.0 - ev_b.sum(axis=2) / np.where(expected > 0, expected, 1.0), np.nan)


def dwell_times(dominant: np.ndarray, outputs: Sequence[int]) -> np.ndarray:
    """Complete dwell times (steps between two consecutive switches) of (B, T) trajectories.

    Dwells cut by the start or end of a trajectory are left out (they are censored).

    Returns:
        (n,) int64 dwell lengths, trajectory by trajectory.
    """
    c = carried_outputs(np.asarray(dominant), outputs)
    if c.ndim != 2:
        raise ValueError(f"dominant must be (B, T), got {np.asarray(dominant).shape}")
    traj, step = np.nonzero((c[:, 1:] != c[:, :-1]) & (c[:, :-1] >= 0))  # row-major: sorted by trajectory, then step
    same = traj[1:] == traj[:-1]
    return np.diff(step)[same].astype(np.int64)


# =========================================================================== identification


def preactivations(model: NoiseRNN | RNNWeights, prev_hidden: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """z_t = W_rec h_{t-1} + W_in x_t, the pre-activation that produced h_t = relu(z_t).

    Args:
        model: the network.
        prev_hidden: (N, H) states h_{t-1} (``RecordedRun.prev_hidden``).
        inputs: (N, D) inputs x_t (``RecordedRun.inputs``).

    Returns:
        (N, H) float64.
    """
    w = _weights(model)
    prev_hidden, inputs = np.asarray(prev_hidden, dtype=np.float64), np.asarray(inputs, dtype=np.float64)
    if prev_hidden.ndim != 2 or inputs.ndim != 2 or prev_hidden.shape[0] != inputs.shape[0]:
        raise ValueError(f"prev_hidden (N, H) and inputs (N, D) must be 2-D with equal N, got {prev_hidden.shape}, {inputs.shape}")
    if prev_hidden.shape[1] != w.hidden_size or inputs.shape[1] != w.input_size:
        raise ValueError(f"expected H={w.hidden_size}, D={w.input_size}, got {prev_hidden.shape[1]}, {inputs.shape[1]}")
    return prev_hidden @ w.W_rec.T.astype(np.float64) + inputs @ w.W_in.T.astype(np.float64)


class KickSignature(NamedTuple):
    """The kick signature of every neuron for one transition ``source -> target``.

    Fields:
        source, target: the transition.
        score: (H,) P(z > 0 | transition states leaving source towards target)
            - P(z > 0 | cluster states of source), in [-1, 1].
        ranking: (H,) neuron indices by decreasing score (ties: lower index first).
        active_cluster: (H,) P(z > 0) in the source cluster.
        active_kick_zone: (H,) P(z > 0) in kick-zone states leaving source towards target
            (NaN if there are none).
        active_transition: (H,) P(z > 0) in transition states leaving source towards target.
        n_cluster, n_kick_zone, n_transition: number of states of each kind.
    """

    source: int
    target: int
    score: np.ndarray
    ranking: np.ndarray
    active_cluster: np.ndarray
    active_kick_zone: np.ndarray
    active_transition: np.ndarray
    n_cluster: int
    n_kick_zone: int
    n_transition: int


def _context_masks(labels: np.ndarray, carried: np.ndarray, next_output: np.ndarray, source: int, target: int) -> dict[str, np.ndarray]:
    leaving = (carried == source) & (next_output == target)
    return {
        "cluster": (labels == regions.CLUSTER) & (carried == source),
        "kick_zone": (labels == regions.KICK_ZONE) & leaving,
        "transition": (labels == regions.TRANSITION) & leaving,
        "target_cluster": (labels == regions.CLUSTER) & (carried == target),
    }


def kick_signature(
    preact: np.ndarray,
    labels: regions.RegionLabels | np.ndarray,
    carried: np.ndarray,
    next_output: np.ndarray,
    source: int,
    target: int,
) -> KickSignature:
    """Score every neuron for gating ``source -> target`` (definition: module docstring, step 1).

    Args:
        preact: (N, H) pre-activations along a run (:func:`preactivations`).
        labels: region labels of the run's states (:func:`hmmrnn.regions.classify_regions`).
        carried, next_output: (N,) from :func:`transition_context`.
        source, target: the transition.

    Raises:
        ValueError: if the run has no cluster state of ``source`` or no transition state
            leaving it towards ``target`` (run longer, or check the transition exists).
    """
    z = np.asarray(preact)
    codes = labels.labels if isinstance(labels, regions.RegionLabels) else np.asarray(labels)
    if z.ndim != 2 or not (codes.shape == np.shape(carried) == np.shape(next_output) == (z.shape[0],)):
        raise ValueError(f"preact must be (N, H) and labels, carried, next_output (N,); got {z.shape}, "
                         f"{codes.shape}, {np.shape(carried)}, {np.shape(next_output)}")
    if source == target:
        raise ValueError(f"source and target must differ, got {source} -> {target}")
    masks = _context_masks(codes, np.asarray(carried), np.asarray(next_output), source, target)
    for key in ("cluster", "transition"):
        if not masks[key].any():
            raise ValueError(f"the run has no {key.replace('_', '-')} state for the transition {source} -> {target}")
    on = z > 0
    p_cl = on[masks["cluster"]].mean(axis=0)
    p_tr = on[masks["transition"]].mean(axis=0)
    p_kz = on[masks["kick_zone"]].mean(axis=0) if masks["kick_zone"].any() else np.full(z.shape[1], np.nan)
    score = p_tr - p_cl
    ranking = np.lexsort((np.arange(score.size), -score))
    return KickSignature(int(source), int(target), score, ranking, p_cl, p_kz, p_tr,
                         int(masks["cluster"].sum()), int(masks["kick_zone"].sum()), int(masks["transition"].sum()))


PROFILE_CATEGORIES: tuple[str, ...] = ("cluster (source)", "kick-zone", "transition", "cluster (target)")
"""The states a kick neuron's profile is taken over, in the order of a transition."""


class RegionProfiles(NamedTuple):
    """Pre-activations of some neurons in the four kinds of state of one transition a -> b.

    Fields:
        categories: :data:`PROFILE_CATEGORIES`: cluster states of a, kick-zone and transition
            states leaving a towards b, cluster states of b.
        neurons: (n,) the neurons.
        mean: (n, 4) mean pre-activation in each category (NaN where a category is empty).
        low, high: (n, 4) the ``percentiles`` of the pre-activation in each category.
        counts: (4,) states per category.
    """

    categories: tuple[str, ...]
    neurons: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    counts: np.ndarray


def region_profiles(
    preact: np.ndarray,
    labels: regions.RegionLabels | np.ndarray,
    carried: np.ndarray,
    next_output: np.ndarray,
    source: int,
    target: int,
    neurons: Sequence[int],
    percentiles: tuple[float, float] = (10.0, 90.0),
) -> RegionProfiles:
    """Mean and percentiles of the pre-activation of ``neurons`` along a transition (paper: strongly
    negative in clusters, near zero in kick-zones, positive in transitions).

    Args:
        preact: (N, H) pre-activations of a run; labels, carried, next_output: as in :func:`kick_signature`.
        source, target: the transition.
        neurons: the neurons profiled.
        percentiles: the band reported beside the mean.
    """
    z = np.asarray(preact)
    codes = labels.labels if isinstance(labels, regions.RegionLabels) else np.asarray(labels)
    idx = _neurons(neurons, z.shape[1])
    masks = _context_masks(codes, np.asarray(carried), np.asarray(next_output), source, target)
    keys = ("cluster", "kick_zone", "transition", "target_cluster")
    n, c = idx.size, len(keys)
    mean, low, high = (np.full((n, c), np.nan) for _ in range(3))
    counts = np.array([int(masks[k].sum()) for k in keys])
    for j, key in enumerate(keys):
        if counts[j]:
            v = z[masks[key]][:, idx]
            mean[:, j] = v.mean(axis=0)
            low[:, j], high[:, j] = np.percentile(v, percentiles, axis=0)
    return RegionProfiles(PROFILE_CATEGORIES, idx, mean, low, high, counts)


class GroupSizeSearch(NamedTuple):
    """Silencing the top-k of each ranking, k = 1..max_size (definition: module docstring, step 2).

    Fields:
        sizes: (M,) k = 1..max_size.
        reduction: (M,) pooled hazard reduction when the top-k of every ranking are silenced together.
        reduction_low: (M,) its one-sided lower confidence bound (the ``1 - level`` quantile of
            a bootstrap over trajectories, :func:`bootstrap_reduction`).
        reduction_each: (S, M) reduction of transition s's own hazard when only its top-k are silenced.
        rate: (M,) switches per step with every top-k silenced (``nominal_rate`` without).
        nominal_rate: switches per step of the nominal network.
        nominal_hazard: (S,) hazards of the nominal network.
        size: the chosen k.
        reached: whether ``reduction_low[size - 1] >= target``.
        target: the required reduction.
        level: confidence level of ``reduction_low``.
    """

    sizes: np.ndarray
    reduction: np.ndarray
    reduction_low: np.ndarray
    reduction_each: np.ndarray
    rate: np.ndarray
    nominal_rate: float
    nominal_hazard: np.ndarray
    size: int
    reached: bool
    target: float
    level: float


def group_size_search(
    model: NoiseRNN | RNNWeights,
    rankings: Sequence[np.ndarray],
    transitions: Sequence[tuple[int, int]],
    noise: SharedNoise,
    outputs: Sequence[int],
    generator: torch.Generator,
    max_size: int = 12,
    target: float = 0.95,
    settle: int = 100,
    level: float = 0.95,
    n_boot: int = 1000,
) -> GroupSizeSearch:
    """Choose the group size: the smallest k whose joint silencing cuts the hazard by >= ``target``,
    with confidence ``level`` (the lower bound of a bootstrap over trajectories, not the point
    estimate: the smallest k that *just* passes on one noise sample would, by selection, often
    fall short on fresh noise).

    One batched simulation: the nominal network, the top-k of all rankings silenced together
    (k = 1..max_size) and, with several transitions, each ranking's top-k alone.

    Args:
        model: the network.
        rankings: one (H,) ranking per transition (``KickSignature.ranking``).
        transitions: the (source, target) pairs, in the order of ``rankings``.
        noise: shared noise and start states.
        outputs: tracked outputs.
        generator: torch generator for the bootstrap.
        max_size: largest k tried.
        target: required pooled hazard reduction, in (0, 1].
        settle: steps discarded before counting switches.
        level: one-sided confidence level of the bound compared with ``target``.
        n_boot: bootstrap resamples.
    """
    w = _weights(model)
    max_size = _positive_int(max_size, "max_size")
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if len(rankings) != len(transitions) or not rankings:
        raise ValueError("give one ranking per transition")
    max_size = min(max_size, w.hidden_size // len(rankings))
    H = w.hidden_size
    mods = [modulation(H)]
    for k in range(1, max_size + 1):
        union = np.unique(np.concatenate([np.asarray(r)[:k] for r in rankings]))
        mods.append(modulation(H, union, 0.0))
    if len(rankings) > 1:
        for r in rankings:
            mods += [modulation(H, np.asarray(r)[:k], 0.0) for k in range(1, max_size + 1)]
    runs = simulate_modulations(w, stack_modulations(mods), noise)
    stats = switch_stats(runs.dominant, transitions, outputs, w.output_size, settle)
    pooled = pooled_reduction(stats)
    joint = pooled[1 : max_size + 1]
    boot = bootstrap_reduction(stats, generator, n_boot)[:, 1 : max_size + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a k whose resamples are all NaN gets NaN
        low = np.nanquantile(np.where(np.isfinite(boot), boot, np.nan), 1.0 - level, axis=0)
    if len(rankings) > 1:
        each = np.stack([pooled_reduction(stats, columns=[s])[1 + max_size * (s + 1) : 1 + max_size * (s + 2)]
                         for s in range(len(rankings))])
    else:
        each = joint[None].copy()
    ok = np.flatnonzero(np.nan_to_num(low, nan=-np.inf) >= target)
    size = int(ok[0] + 1) if ok.size else int(np.argmax(np.nan_to_num(low, nan=-np.inf)) + 1)
    return GroupSizeSearch(np.arange(1, max_size + 1), joint, low, each, stats.rate[1 : max_size + 1], float(stats.rate[0]),
                           stats.hazard[0].copy(), size, bool(ok.size), float(target), float(level))


class KickSearch(NamedTuple):
    """Result of :func:`find_kick_neurons`: the groups and everything they were found from.

    Fields:
        transitions: the (source, target) pairs, one group each.
        groups: one (k,) int64 array per transition: the top-k of its ranking.
        signatures: one :class:`KickSignature` per transition.
        search: the group-size search.
        outputs: the tracked outputs.
        run: the recorded nominal run.
        labels: its region labels.
        residency: its residency times.
        preact: (N, H) its pre-activations.
        carried, next_output: (N,) :func:`transition_context` of the run.
        criterion: the rule, in words.
    """

    transitions: tuple[tuple[int, int], ...]
    groups: tuple[np.ndarray, ...]
    signatures: tuple[KickSignature, ...]
    search: GroupSizeSearch
    outputs: tuple[int, ...]
    run: regions.RecordedRun
    labels: regions.RegionLabels
    residency: regions.ResidencyResult
    preact: np.ndarray
    carried: np.ndarray
    next_output: np.ndarray
    criterion: str

    def to_dict(self, digits: int = 3) -> dict:
        """JSON-ready summary: groups, criterion, scores of every neuron per transition."""
        key = [f"{a}->{b}" for a, b in self.transitions]
        return {
            "groups": [g.tolist() for g in self.groups],
            "transitions": [list(t) for t in self.transitions],
            "group_size": self.search.size,
            "reduction": round(float(self.search.reduction[self.search.size - 1]), digits),
            "reduction_low": round(float(self.search.reduction_low[self.search.size - 1]), digits),
            "level": self.search.level,
            "reached": self.search.reached,
            "target": self.search.target,
            "outputs": list(self.outputs),
            "criterion": self.criterion,
            "prefix_reduction": [round(float(v), digits) for v in self.search.reduction],
            "scores": {k: [round(float(v), digits) for v in s.score] for k, s in zip(key, self.signatures)},
            "ranking": {k: s.ranking[: 2 * self.search.size].tolist() for k, s in zip(key, self.signatures)},
        }


CRITERION = ("kick signature s_i = P(z_i > 0 | transition states leaving a towards b) - P(z_i > 0 | cluster states of a) "
             "ranks the neurons for each transition a -> b; the group size is the smallest k for which silencing the top-k "
             "of every ranking together cuts the transition hazard by at least {target:.0%} with {level:.0%} confidence "
             "(pooled over the transitions, same noise as the nominal network, bootstrap over trajectories)")


def find_kick_neurons(
    model: NoiseRNN | RNNWeights,
    transitions: Sequence[tuple[int, int]],
    generator: torch.Generator,
    *,
    n_states: int = 5000,
    burn_in: int = 500,
    n_continuations: int = 20,
    max_steps: int = 60,
    n_traj: int = 32,
    n_steps: int = 1000,
    settle: int = 100,
    max_size: int = 12,
    target: float = 0.95,
    level: float = 0.95,
    outputs: Sequence[int] | None = None,
    noise_scale: float = 1.0,
) -> KickSearch:
    """Find one group of kick neurons per transition (the criterion of the module docstring).

    Steps: a recorded run of ``n_states`` states (:func:`hmmrnn.regions.recorded_run`), their
    residency times and regions (:func:`hmmrnn.regions.residency_times`, paper's thresholds),
    the kick signature of every neuron for each transition (:func:`kick_signature`), and the
    group size by batched silencing (:func:`group_size_search`) on ``n_traj`` trajectories of
    ``n_steps`` steps started from states of the run. Everything draws from ``generator`` in
    that order, so a seed fixes the result.

    Args:
        model: the network.
        transitions: (source, target) output pairs, e.g. ``[(0, 2), (2, 0)]`` for both
            directions of the two-state chain, ``[(0, 1)]`` for one transition of a 3-output net.
        generator: torch generator.
        n_states, burn_in, n_continuations, max_steps: the recorded run and its residency times.
        n_traj, n_steps, settle: the silencing simulations.
        max_size: largest group size tried.
        target: required hazard reduction.
        level: confidence with which the reduction must reach ``target`` (:func:`group_size_search`).
        outputs: tracked outputs (default: those shown >= 5 % of the time in the run).
        noise_scale: standard deviation of the input noise.
    """
    w = _weights(model)
    tr = tuple((int(a), int(b)) for a, b in transitions)
    if not tr:
        raise ValueError("give at least one transition (source, target)")
    for a, b in tr:
        if not (0 <= a < w.output_size and 0 <= b < w.output_size) or a == b:
            raise ValueError(f"transition {a} -> {b} is not a pair of two different outputs of a {w.output_size}-output network")
    net = NoiseRNN.from_weights(w)
    run = regions.recorded_run(net, n_states, generator, noise_scale=noise_scale, burn_in=burn_in)
    res = regions.residency_times(net, run.hidden, generator, n_continuations=n_continuations, max_steps=max_steps,
                                  noise_scale=noise_scale)
    labels = regions.classify_regions(res.rt, res.confidence)
    tracked = tuple(int(k) for k in outputs) if outputs is not None else tracked_outputs(run.outputs, w.output_size)
    for a, b in tr:
        if a not in tracked or b not in tracked:
            raise ValueError(f"transition {a} -> {b} involves an output that is not tracked (tracked: {tracked})")
    z = preactivations(w, run.prev_hidden, run.inputs)
    carried, nxt = transition_context(run.outputs, tracked)
    sigs = tuple(kick_signature(z, labels, carried, nxt, a, b) for a, b in tr)
    noise = shared_noise(w, n_traj, n_steps, generator, start_states=run.hidden, noise_scale=noise_scale)
    search = group_size_search(w, [s.ranking for s in sigs], tr, noise, tracked, generator, max_size, target, settle, level)
    groups = tuple(np.sort(s.ranking[: search.size]).astype(np.int64) for s in sigs)
    return KickSearch(tr, groups, sigs, search, tracked, run, labels, res, z, carried, nxt, CRITERION.format(target=target, level=level))


def subset_search(
    model: NoiseRNN | RNNWeights,
    candidates: Sequence[int],
    max_size: int,
    transitions: Sequence[tuple[int, int]],
    noise: SharedNoise,
    outputs: Sequence[int],
    settle: int = 100,
    chunk: int = 256,
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Silence every subset of ``candidates`` of size 1..``max_size`` (a pruned brute force).

    The paper silenced all C(150, 3) = 551,300 triplets; restricted to a short candidate list
    (e.g. the top of a kick-signature ranking) every subset fits in a few batched simulations.

    Returns:
        ``(subsets, reduction)``: the subsets (sorted tuples, by size then lexicographically) and
        (n,) the pooled hazard reduction of each (:func:`pooled_reduction`).
    """
    w = _weights(model)
    cand = _neurons(candidates, w.hidden_size, "candidates")
    max_size = _positive_int(max_size, "max_size")
    subsets = [tuple(int(i) for i in c) for k in range(1, min(max_size, cand.size) + 1)
               for c in itertools.combinations(np.sort(cand), k)]
    mods = stack_modulations([modulation(w.hidden_size)] + [modulation(w.hidden_size, s, 0.0) for s in subsets])
    runs = simulate_modulations(w, mods, noise, chunk=chunk)
    stats = switch_stats(runs.dominant, transitions, outputs, w.output_size, settle)
    return subsets, pooled_reduction(stats)[1:]


def single_neuron_effects(
    model: NoiseRNN | RNNWeights,
    transitions: Sequence[tuple[int, int]],
    noise: SharedNoise,
    outputs: Sequence[int],
    settle: int = 100,
    chunk: int = 256,
) -> np.ndarray:
    """(H,) pooled hazard reduction when each neuron alone is silenced (all H in one batch).

    The causal ranking of single neurons, for comparison with the kick signature: in a network
    whose kick groups are redundant, silencing one member does little.
    """
    w = _weights(model)
    mods = stack_modulations([modulation(w.hidden_size)] + [modulation(w.hidden_size, [i], 0.0) for i in range(w.hidden_size)])
    runs = simulate_modulations(w, mods, noise, chunk=chunk)
    return pooled_reduction(switch_stats(runs.dominant, transitions, outputs, w.output_size, settle))[1:]


def random_sets(hidden_size: int, size: int, n_draws: int, generator: torch.Generator, exclude: Sequence[int] = ()) -> np.ndarray:
    """(n_draws, size) random neuron sets, each drawn uniformly without replacement (sorted rows).

    Args:
        hidden_size: H.
        size: neurons per set.
        n_draws: number of sets.
        generator: torch generator.
        exclude: neurons never drawn.
    """
    pool = np.setdiff1d(np.arange(hidden_size), _neurons(exclude, hidden_size, "exclude"))
    size, n_draws = _positive_int(size, "size"), _positive_int(n_draws, "n_draws")
    if size > pool.size:
        raise ValueError(f"cannot draw {size} of {pool.size} neurons")
    order = torch.rand(n_draws, pool.size, generator=generator).argsort(dim=1)[:, :size].numpy()
    return np.sort(pool[order], axis=1)


# =========================================================================== connectivity


def group_weight_matrix(W_rec: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(G, G) mean recurrent weight from group j (columns) onto group i (rows); self-weights excluded.

    Args:
        W_rec: (H, H), ``W_rec[i, j]`` is the weight from neuron j onto neuron i.
        groups: G disjoint index lists.
    """
    W = np.asarray(W_rec, dtype=np.float64)
    out = np.empty((len(groups), len(groups)))
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            block = W[np.ix_(np.asarray(gi), np.asarray(gj))]
            if i == j:
                off = ~np.eye(len(gi), dtype=bool)
                out[i, j] = block[off].mean() if off.any() else np.nan
            else:
                out[i, j] = block.mean()
    return out


class ConnectivityTest(NamedTuple):
    """Within-group excitation and between-group inhibition against random groups.

    Fields:
        within: mean over groups of the mean within-group weight (self-weights excluded).
        between: mean of the mean weights between different groups.
        null_within, null_between: (n,) the same for random disjoint groups of the same sizes.
        p_within: P(null_within >= within) (one-sided, +1 corrected).
        p_between: P(null_between <= between).
    """

    within: float
    between: float
    null_within: np.ndarray
    null_between: np.ndarray
    p_within: float
    p_between: float


def _within_between(W: torch.Tensor, idx: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) within and between means for (n, sum(sizes)) drawn indices split into consecutive groups."""
    block = W[idx[:, :, None], idx[:, None, :]]  # (n, M, M)
    bounds = np.cumsum([0, *sizes])
    within, between = [], []
    for i in range(len(sizes)):
        for j in range(len(sizes)):
            b = block[:, bounds[i] : bounds[i + 1], bounds[j] : bounds[j + 1]]
            if i == j:
                k = sizes[i]
                within.append((b.sum(dim=(1, 2)) - b.diagonal(dim1=1, dim2=2).sum(-1)) / max(k * (k - 1), 1))
            else:
                between.append(b.mean(dim=(1, 2)))
    return torch.stack(within).mean(0), torch.stack(between).mean(0)


def connectivity_test(W_rec: np.ndarray, groups: Sequence[Sequence[int]], n_draws: int, generator: torch.Generator) -> ConnectivityTest:
    """Permutation test of the group connectivity (paper: excitation within, inhibition between).

    The null draws ``n_draws`` sets of disjoint random groups of the same sizes from all H neurons.
    """
    W = torch.as_tensor(np.asarray(W_rec, dtype=np.float64))
    sizes = [len(g) for g in groups]
    if len(groups) < 2 or min(sizes) < 2:
        raise ValueError("need at least two groups of at least two neurons")
    obs_idx = torch.as_tensor(np.concatenate([np.asarray(g) for g in groups]))[None]
    w_obs, b_obs = _within_between(W, obs_idx, sizes)
    draws = torch.rand(_positive_int(n_draws, "n_draws"), W.shape[0], generator=generator).argsort(dim=1)[:, : sum(sizes)]
    w_null, b_null = _within_between(W, draws, sizes)
    p_w = (1 + int((w_null >= w_obs).sum())) / (1 + n_draws)
    p_b = (1 + int((b_null <= b_obs).sum())) / (1 + n_draws)
    return ConnectivityTest(float(w_obs), float(b_obs), w_null.numpy(), b_null.numpy(), p_w, p_b)


class NoisePopulation(NamedTuple):
    """The noise-accumulation population of two kick groups A and B (paper: 70 neurons, 35/35).

    Fields:
        neurons: (n,) the population, sorted.
        drives: (n,) 0 where the neuron excites A and inhibits B, 1 for the reverse.
        projection: (2, H) mean incoming weight of A's and of B's neurons from each neuron:
            ``W_rec[A].mean(0)``, ``W_rec[B].mean(0)``.
        product: (H,) projection[0] * projection[1] (most negative: most opposite).
    """

    neurons: np.ndarray
    drives: np.ndarray
    projection: np.ndarray
    product: np.ndarray


def _population_from_projection(pa: torch.Tensor, pb: torch.Tensor, excluded: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``half`` most negative products p_a p_b on each side (p_a > 0 > p_b, then p_a < 0 < p_b).

    Works on (H,) or (n, H) projections. Returns ``(index, value)``, each (..., 2 * half): the
    chosen neurons and their products; ``value`` is +inf where a side has fewer than ``half``
    eligible neurons (those entries are fillers, not members).
    """
    prod = pa * pb
    index, value = [], []
    for side in (pa > 0, pa < 0):
        key = torch.where(side & (prod < 0) & ~excluded, prod, torch.full_like(prod, float("inf")))
        top = torch.topk(key, min(half, key.shape[-1]), dim=-1, largest=False)
        index.append(top.indices)
        value.append(top.values)
    return torch.cat(index, dim=-1), torch.cat(value, dim=-1)


def noise_population(W_rec: np.ndarray, groups: Sequence[Sequence[int]], size: int = 70) -> NoisePopulation:
    """The ``size`` neurons whose projections onto the two groups have the most opposite signs.

    Following the paper: p_A = mean of W_rec's rows of group A (the weight each neuron sends to
    A's neurons), p_B likewise; the ``size / 2`` neurons with the most negative p_A p_B among
    those with p_A > 0 > p_B (they drive A and inhibit B), and as many with p_B > 0 > p_A. Kick
    neurons themselves are excluded. If one side has fewer such neurons, it contributes what it has.
    """
    if len(groups) != 2:
        raise ValueError(f"the population is defined for two groups, got {len(groups)}")
    size = _positive_int(size, "size")
    if size % 2:
        raise ValueError(f"size must be even (split in two halves), got {size}")
    W = torch.as_tensor(np.asarray(W_rec, dtype=np.float64))
    pa, pb = W[np.asarray(groups[0])].mean(0), W[np.asarray(groups[1])].mean(0)
    excluded = torch.zeros(W.shape[0], dtype=torch.bool)
    excluded[np.concatenate([np.asarray(g) for g in groups])] = True
    idx, value = _population_from_projection(pa, pb, excluded, size // 2)
    idx = idx.numpy()[np.isfinite(value.numpy())]
    drives = (pa.numpy()[idx] < 0).astype(np.int64)
    order = np.argsort(idx)
    return NoisePopulation(idx[order], drives[order], torch.stack([pa, pb]).numpy(), (pa * pb).numpy())


class NoisePopulationTest(NamedTuple):
    """Is the population's opposite drive special to the kick groups?

    Fields:
        statistic: mean p_A p_B over the population (more negative: more opposite).
        null: (n,) the same statistic for the populations of random pairs of disjoint groups
            of the kick groups' sizes (the same selection rule).
        p_value: P(null <= statistic) (one-sided, +1 corrected).
        input_norm: mean norm of the population's W_in rows (how much noise it receives).
        null_input_norm: (n,) the same for random sets of the population's size.
        p_input: P(null_input_norm >= input_norm).
    """

    statistic: float
    null: np.ndarray
    p_value: float
    input_norm: float
    null_input_norm: np.ndarray
    p_input: float


def noise_population_test(
    weights: RNNWeights, groups: Sequence[Sequence[int]], population: NoisePopulation, n_draws: int, generator: torch.Generator
) -> NoisePopulationTest:
    """Compare the population with random groups (connectivity) and random sets (input weights)."""
    w = _weights(weights)
    n_draws = _positive_int(n_draws, "n_draws")
    W = torch.as_tensor(np.asarray(w.W_rec, dtype=np.float64))
    sizes = [len(g) for g in groups]
    half = population.neurons.size // 2
    stat = float(population.product[population.neurons].mean())
    draws = torch.rand(n_draws, w.hidden_size, generator=generator).argsort(dim=1)[:, : sum(sizes)]
    pa = W[draws[:, : sizes[0]]].mean(1)
    pb = W[draws[:, sizes[0] :]].mean(1)
    excluded = torch.zeros(n_draws, w.hidden_size, dtype=torch.bool).scatter_(1, draws, True)
    _, value = _population_from_projection(pa, pb, excluded, max(half, 1))
    finite = torch.isfinite(value)
    null = (torch.where(finite, value, torch.zeros_like(value)).sum(1) / finite.sum(1).clamp_min(1)).numpy()
    norms = np.linalg.norm(np.asarray(w.W_in, dtype=np.float64), axis=1)
    sets = random_sets(w.hidden_size, population.neurons.size, n_draws, generator)
    null_norm = norms[sets].mean(1)
    obs_norm = float(norms[population.neurons].mean())
    return NoisePopulationTest(stat, null, (1 + int((null <= stat).sum())) / (1 + n_draws),
                               obs_norm, null_norm, (1 + int((null_norm >= obs_norm).sum())) / (1 + n_draws))


# =========================================================================== overshoot and eigenvalues


class ClusterAxis(NamedTuple):
    """The line through two cluster centroids: position 0 at cluster a, 1 at cluster b.

    Fields:
        pair: (a, b).
        origin: (H,) centroid of cluster a.
        direction: (H,) (c_b - c_a) / |c_b - c_a|^2, so that position = (h - origin) . direction.
    """

    pair: tuple[int, int]
    origin: np.ndarray
    direction: np.ndarray

    def position(self, hidden: np.ndarray) -> np.ndarray:
        """(..., H) states -> (...) positions along the axis."""
        return (np.asarray(hidden, dtype=np.float64) - self.origin) @ self.direction

    @property
    def offset(self) -> float:
        """origin . direction (position = projection on ``direction`` minus this)."""
        return float(self.origin @ self.direction)


def cluster_axis(hidden: np.ndarray, labels: regions.RegionLabels | np.ndarray, outputs: np.ndarray, pair: tuple[int, int]) -> ClusterAxis:
    """The axis between the centroids of the cluster states of outputs ``pair = (a, b)``.

    Args:
        hidden: (N, H) states of a nominal run.
        labels: their region labels.
        outputs: (N,) their argmax outputs.
        pair: (a, b).
    """
    codes = labels.labels if isinstance(labels, regions.RegionLabels) else np.asarray(labels)
    h = np.asarray(hidden, dtype=np.float64)
    cents = []
    for k in pair:
        sel = (codes == regions.CLUSTER) & (np.asarray(outputs) == k)
        if not sel.any():
            raise ValueError(f"no cluster state of output {k}")
        cents.append(h[sel].mean(0))
    diff = cents[1] - cents[0]
    return ClusterAxis((int(pair[0]), int(pair[1])), cents[0], diff / float(diff @ diff))


def switch_peaks(position: np.ndarray, dominant: np.ndarray, axis: ClusterAxis, outputs: Sequence[int], window: int = 20) -> np.ndarray:
    """How far trajectories go after each switch between the axis' two clusters.

    For a switch into b at step t the peak is max(position[t .. t + window - 1]) (1 = b's
    centroid); for a switch into a it is max(1 - position[...]) (1 = a's centroid). A peak well
    above the nominal network's is an overshoot past the target cluster. Switches closer than
    ``window`` to the end are skipped.

    Args:
        position: (B, T) positions along the axis.
        dominant: (B, T) argmax outputs.
        axis: the cluster axis.
        outputs: tracked outputs.
        window: steps after the switch searched for the peak.

    Returns:
        (n,) peaks, one per switch.
    """
    pos = np.asarray(position, dtype=np.float64)
    c = carried_outputs(np.asarray(dominant), outputs)
    a, b = axis.pair
    peaks = []
    for into, sign, shift in ((b, 1.0, 0.0), (a, -1.0, 1.0)):
        frm = a if into == b else b
        traj, step = np.nonzero((c[:, :-1] == frm) & (c[:, 1:] == into))
        step = step + 1
        ok = step + window <= pos.shape[1]
        if ok.any():
            seg = pos[traj[ok, None], step[ok, None] + np.arange(window)[None]]
            peaks.append((shift + sign * seg).max(axis=1))
    return np.concatenate(peaks) if peaks else np.zeros(0)


class SweepResult(NamedTuple):
    """Interventions on several neuron sets, each at every modulation factor, under shared noise.

    Fields:
        mus: (M,) modulation factors.
        names: (S,) a label per set.
        rate: (S, M) switches per step after ``settle`` (:class:`SwitchStats`).
        mean_dwell: (S, M) steps per switch after ``settle``.
        reduction: (S, M) pooled hazard reduction after ``settle`` (:func:`pooled_reduction`).
        peak: (S, M) mean :func:`switch_peaks` over all switches of the whole run (the first
            switches after the intervention starts included), NaN where there is none.
        beyond: (S, M) fraction of steps after ``settle`` whose axis position lies outside the
            nominal network's central 99 % (below its 0.5th or above its 99.5th percentile).
        runaway: (S, M) activity ran away (:meth:`ModulatedRuns.runaway`); rates and dwell
            times of such conditions only say that the argmax got stuck.
        nominal_rate: switches per step of the nominal network.
        nominal_peak: mean peak of the nominal network.
    """

    mus: np.ndarray
    names: tuple[str, ...]
    rate: np.ndarray
    mean_dwell: np.ndarray
    reduction: np.ndarray
    peak: np.ndarray
    beyond: np.ndarray
    runaway: np.ndarray
    nominal_rate: float
    nominal_peak: float


def intervention_sweep(
    model: NoiseRNN | RNNWeights,
    sets: Sequence[tuple[Sequence[int], str]],
    mus: Sequence[float],
    noise: SharedNoise,
    transitions: Sequence[tuple[int, int]],
    outputs: Sequence[int],
    axis: ClusterAxis,
    names: Sequence[str] | None = None,
    settle: int = 100,
    window: int = 20,
    chunk: int = 256,
) -> SweepResult:
    """Modulate each set by every mu (one batch with the nominal network, the same noise for all).

    Args:
        model: the nominal network.
        sets: (neurons, kind) pairs, ``kind`` ``"activity"`` or ``"input"`` (:func:`modulation`).
        mus: modulation factors (e.g. 0, 0.25, ..., 2).
        noise: shared noise and start states.
        transitions: transitions whose hazards are pooled in ``reduction``.
        outputs: tracked outputs.
        axis: the cluster axis for the overshoot measures.
        names: a label per set (default ``"set 0"``, ...).
        settle: steps discarded before the rates, dwell times and ``beyond``.
        window: steps after a switch searched for its peak.
        chunk: conditions per batched recurrence.
    """
    w = _weights(model)
    mus = np.asarray(mus, dtype=np.float64)
    names = tuple(names) if names is not None else tuple(f"set {i}" for i in range(len(sets)))
    if len(names) != len(sets) or not len(sets):
        raise ValueError("give one name per set and at least one set")
    mods = [modulation(w.hidden_size)] + [modulation(w.hidden_size, s, mu, kind) for s, kind in sets for mu in mus]
    runs = simulate_modulations(w, stack_modulations(mods), noise, directions=axis.direction[None], chunk=chunk)
    stats = switch_stats(runs.dominant, transitions, outputs, w.output_size, settle)
    red = pooled_reduction(stats)
    pos = runs.projection[..., 0].astype(np.float64) - axis.offset
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = np.percentile(pos[0, :, settle:], [0.5, 99.5])
        beyond = ((pos[:, :, settle:] < lo) | (pos[:, :, settle:] > hi) | ~np.isfinite(pos[:, :, settle:])).mean(axis=(1, 2))
        peaks = []
        for c in range(len(mods)):
            p = switch_peaks(pos[c], runs.dominant[c], axis, outputs, window)
            p = p[np.isfinite(p)]
            peaks.append(p.mean() if p.size else np.nan)
    peaks = np.asarray(peaks)
    shape = (len(sets), mus.size)
    return SweepResult(mus, names, stats.rate[1:].reshape(shape), stats.mean_dwell[1:].reshape(shape), red[1:].reshape(shape),
                       peaks[1:].reshape(shape), beyond[1:].reshape(shape), runs.runaway()[1:].reshape(shape),
                       float(stats.rate[0]), float(peaks[0]))


def spread(values: np.ndarray, q: tuple[float, float] = (5.0, 95.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and the ``q`` percentiles over axis 0, ignoring NaN (e.g. runaway conditions).

    Args:
        values: (n, ...) e.g. a measure of n random control sets at each modulation factor.

    Returns:
        ``(median, low, high)``, each of shape ``values.shape[1:]``; NaN where no value is finite.
    """
    v = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN is the answer
        med = np.nanmedian(v, axis=0)
        low, high = np.nanpercentile(v, list(q), axis=0)
    return med, low, high


class NearSwitchEigs(NamedTuple):
    """Near-critical complex eigenvalue pairs of the local Jacobians diag(m_t) W_rec' around switches.

    Fields:
        offsets: (2w + 1,) steps relative to the switch (0: first step in the new output).
        counts: (n, 2w + 1) pairs at each step around n switches (a sample if there are more).
        anywhere: (m,) pairs at steps drawn uniformly from the whole run.
        n_switches: all switches in the run.
    """

    offsets: np.ndarray
    counts: np.ndarray
    anywhere: np.ndarray
    n_switches: int

    @property
    def per_switch(self) -> np.ndarray:
        """(n,) pairs summed over the 2w + 1 steps around each switch."""
        return self.counts.sum(axis=1)


def complex_pairs_near_switches(
    W_rec: np.ndarray,
    active: np.ndarray,
    dominant: np.ndarray,
    outputs: Sequence[int],
    generator: torch.Generator,
    window: int = 10,
    max_switches: int = 40,
    n_anywhere: int = 300,
    re_tol: float = 0.1,
    im_min: float = 0.05,
) -> NearSwitchEigs:
    """Count near-critical complex pairs (:func:`hmmrnn.dynamics.eigen_counts`) around switches.

    Every step within ``window`` of a switch (switches too close to either end of a trajectory
    are skipped) gets the eigenvalues of its local Jacobian diag(m_t) W_rec (on the active
    block, :func:`hmmrnn.dynamics.local_eigvals`), for at most ``max_switches`` switches drawn
    at random; ``n_anywhere`` steps drawn from the whole run give the baseline.

    Args:
        W_rec: (H, H) recurrent weights of the (modified) network, ``apply_modulation(...).W_rec``.
        active: (B, T, H) activity masks of its run (``ModulatedRuns.active[c]``).
        dominant: (B, T) its argmax outputs.
        outputs: tracked outputs.
        generator: torch generator for the samples.
        window: w, steps on either side of a switch.
        max_switches: switches analysed at most.
        n_anywhere: baseline steps.
        re_tol, im_min: the near-critical criterion on the Mobius image (paper: 0.1 and 0.05).
    """
    act = np.asarray(active, dtype=bool)
    if act.ndim != 3 or np.shape(dominant) != act.shape[:2]:
        raise ValueError(f"active must be (B, T, H) and dominant (B, T), got {act.shape} and {np.shape(dominant)}")
    B, T, H = act.shape
    W = np.asarray(W_rec, dtype=np.float64)
    c = carried_outputs(np.asarray(dominant), outputs)
    sw_b, sw_t = np.nonzero((c[:, 1:] != c[:, :-1]) & (c[:, :-1] >= 0))
    sw_t = sw_t + 1
    n_switches = int(sw_t.size)
    ok = (sw_t - window >= 0) & (sw_t + window < T)
    sw_b, sw_t = sw_b[ok], sw_t[ok]
    pick = torch.randperm(sw_t.size, generator=generator)[:max_switches].numpy()
    sw_b, sw_t = sw_b[np.sort(pick)], sw_t[np.sort(pick)]
    offsets = np.arange(-window, window + 1)

    def pairs(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        return eigen_counts(local_eigvals(W, act[rows, cols]), re_tol, im_min)[1].astype(np.int64)

    steps = sw_t[:, None] + offsets[None]
    counts = pairs(np.repeat(sw_b, offsets.size), steps.ravel()).reshape(sw_t.size, offsets.size)
    flat = torch.randperm(B * T, generator=generator)[:n_anywhere].numpy()
    return NearSwitchEigs(offsets, counts, pairs(flat // T, flat % T), n_switches)
