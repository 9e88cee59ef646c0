"""Is the output an HMM? Whole-sequence tests of a network against its target HMM.

The paper judges a network by one-step statistics (marginals, the output transition matrix,
lability). This module asks about the whole sequence distribution, with every number set
beside the same number for samples of the HMM itself (the *control*: what a perfect
emulator gives at the same sample size):

* **likelihood** -- the per-step log-loss ``-log P_HMM(o_1..o_L) / L`` of network
  sequences under the true HMM against that of HMM sequences (:func:`likelihood_gap`), and
  the HMM's entropy rate, bracketed exactly (:func:`entropy_rate_bounds`);
* **blocks** -- the distribution of n consecutive outputs against the HMM's exact one
  (:func:`block_probabilities`), by the plug-in divergence ``KL(empirical || exact)``
  corrected by the control's value (:func:`compare_blocks`);
* **dwell times** -- the lengths of runs of one output, against their exact distribution
  (:func:`dwell_time_distribution`, :func:`expected_run_counts`; :func:`compare_dwells`);
* **structure** -- HMMs re-fitted to the network's output (:mod:`hmmrnn.refit`): how much
  better the best re-fitted HMM explains held-out network sequences than the true HMM does
  (:func:`structure_gain`).

A network gets one of three verdicts (:func:`verdict`; the rule and its thresholds,
:data:`RULE`, were fixed before any network was analysed). Notation: ``M`` hidden states,
``K`` outputs, ``P`` the stationary distribution of the hidden chain, ``D_k`` the diagonal
matrix of the probabilities of emitting output k (``D_k = diag(emission[:, k])``);
sequences are integer arrays of shape (n, L).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy.stats import norm

from .hmm import (
    HMM,
    log_likelihood,
    output_marginals,
    output_transition_matrix,
    sample,
    stationary_distribution,
    step_log_likelihoods,
)
from .metrics import emission_statistics, fit_checks, frequent_outputs, transition_matrix_error
from .refit import RefitResult, refit

__all__ = [
    "RATE_TOLERANCE",
    "DWELL_TOLERANCE",
    "MISMATCH_Z",
    "CONFIDENCE",
    "RULE",
    "VERDICTS",
    "LikelihoodGap",
    "prefix_log_loss",
    "likelihood_gap",
    "entropy_rate_bounds",
    "block_probabilities",
    "block_counts",
    "block_divergence",
    "block_divergences",
    "BlockComparison",
    "compare_blocks",
    "dwell_time_distribution",
    "mean_dwell_time",
    "expected_run_counts",
    "run_length_counts",
    "dwell_bins",
    "binned_distribution",
    "dwell_distances",
    "one_step_runs_at_switches",
    "DwellComparison",
    "compare_dwells",
    "structure_gain",
    "pair_checks",
    "Control",
    "make_control",
    "Assessment",
    "assess",
    "Verdict",
    "verdict",
]

# --------------------------------------------------------------------------- the decision rule

RATE_TOLERANCE = 0.01
"""Nats per step: the largest per-step likelihood gap, excess block divergence rate and
re-fit gain that still count as "the same process" (over 100 steps, a likelihood ratio of e)."""

DWELL_TOLERANCE = 0.05
"""The largest excess total-variation distance between dwell-time distributions (binned)."""

MISMATCH_Z = 4.0
"""A block order counts as a detected mismatch when the network's divergence exceeds the
controls' mean by this many of the controls' standard deviations (reported, not a criterion)."""

CONFIDENCE = 0.95
"""Level of the confidence intervals of the likelihood gap."""

VERDICTS = ("emulates the HMM", "matches pairs only", "differs")

RULE = f"""\
Decision rule (fixed before any network was analysed; thresholds are module constants):
  pairs       the paper's fit bar on 5,000 network sequences of the paper's evaluation
              length: every squared entry of the output transition-matrix error <= 0.02
              and the frequent outputs' marginals within 0.03 of the HMM's.
  likelihood  the {CONFIDENCE:.0%} confidence interval of the per-step log-loss gap (network minus
              HMM control, under the true HMM, at the longest length) lies within
              +-{RATE_TOLERANCE} nats/step.
  blocks      for every block order n, the network's KL(empirical || exact) minus the
              mean of the HMM controls', divided by n, is <= {RATE_TOLERANCE} nats/step.
  dwell       for every frequent output, the total-variation distance of the binned
              dwell-time distribution from the exact one, minus the controls' mean,
              is <= {DWELL_TOLERANCE}.
  structure   held-out log-likelihood gain of the re-fitted HMM (at its chosen K) over
              the true HMM, network minus control, is <= {RATE_TOLERANCE} nats/step.
Verdict: "emulates the HMM" if all five hold; "matches pairs only" if pairs holds and
any other fails; "differs" if pairs fails. A non-finite number fails its criterion."""


# --------------------------------------------------------------------------- likelihood

class LikelihoodGap(NamedTuple):
    """Per-step log-loss under the true HMM, network against HMM control, by length.

    Attributes:
        lengths: (J,) prefix lengths L_j.
        network: (J,) mean over network sequences of ``-log P_HMM(o_1..o_{L_j}) / L_j`` (nats/step).
        control: (J,) the same for HMM sequences.
        gap: (J,) ``network - control``; 0 for a perfect emulator, either sign otherwise
            (a network less random than the HMM can score *below* it).
        half_width: (J,) half-width of the confidence interval of ``gap`` (normal
            approximation; the sequences are independent).
        confidence: the level of the interval.
    """

    lengths: np.ndarray
    network: np.ndarray
    control: np.ndarray
    gap: np.ndarray
    half_width: np.ndarray
    confidence: float


def _check_outputs(outputs: np.ndarray, n_outputs: int, name: str) -> np.ndarray:
    array = np.asarray(outputs)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty (n, L) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n_outputs:
        raise ValueError(f"{name} must lie in [0, {n_outputs}), got range [{array.min()}, {array.max()}]")
    return array.astype(np.int64, copy=False)


def _check_lengths(lengths: Sequence[int], length: int) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or lengths.size == 0 or lengths.min() < 1 or lengths.max() > length:
        raise ValueError(f"lengths must be a non-empty list of prefix lengths in [1, {length}], got {lengths.tolist()}")
    return lengths


def prefix_log_loss(hmm: HMM, outputs: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """(n, J) per-step log-loss ``-log P_HMM(o_1..o_{L_j}) / L_j`` of each sequence's prefixes.

    One forward pass (:func:`hmmrnn.hmm.step_log_likelihoods`) gives every prefix.
    An impossible prefix has log-loss ``+inf``.
    """
    outputs = _check_outputs(outputs, hmm.n_outputs, "outputs")
    lengths = _check_lengths(lengths, outputs.shape[1])
    cumulative = np.cumsum(step_log_likelihoods(hmm, outputs), axis=1)
    return -cumulative[:, lengths - 1] / lengths


def likelihood_gap(network_loss: np.ndarray, control_loss: np.ndarray, lengths: Sequence[int],
                   confidence: float = CONFIDENCE) -> LikelihoodGap:
    """Compare per-step log-losses (:func:`prefix_log_loss`) of network and HMM sequences.

    Args:
        network_loss: (n, J) per-sequence log-losses of network sequences.
        control_loss: (n', J) the same for HMM sequences.
        lengths: (J,) the prefix lengths they were computed at.
        confidence: level of the interval.

    A non-finite log-loss (a sequence impossible under the HMM) makes the mean ``inf`` and the
    interval NaN: it is reported, never dropped.
    """
    network_loss = np.asarray(network_loss, dtype=np.float64)
    control_loss = np.asarray(control_loss, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if network_loss.ndim != 2 or control_loss.ndim != 2 or network_loss.shape[1] != lengths.size \
            or control_loss.shape[1] != lengths.size or min(network_loss.shape[0], control_loss.shape[0]) < 2:
        raise ValueError(f"need (n, J) losses with n >= 2 and J = {lengths.size}, got {network_loss.shape}, {control_loss.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    z = float(norm.ppf(0.5 + confidence / 2))

    def mean_se(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore"):
            return loss.mean(axis=0), loss.std(axis=0, ddof=1) / np.sqrt(loss.shape[0])

    net_mean, net_se = mean_se(network_loss)
    ctl_mean, ctl_se = mean_se(control_loss)
    with np.errstate(invalid="ignore"):
        gap = net_mean - ctl_mean
        half = z * np.sqrt(net_se**2 + ctl_se**2)
    return LikelihoodGap(lengths, net_mean, ctl_mean, gap, half, float(confidence))


def _word_forward(hmm: HMM, order: int, start: np.ndarray) -> np.ndarray:
    """(S, K**order, M) joint probability of every word of ``order`` outputs and the last
    hidden state, for each of S start distributions (rows of ``start``, (S, M)).

    Words are numbered with the first output most significant:
    ``index = sum_i o_i K**(order-1-i)`` (the numbering of :func:`block_counts`).
    """
    emission_t = hmm.emission.T  # (K, M)
    alpha = start[:, None, :] * emission_t[None, :, :]  # (S, K, M)
    for _ in range(order - 1):
        alpha = (alpha @ hmm.transition)[:, :, None, :] * emission_t[None, None, :, :]
        alpha = alpha.reshape(alpha.shape[0], -1, alpha.shape[-1])
    return alpha


def _check_order(order: int, hmm: HMM, largest_words: int = 3**12) -> int:
    if int(order) != order or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if hmm.n_outputs ** int(order) > largest_words:
        raise ValueError(f"{hmm.n_outputs}**{order} words is too many (at most {largest_words})")
    return int(order)


def block_probabilities(hmm: HMM, order: int) -> np.ndarray:
    """(K**order,) exact probability of every word of ``order`` consecutive outputs of the
    stationary HMM (numbering as :func:`block_counts`)."""
    order = _check_order(order, hmm)
    pi = stationary_distribution(hmm)
    return _word_forward(hmm, order, pi[None, :])[0].sum(axis=-1)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def entropy_rate_bounds(hmm: HMM, order: int = 10) -> tuple[float, float]:
    """Exact lower and upper bounds on the HMM's entropy rate (nats per step).

    For the stationary chain (Cover & Thomas, Elements of Information Theory, thm. 4.5.1),

        H(O_n | O_1..O_{n-1}, Z_1)  <=  entropy rate  <=  H(O_n | O_1..O_{n-1}),

    and both sides converge to the rate as n grows. Both are computed exactly by enumerating
    the K**n words of length n = ``order``.
    """
    order = _check_order(order, hmm)
    if order < 2:
        raise ValueError("the bounds need order >= 2")
    pi = stationary_distribution(hmm)
    m, k = hmm.n_states, hmm.n_outputs
    words = _word_forward(hmm, order, np.vstack([pi, np.eye(m)])).sum(axis=-1)  # (1 + M, K**n)
    shorter = words.reshape(1 + m, -1, k).sum(axis=-1)  # (1 + M, K**(n-1))
    conditional = _entropy(words) - _entropy(shorter)  # (1 + M,)
    upper = float(conditional[0])
    lower = float(pi @ conditional[1:])
    return lower, upper


# --------------------------------------------------------------------------- blocks

def block_counts(outputs: np.ndarray, order: int, n_outputs: int) -> np.ndarray:
    """(K**order,) counts of every word of ``order`` consecutive outputs, over all positions
    of all sequences (overlapping windows; a window never spans two sequences).

    Word numbering: ``index = sum_i o_{t+i} K**(order-1-i)``.
    """
    outputs = _check_outputs(outputs, n_outputs, "outputs")
    if int(order) != order or not 1 <= order <= outputs.shape[1]:
        raise ValueError(f"order must be an integer in [1, {outputs.shape[1]}], got {order!r}")
    width = outputs.shape[1] - order + 1
    codes = np.zeros((outputs.shape[0], width), dtype=np.int64)
    for i in range(order):
        codes = codes * n_outputs + outputs[:, i : i + width]
    return np.bincount(codes.ravel(), minlength=n_outputs**order)


def block_divergence(counts: np.ndarray, probabilities: np.ndarray) -> float:
    """Plug-in ``KL(empirical || exact)`` in nats; ``inf`` when a counted word has probability 0.

    Its expectation under the exact distribution is positive (about (words - 1) / (2 N) for N
    independent draws; larger for overlapping windows): compare it with a control, not with 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if counts.shape != probabilities.shape or counts.ndim != 1:
        raise ValueError(f"counts and probabilities must be 1-D of the same length, got {counts.shape}, {probabilities.shape}")
    total = counts.sum()
    if total <= 0:
        raise ValueError("no words counted")
    seen = counts > 0
    if np.any(probabilities[seen] <= 0):
        return float("inf")
    freq = counts[seen] / total
    return float(np.sum(freq * np.log(freq / probabilities[seen])))


class BlockComparison(NamedTuple):
    """Block (n-gram) distributions of a network and of HMM controls against the exact ones.

    Attributes:
        orders: (J,) block lengths n = 1 .. max_order.
        network: (J,) the network's ``KL(empirical || exact)`` at each order (nats).
        control: (R, J) the same for R independent HMM samples of the same size.
        excess_rate: (J,) ``(network - mean control) / n``: the bias-corrected divergence per
            step (nats/step).
        z: (J,) ``(network - mean control) / sd control``.
        first_mismatch: the smallest order with ``z >= MISMATCH_Z`` (a mismatch *detected*
            at this sample size, however small), or None.
        first_excess: the smallest order whose ``excess_rate`` exceeds
            :data:`RATE_TOLERANCE` (a mismatch larger than the tolerance), or None.
    """

    orders: np.ndarray
    network: np.ndarray
    control: np.ndarray
    excess_rate: np.ndarray
    z: np.ndarray
    first_mismatch: int | None
    first_excess: int | None


def block_divergences(hmm: HMM, outputs: np.ndarray, max_order: int) -> np.ndarray:
    """(max_order,) ``KL(empirical || exact)`` of the n-blocks of ``outputs``, n = 1 .. max_order."""
    return np.array([
        block_divergence(block_counts(outputs, n, hmm.n_outputs), block_probabilities(hmm, n))
        for n in range(1, int(max_order) + 1)
    ])


def compare_blocks(network: np.ndarray, control: np.ndarray, z_threshold: float = MISMATCH_Z) -> BlockComparison:
    """Bias-correct a network's block divergences by the controls' (:func:`block_divergences`).

    Args:
        network: (J,) the network's divergences at orders 1 .. J.
        control: (R, J) those of R >= 2 HMM samples of the same size.
        z_threshold: see :data:`MISMATCH_Z`.
    """
    network = np.asarray(network, dtype=np.float64)
    control = np.asarray(control, dtype=np.float64)
    if control.ndim != 2 or control.shape[1] != network.size or control.shape[0] < 2:
        raise ValueError(f"control must be (R >= 2, {network.size}), got {control.shape}")
    orders = np.arange(1, network.size + 1)
    mean, sd = control.mean(axis=0), control.std(axis=0, ddof=1)
    excess = network - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, excess / np.where(sd > 0, sd, 1.0), np.where(excess > 0, np.inf, 0.0))
    rate = excess / orders
    hits = np.flatnonzero(~(z < z_threshold))  # NaN and inf count as mismatches
    first = int(orders[hits[0]]) if hits.size else None
    over = np.flatnonzero(~(rate <= RATE_TOLERANCE))
    first_excess = int(orders[over[0]]) if over.size else None
    return BlockComparison(orders, network, control, rate, z, first, first_excess)


# --------------------------------------------------------------------------- dwell times

def _run_matrices(hmm: HMM, output: int) -> tuple[np.ndarray, np.ndarray]:
    if int(output) != output or not 0 <= output < hmm.n_outputs:
        raise ValueError(f"output must be one of 0..{hmm.n_outputs - 1}, got {output!r}")
    e_k = hmm.emission[:, int(output)]
    return e_k, 1.0 - e_k


def dwell_time_distribution(hmm: HMM, output: int, max_dwell: int) -> np.ndarray:
    """(max_dwell,) exact ``P(D = d)``, d = 1 .. max_dwell, of the length D of a run of ``output``
    in the stationary process (a run: maximal stretch of consecutive steps emitting it).

    With ``a = P D_notk T D_k`` (the state at the first step of a run, jointly with a run
    starting there) and ``u = T D_notk 1`` (the run ends at the next step),

        P(D = d) = a (T D_k)^(d-1) u / (a 1),    P(D >= d) = a (T D_k)^(d-1) 1 / (a 1).

    Raises:
        ValueError: the output never starts a run (never emitted, or emitted at every step).
    """
    e_k, e_not = _run_matrices(hmm, output)
    if int(max_dwell) != max_dwell or max_dwell < 1:
        raise ValueError(f"max_dwell must be a positive integer, got {max_dwell!r}")
    a = ((stationary_distribution(hmm) * e_not) @ hmm.transition) * e_k  # (M,)
    starts = a.sum()
    if not starts > 0:
        raise ValueError(f"output {output} never starts a run in {hmm.name}")
    u = hmm.transition @ e_not  # (M,)
    probs = np.empty(int(max_dwell))
    row = a / starts
    for d in range(int(max_dwell)):
        probs[d] = row @ u
        row = (row @ hmm.transition) * e_k
    return probs


def mean_dwell_time(hmm: HMM, output: int) -> float:
    """Exact mean run length ``a (I - T D_k)^-1 1 / (a 1)`` of ``output`` (see
    :func:`dwell_time_distribution`); equals ``1 / (1 - P(o_{t+1} = k | o_t = k))``."""
    e_k, e_not = _run_matrices(hmm, output)
    a = ((stationary_distribution(hmm) * e_not) @ hmm.transition) * e_k
    if not a.sum() > 0:
        raise ValueError(f"output {output} never starts a run in {hmm.name}")
    m = hmm.n_states
    return float(np.linalg.solve((np.eye(m) - hmm.transition * e_k[None, :]).T, a).sum() / a.sum())


def expected_run_counts(hmm: HMM, output: int, length: int) -> np.ndarray:
    """(length - 2,) expected number of *complete* runs of ``output`` of length d = 1 .. length-2
    in one sequence of ``length`` steps started from ``hmm.start``.

    A run is complete when the steps before and after it lie inside the sequence (runs
    touching either end are censored and not counted, as in :func:`run_length_counts`).
    With ``v_s = start T^(s-1)`` the state distribution at step s (1-based),

        E[count(d)] = sum_{s=1}^{L-d-1} v_s D_notk T D_k (T D_k)^(d-1) T D_notk 1,

    evaluated for all d at once from the cumulative sums of ``v_s``. Exact for any start,
    stationary or not.
    """
    e_k, e_not = _run_matrices(hmm, output)
    if int(length) != length or length < 3:
        raise ValueError(f"length must be an integer >= 3, got {length!r}")
    length = int(length)
    v = np.empty((length, hmm.n_states))
    v[0] = hmm.start
    for s in range(1, length):
        v[s] = v[s - 1] @ hmm.transition
    cumulative = np.cumsum(v, axis=0)  # row m-1: sum of v_1 .. v_m
    counts = np.empty(length - 2)
    w = e_k * (hmm.transition @ e_not)  # D_k T D_notk 1: a run of length 1 from this state
    for d in range(1, length - 1):
        c = e_not * (hmm.transition @ w)  # D_notk T w_d
        counts[d - 1] = cumulative[length - d - 2] @ c
        w = e_k * (hmm.transition @ w)
    return counts


def run_length_counts(outputs: np.ndarray, output: int, n_outputs: int) -> np.ndarray:
    """(L - 2,) number of complete runs of ``output`` of each length d = 1 .. L-2, over all
    sequences (see :func:`expected_run_counts` for "complete"). Vectorised.
    """
    outputs = _check_outputs(outputs, n_outputs, "outputs")
    n, length = outputs.shape
    if length < 3:
        raise ValueError(f"sequences must have at least 3 steps, got {length}")
    padded = np.full((n, length + 1), -1, dtype=np.int64)  # -1: the separator after each sequence
    padded[:, :length] = outputs
    flat = padded.ravel()
    inside = (flat == output).astype(np.int8)
    change = np.diff(np.concatenate([[0], inside, [0]]))
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)  # run = flat[start:end]
    # every sequence ends with a separator, so flat[end] exists: a run is complete when the
    # steps on both sides are outputs, not separators (nor before the first sequence)
    complete = (starts > 0) & (flat[np.maximum(starts - 1, 0)] >= 0) & (flat[ends] >= 0)
    durations = (ends - starts)[complete]
    return np.bincount(durations - 1, minlength=length - 2)[: length - 2]


def dwell_bins(length: int) -> np.ndarray:
    """Edges of the dwell-time bins for runs of 1 .. length-2 steps: 1, 2, 3, 4, 6, 8, 12,
    16, 24, ... (widths growing like the tails of the distributions), last edge length - 1.

    Bin j holds durations ``edges[j] <= d < edges[j + 1]``.
    """
    if length < 3:
        raise ValueError(f"length must be >= 3, got {length}")
    edges = {1, 2, 3}
    power = 4
    while power < length - 1:
        edges.update({power, power * 3 // 2})
        power *= 2
    return np.array(sorted(e for e in edges if e < length - 1) + [length - 1])


def binned_distribution(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (or expected counts) of durations 1 .. len(counts) summed into bins and normalised."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if not total > 0:
        return np.full(len(edges) - 1, np.nan)
    sums = np.add.reduceat(counts, np.asarray(edges[:-1]) - 1)
    return sums / total


def one_step_runs_at_switches(outputs: np.ndarray, output: int, n_outputs: int, window: int = 10) -> tuple[int, float]:
    """How many complete one-step runs of ``output`` there are, and which share of them sit at a
    switch: where the most frequent output of the ``window`` steps before the run differs
    from that of the ``window`` steps after it (ties go to the lower output).

    Runs closer than ``window`` steps to either end of their sequence are not counted.

    Returns:
        (number of such runs, share at a switch; NaN if there are none).
    """
    outputs = _check_outputs(outputs, n_outputs, "outputs")
    n, length = outputs.shape
    if int(window) != window or window < 1 or length < 2 * window + 1:
        raise ValueError(f"window must be an integer >= 1 with 2 window + 1 <= L = {length}, got {window!r}")
    w = int(window)
    counts = np.zeros((n, length + 1, n_outputs), dtype=np.int64)
    counts[:, 1:] = np.cumsum(np.eye(n_outputs, dtype=np.int64)[outputs], axis=1)  # counts[:, t] = outputs[:, :t]
    t = np.arange(w, length - w)
    centre = outputs[:, t] == output
    alone = centre & (outputs[:, t - 1] != output) & (outputs[:, t + 1] != output)
    before = (counts[:, t] - counts[:, t - w]).argmax(axis=-1)
    after = (counts[:, t + 1 + w] - counts[:, t + 1]).argmax(axis=-1)
    total = int(alone.sum())
    share = float((before != after)[alone].mean()) if total else float("nan")
    return total, share


class DwellComparison(NamedTuple):
    """Dwell-time distribution of one output: network and controls against the exact one.

    Attributes:
        output: the output.
        edges: (B + 1,) bin edges (:func:`dwell_bins`).
        exact: (B,) exact distribution of complete-run lengths in sequences of the sample's length.
        network: (B,) the network's empirical distribution.
        n_runs: number of complete runs in the network's sample.
        network_tv: total-variation distance network vs exact.
        control_tv: (R,) the same for each HMM control sample.
        excess_tv: ``network_tv - mean(control_tv)``.
    """

    output: int
    edges: np.ndarray
    exact: np.ndarray
    network: np.ndarray
    n_runs: int
    network_tv: float
    control_tv: np.ndarray
    excess_tv: float


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def dwell_distances(hmm: HMM, outputs: np.ndarray, which: Sequence[int]) -> np.ndarray:
    """(len(which),) total-variation distance of each output's binned complete-run-length
    distribution from the exact one (NaN for an output with no complete run)."""
    outputs = _check_outputs(outputs, hmm.n_outputs, "outputs")
    edges = dwell_bins(outputs.shape[1])
    out = []
    for k in which:
        exact = binned_distribution(expected_run_counts(hmm, k, outputs.shape[1]), edges)
        out.append(_tv(binned_distribution(run_length_counts(outputs, k, hmm.n_outputs), edges), exact))
    return np.array(out)


def compare_dwells(hmm: HMM, outputs: np.ndarray, control_tv: np.ndarray, which: Sequence[int]) -> tuple[DwellComparison, ...]:
    """:class:`DwellComparison` of each output in ``which``, with controls' distances
    ``control_tv`` (R, len(which)) from :func:`dwell_distances` on HMM samples of the same size."""
    outputs = _check_outputs(outputs, hmm.n_outputs, "outputs")
    control_tv = np.asarray(control_tv, dtype=np.float64)
    if control_tv.ndim != 2 or control_tv.shape[1] != len(which):
        raise ValueError(f"control_tv must be (R, {len(which)}), got {control_tv.shape}")
    edges = dwell_bins(outputs.shape[1])
    result = []
    for j, k in enumerate(which):
        counts = run_length_counts(outputs, k, hmm.n_outputs)
        exact = binned_distribution(expected_run_counts(hmm, k, outputs.shape[1]), edges)
        network = binned_distribution(counts, edges)
        tv = _tv(network, exact)
        result.append(DwellComparison(int(k), edges, exact, network, int(counts.sum()), tv, control_tv[:, j],
                                      tv - float(control_tv[:, j].mean())))
    return tuple(result)


# --------------------------------------------------------------------------- structure

def structure_gain(hmm: HMM, fit: RefitResult, test: np.ndarray) -> float:
    """Held-out log-likelihood per step of the re-fitted HMM at its chosen K minus the true
    HMM's, on the held-out sequences ``test`` the fit was scored on (nats/step).

    About 0 when the sequences come from the true HMM (up to estimation noise); positive
    when an HMM fitted to them explains them better than the true one: a difference in
    the sequence distribution that a hidden-Markov model can capture.
    """
    test = _check_outputs(test, hmm.n_outputs, "test")
    if fit.heldout.shape[1] != test.shape[0]:
        raise ValueError(f"the fit was scored on {fit.heldout.shape[1]} sequences, test has {test.shape[0]}")
    true = log_likelihood(hmm, test).sum() / test.size
    return float(fit.heldout_per_step[fit.chosen - 1] - true)


# --------------------------------------------------------------------------- putting it together

class Control(NamedTuple):
    """Everything measured on samples of the HMM itself, at the networks' sample size.

    Attributes:
        hmm: the target.
        n, length: the sample size (sequences, steps) every network is compared at.
        lengths: (J,) prefix lengths of the likelihood comparison.
        sample: (n, length) the first control sample (the others are not kept).
        log_loss: (n, J) per-step log-loss of the first control sample (:func:`prefix_log_loss`).
        entropy_rate: (lower, upper) exact bounds (:func:`entropy_rate_bounds`).
        block_kl: (R, max_order) block divergences of R control samples.
        dwell_outputs: the outputs whose dwell times are compared (the frequent ones).
        dwell_tv: (R, F) dwell-time distances of the R control samples.
        refit: the re-fit of the first control sample.
        refit_gain: :func:`structure_gain` of that re-fit.
        pairs: the paper's fit bar on an HMM sample of the networks' pair-check size (a
            sanity check: an exact sampler passes it but for sampling noise).
    """

    hmm: HMM
    n: int
    length: int
    lengths: np.ndarray
    sample: np.ndarray
    log_loss: np.ndarray
    entropy_rate: tuple[float, float]
    block_kl: np.ndarray
    dwell_outputs: tuple[int, ...]
    dwell_tv: np.ndarray
    refit: RefitResult
    refit_gain: float
    pairs: dict[str, bool]


def _refit_split(outputs: np.ndarray, n_fit: int, fit_length: int) -> tuple[np.ndarray, np.ndarray]:
    if 2 * n_fit > outputs.shape[0] or fit_length > outputs.shape[1]:
        raise ValueError(f"the re-fit needs 2 x {n_fit} sequences of {fit_length} steps, the sample has "
                         f"{outputs.shape[0]} of {outputs.shape[1]}")
    return outputs[:n_fit, :fit_length], outputs[n_fit : 2 * n_fit, :fit_length]


def pair_checks(hmm: HMM, outputs: np.ndarray) -> dict[str, bool]:
    """The paper's fit bar (:func:`hmmrnn.metrics.fit_checks`) on (n, L) outputs: the paper
    applies it to 5,000 sequences of its evaluation length
    (:func:`hmmrnn.metrics.default_eval_length`)."""
    outputs = _check_outputs(outputs, hmm.n_outputs, "outputs")
    stats = emission_statistics(outputs, hmm.n_outputs, int(np.argmin(output_marginals(hmm))))
    error = transition_matrix_error(stats.transition, output_transition_matrix(hmm))
    return fit_checks(error, stats.marginals, output_marginals(hmm))


def make_control(
    hmm: HMM,
    n: int,
    length: int,
    rng: np.random.Generator,
    lengths: Sequence[int],
    pair_size: tuple[int, int] = (5000, 100),
    repeats: int = 10,
    max_order: int = 8,
    n_fit: int = 20,
    fit_length: int = 500,
    refit_kwargs: dict | None = None,
) -> Control:
    """Measure ``repeats`` independent HMM samples of n sequences x ``length`` steps.

    The first sample also gives the likelihood control and the re-fit control (its first
    ``n_fit`` sequences are fitted, the next ``n_fit`` held out, each cut to ``fit_length``).
    A further sample of ``pair_size`` = (sequences, steps) gets the paper's fit bar.
    """
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 (the controls' spread is needed), got {repeats}")
    lengths = _check_lengths(lengths, length)
    which = frequent_outputs(hmm)
    block_kl, dwell_tv = [], []
    first = None
    for r in range(int(repeats)):
        _, outputs = sample(hmm, n, length, rng)
        if r == 0:
            first = outputs
        block_kl.append(block_divergences(hmm, outputs, max_order))
        dwell_tv.append(dwell_distances(hmm, outputs, which))
    assert first is not None
    train, test = _refit_split(first, n_fit, fit_length)
    fit = refit(train, test, hmm.n_outputs, rng, **(refit_kwargs or {}))
    return Control(
        hmm=hmm, n=int(n), length=int(length), lengths=lengths, sample=first,
        log_loss=prefix_log_loss(hmm, first, lengths),
        entropy_rate=entropy_rate_bounds(hmm),
        block_kl=np.array(block_kl), dwell_outputs=which, dwell_tv=np.array(dwell_tv),
        refit=fit, refit_gain=structure_gain(hmm, fit, test),
        pairs=pair_checks(hmm, sample(hmm, pair_size[0], pair_size[1], rng)[1]),
    )


class Verdict(NamedTuple):
    """One network's verdict (:data:`RULE`).

    Attributes:
        label: one of :data:`VERDICTS`.
        criteria: criterion name -> whether it holds (pairs, likelihood, blocks, dwell, structure).
    """

    label: str
    criteria: dict[str, bool]

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(name for name, ok in self.criteria.items() if not ok)


def verdict(pairs: dict[str, bool], likelihood: LikelihoodGap, blocks: BlockComparison,
            dwells: Sequence[DwellComparison], gain_network: float, gain_control: float) -> Verdict:
    """Apply :data:`RULE` to one network's measurements."""
    gap, half = float(likelihood.gap[-1]), float(likelihood.half_width[-1])
    criteria = {
        "pairs": bool(all(pairs.values())),
        "likelihood": bool(np.isfinite(gap) and np.isfinite(half) and abs(gap) + half <= RATE_TOLERANCE),
        "blocks": bool(np.all(np.isfinite(blocks.excess_rate)) and np.all(blocks.excess_rate <= RATE_TOLERANCE)),
        "dwell": bool(all(np.isfinite(d.excess_tv) and d.excess_tv <= DWELL_TOLERANCE for d in dwells)),
        "structure": bool(np.isfinite(gain_network - gain_control) and gain_network - gain_control <= RATE_TOLERANCE),
    }
    if not criteria["pairs"]:
        label = VERDICTS[2]
    elif all(criteria.values()):
        label = VERDICTS[0]
    else:
        label = VERDICTS[1]
    return Verdict(label, criteria)


class Assessment(NamedTuple):
    """Every whole-sequence measurement of one network (see the module docstring).

    Attributes:
        name: the network's name.
        likelihood: :class:`LikelihoodGap` against the control.
        blocks: :class:`BlockComparison`.
        dwells: one :class:`DwellComparison` per frequent output.
        refit: the re-fit of the network's sequences.
        refit_gain: :func:`structure_gain` of that re-fit.
        pairs: the paper's fit bar on the network's pair-check outputs.
        verdict: :class:`Verdict`.
    """

    name: str
    likelihood: LikelihoodGap
    blocks: BlockComparison
    dwells: tuple[DwellComparison, ...]
    refit: RefitResult
    refit_gain: float
    pairs: dict[str, bool]
    verdict: Verdict


def assess(name: str, outputs: np.ndarray, pair_outputs: np.ndarray, control: Control, rng: np.random.Generator,
           n_fit: int = 20, fit_length: int = 500, refit_kwargs: dict | None = None) -> Assessment:
    """Measure one network's sequences against ``control``.

    Args:
        name: the network's name.
        outputs: (n, length) network sequences, the size the control was made for.
        pair_outputs: further network sequences for the paper's fit bar (the paper: 5,000
            sequences of its evaluation length).
        control: :func:`make_control`'s result for the network's target.
        rng: source of the re-fit's initial emissions.
        n_fit, fit_length, refit_kwargs: as given to :func:`make_control`.
    """
    hmm = control.hmm
    outputs = _check_outputs(outputs, hmm.n_outputs, "outputs")
    if outputs.shape != (control.n, control.length):
        raise ValueError(f"outputs have shape {outputs.shape}; the control was made for ({control.n}, {control.length})")
    loss = prefix_log_loss(hmm, outputs, control.lengths)
    likelihood = likelihood_gap(loss, control.log_loss, control.lengths)
    blocks = compare_blocks(block_divergences(hmm, outputs, control.block_kl.shape[1]), control.block_kl)
    dwells = compare_dwells(hmm, outputs, control.dwell_tv, control.dwell_outputs)
    train, test = _refit_split(outputs, n_fit, fit_length)
    fit = refit(train, test, hmm.n_outputs, rng, **(refit_kwargs or {}))
    gain = structure_gain(hmm, fit, test)
    pairs = pair_checks(hmm, pair_outputs)
    return Assessment(name, likelihood, blocks, dwells, fit, gain, pairs,
                      verdict(pairs, likelihood, blocks, dwells, gain, control.refit_gain))
