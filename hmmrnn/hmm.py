"""Hidden Markov models: the paper's six targets, exact emission statistics, sampling, likelihood.

Notation (used in every docstring of this module):

* ``M`` hidden states, ``K`` outputs (always 3 for the paper's targets);
* ``start`` (M,), ``transition`` (M, M) with ``transition[i, j] = P(z_{t+1}=j | z_t=i)``,
  ``emission`` (M, K) with ``emission[i, k] = P(o_t=k | z_t=i)``;
* sampled outputs are integer arrays of shape (n, L): n sequences of L steps.

The exact statistics are the ones of the *stationary* chain; every target of the paper starts
from the uniform distribution, which is stationary for all six (their transition matrices
are doubly stochastic), so the statistics of the first step equal those of every later step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "HMM",
    "HMMError",
    "TARGET_NAMES",
    "get_hmm",
    "linear_chain",
    "fully_connected",
    "cyclic",
    "without_output",
    "stationary_distribution",
    "output_marginals",
    "output_pair_probabilities",
    "output_transition_matrix",
    "lability",
    "sample",
    "log_likelihood",
    "step_log_likelihoods",
    "brute_force_sequence_probability",
]

_ROW_TOL = 1e-6


class HMMError(ValueError):
    """An HMM specification that is not a valid probability model."""


def _as_float_array(value: object, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise HMMError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise HMMError(f"{name} has a non-finite entry at index {bad}")
    if np.any(array < 0):
        bad = np.argwhere(array < 0)[0].tolist()
        raise HMMError(f"{name} has a negative entry {array[tuple(bad)]:g} at index {bad}")
    return array


def _check_rows(array: np.ndarray, name: str) -> None:
    sums = array.sum(axis=-1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_TOL)
    if bad.size:
        row = int(bad[0])
        raise HMMError(
            f"{name} row {row} sums to {sums[row]:.6g}, not 1 "
            f"(rows that do not sum to 1: {bad.tolist()})"
        )


@dataclass(frozen=True, eq=False)
class HMM:
    """A discrete HMM, validated when built.

    Attributes:
        start: (M,) initial state distribution.
        transition: (M, M) row-stochastic matrix, ``transition[i, j] = P(j | i)``.
        emission: (M, K) row-stochastic matrix, ``emission[i, k] = P(output k | state i)``.
        name: a label; the paper's targets carry their registry name.
        seq_len: training sequence length used by the paper for this target (None if custom).
    """

    start: np.ndarray
    transition: np.ndarray
    emission: np.ndarray
    name: str = "custom"
    seq_len: int | None = field(default=None)

    def __post_init__(self) -> None:
        start = _as_float_array(self.start, "start", 1)
        transition = _as_float_array(self.transition, "transition", 2)
        emission = _as_float_array(self.emission, "emission", 2)
        n_states = start.shape[0]
        if n_states == 0:
            raise HMMError("start is empty: an HMM needs at least one state")
        if transition.shape != (n_states, n_states):
            raise HMMError(
                f"transition must have shape ({n_states}, {n_states}) to match start "
                f"({n_states} states), got {transition.shape}"
            )
        if emission.shape[0] != n_states or emission.shape[1] == 0:
            raise HMMError(
                f"emission must have shape ({n_states}, K) with K >= 1 to match start, "
                f"got {emission.shape}"
            )
        _check_rows(start[None, :], "start")
        _check_rows(transition, "transition")
        _check_rows(emission, "emission")
        if self.seq_len is not None and (int(self.seq_len) != self.seq_len or self.seq_len < 1):
            raise HMMError(f"seq_len must be a positive integer, got {self.seq_len!r}")
        for attr, array in (("start", start), ("transition", transition), ("emission", emission)):
            array.setflags(write=False)
            object.__setattr__(self, attr, array)

    @property
    def n_states(self) -> int:
        """Number of hidden states M."""
        return int(self.start.shape[0])

    @property
    def n_outputs(self) -> int:
        """Number of outputs K."""
        return int(self.emission.shape[1])

    def to_dict(self) -> dict:
        """JSON-ready description (the ``hmm`` block of a checkpoint's config)."""
        return {
            "name": self.name,
            "start": self.start.tolist(),
            "transition": self.transition.tolist(),
            "emission": self.emission.tolist(),
            "seq_len": self.seq_len,
        }

    @classmethod
    def from_dict(cls, spec: dict) -> "HMM":
        """Inverse of :meth:`to_dict`; raises :class:`HMMError` on a bad specification."""
        missing = [k for k in ("start", "transition", "emission") if k not in spec]
        if missing:
            raise HMMError(f"HMM specification lacks {missing}")
        return cls(
            start=spec["start"],
            transition=spec["transition"],
            emission=spec["emission"],
            name=spec.get("name", "custom"),
            seq_len=spec.get("seq_len"),
        )

    def __repr__(self) -> str:
        return f"HMM(name={self.name!r}, states={self.n_states}, outputs={self.n_outputs}, seq_len={self.seq_len})"


# --------------------------------------------------------------------------- the targets

def linear_chain(n_states: int, seq_len: int | None = None) -> HMM:
    """The paper's linear chain with ``n_states`` states (M >= 2) and 3 outputs.

    ``q = 0.05 ** (1 / (M - 1))``; end states stay with ``1 - q``, interior states with
    ``1 - 2q``, and every state moves to each neighbour with ``q``. State i (a = i / (M-1))
    emits ``[0.99 (1 - a), 0.01, 0.99 a]``: output 1 is rare everywhere.
    """
    if int(n_states) != n_states or n_states < 2:
        raise HMMError(f"a linear chain needs an integer number of states >= 2, got {n_states!r}")
    m = int(n_states)
    q = 0.05 ** (1.0 / (m - 1))
    transition = np.zeros((m, m))
    for i in range(m):
        if i > 0:
            transition[i, i - 1] = q
        if i < m - 1:
            transition[i, i + 1] = q
        transition[i, i] = 1.0 - transition[i].sum()
    a = np.arange(m) / (m - 1)
    emission = np.stack([0.99 * (1 - a), np.full(m, 0.01), 0.99 * a], axis=1)
    return HMM(np.full(m, 1.0 / m), transition, emission, name=f"linear{m}", seq_len=seq_len)


def fully_connected(seq_len: int | None = 30) -> HMM:
    """Three states, stay 0.95, move to each other state 0.025; emissions 0.98 / 0.01."""
    transition = np.full((3, 3), 0.025) + np.eye(3) * (0.95 - 0.025)
    emission = np.full((3, 3), 0.01) + np.eye(3) * (0.98 - 0.01)
    return HMM(np.full(3, 1 / 3), transition, emission, name="fully3", seq_len=seq_len)


def cyclic(seq_len: int | None = 40) -> HMM:
    """Four states on a ring (stay 0.95, neighbours 0.025) emitting 0,1 / 1,0 / 2,1 / 1,2 mostly."""
    transition = np.array(
        [
            [0.95, 0.025, 0.0, 0.025],
            [0.025, 0.95, 0.025, 0.0],
            [0.0, 0.025, 0.95, 0.025],
            [0.025, 0.0, 0.025, 0.95],
        ]
    )
    emission = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.1, 0.9], [0.0, 0.9, 0.1]])
    return HMM(np.full(4, 0.25), transition, emission, name="cyclic4", seq_len=seq_len)


def without_output(hmm: HMM, output: int) -> HMM:
    """The same chain with one output never emitted: its emission probability is shared
    among the other outputs in proportion to theirs (a state emitting only that output
    emits the others uniformly).

    Used to ask what a loss thinks of a sampler that is exact except for a rare output.

    Raises:
        ValueError: ``output`` is not an output index of ``hmm``.
    """
    k = hmm.n_outputs
    if not 0 <= output < k or k < 2:
        raise ValueError(f"output must be one of 0..{k - 1} of an HMM with at least 2 outputs, got {output}")
    emission = np.array(hmm.emission, dtype=np.float64)
    emission[:, output] = 0.0
    rest = emission.sum(axis=1, keepdims=True)
    emission = np.where(rest > 0, emission / np.where(rest > 0, rest, 1.0), 1.0 / (k - 1))
    emission[:, output] = 0.0
    return HMM(hmm.start, hmm.transition, emission, name=f"{hmm.name} without output {output}", seq_len=hmm.seq_len)


_SEQ_LEN = {"linear2": 100, "linear3": 30, "linear4": 30, "linear5": 40, "fully3": 30, "cyclic4": 40}
TARGET_NAMES: tuple[str, ...] = tuple(_SEQ_LEN)


def get_hmm(name: str) -> HMM:
    """One of the paper's six targets by name, with its training sequence length.

    Raises:
        KeyError: for an unknown name (the message lists the known ones).
    """
    if name not in _SEQ_LEN:
        raise KeyError(f"unknown HMM target {name!r}; known targets: {', '.join(TARGET_NAMES)}")
    if name.startswith("linear"):
        return linear_chain(int(name[len("linear"):]), seq_len=_SEQ_LEN[name])
    if name == "fully3":
        return fully_connected(seq_len=_SEQ_LEN[name])
    return cyclic(seq_len=_SEQ_LEN[name])


# --------------------------------------------------------------------------- exact statistics

def stationary_distribution(hmm: HMM) -> np.ndarray:
    """(M,) stationary distribution of the hidden chain (left eigenvector for eigenvalue 1).

    For a reducible chain the stationary distribution is not unique; the one returned is
    the eigenvector of the eigenvalue closest to 1, normalised to sum to 1.
    """
    eigvals, eigvecs = np.linalg.eig(hmm.transition.T)
    idx = int(np.argmin(np.abs(eigvals - 1.0)))
    pi = np.real(eigvecs[:, idx])
    pi = pi / pi.sum()
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def output_marginals(hmm: HMM) -> np.ndarray:
    """(K,) probability of each output at a step of the stationary chain."""
    return stationary_distribution(hmm) @ hmm.emission


def output_pair_probabilities(hmm: HMM) -> np.ndarray:
    """(K, K) joint probability ``P(o_t = a, o_{t+1} = b)`` of the stationary chain.

    ``sum_{i,j} pi_i E[i,a] T[i,j] E[j,b]``.
    """
    pi = stationary_distribution(hmm)
    return (pi[:, None] * hmm.emission).T @ hmm.transition @ hmm.emission


def output_transition_matrix(hmm: HMM) -> np.ndarray:
    """(K, K) output-to-output transition matrix ``P(o_{t+1} = b | o_t = a)`` (rows sum to 1).

    Rows of outputs with zero marginal probability are NaN.
    """
    joint = output_pair_probabilities(hmm)
    marg = joint.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(marg > 0, joint / marg, np.nan)


def lability(hmm: HMM) -> float:
    """Probability that the output changes from one step to the next (stationary chain)."""
    return float(1.0 - np.trace(output_pair_probabilities(hmm)))


# --------------------------------------------------------------------------- sampling

def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``probs`` (n, C) -> (n,) ints, by inverse CDF."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=-1), probs.shape[-1] - 1)


def sample(hmm: HMM, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n`` independent sequences of ``length`` steps.

    Vectorised over sequences (one loop over time steps only).

    Args:
        hmm: the model.
        n: number of sequences.
        length: steps per sequence.
        rng: the source of randomness (``numpy.random.Generator``); same seed, same samples.

    Returns:
        states: (n, length) int64 hidden states.
        outputs: (n, length) int64 emitted outputs.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if int(n) != n or n < 0 or int(length) != length or length < 0:
        raise ValueError(f"n and length must be non-negative integers, got n={n!r}, length={length!r}")
    n, length = int(n), int(length)
    states = np.empty((n, length), dtype=np.int64)
    outputs = np.empty((n, length), dtype=np.int64)
    if n == 0 or length == 0:
        return states, outputs
    z = _categorical(np.broadcast_to(hmm.start, (n, hmm.n_states)), rng)
    for t in range(length):
        if t > 0:
            z = _categorical(hmm.transition[z], rng)
        states[:, t] = z
        outputs[:, t] = _categorical(hmm.emission[z], rng)
    return states, outputs


def one_hot(outputs: np.ndarray, n_outputs: int) -> np.ndarray:
    """(n, L) ints -> (n, L, K) float32 one-hot encoding."""
    outputs = np.asarray(outputs)
    if outputs.size and (outputs.min() < 0 or outputs.max() >= n_outputs):
        raise ValueError(f"outputs must lie in [0, {n_outputs}), got range [{outputs.min()}, {outputs.max()}]")
    return np.eye(n_outputs, dtype=np.float32)[outputs]


# --------------------------------------------------------------------------- likelihood

def step_log_likelihoods(hmm: HMM, outputs: np.ndarray) -> np.ndarray:
    """Log-probability of each output given the outputs before it: ``log P(o_t | o_1..o_{t-1})``.

    The batched forward algorithm with scaling: the forward vector of every sequence is
    renormalised at each step, and the normaliser is the conditional probability of that
    step's output, so nothing underflows however long the sequences are (the logarithms of
    the normalisers are the log-space forward algorithm's increments). Vectorised over
    sequences; one loop over time steps.

    Args:
        hmm: the model.
        outputs: (n, L) integer outputs in ``[0, K)``; a 1-D array is one sequence.

    Returns:
        (n, L) natural-log conditional probabilities; their cumulative sum along a row is the
        log-likelihood of each prefix. At an impossible output the entry is ``-inf``, and
        every later entry of that row is ``-inf`` too (the sequence has probability 0).
    """
    outputs = np.atleast_2d(np.asarray(outputs))
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be a (n, L) array of integers, got shape {outputs.shape}")
    if outputs.size and not np.issubdtype(outputs.dtype, np.integer):
        raise ValueError(f"outputs must be integers, got dtype {outputs.dtype}")
    if outputs.size and (outputs.min() < 0 or outputs.max() >= hmm.n_outputs):
        raise ValueError(f"outputs must lie in [0, {hmm.n_outputs}), got range [{outputs.min()}, {outputs.max()}]")
    n, length = outputs.shape
    steps = np.zeros((n, length))
    if length == 0 or n == 0:
        return steps
    emission_t = np.ascontiguousarray(hmm.emission.T)  # (K, M)
    alpha = hmm.start[None, :] * emission_t[outputs[:, 0]]  # (n, M)
    with np.errstate(divide="ignore"):
        for t in range(length):
            if t > 0:
                alpha = (alpha @ hmm.transition) * emission_t[outputs[:, t]]
            scale = alpha.sum(axis=1)
            steps[:, t] = np.log(scale)
            alpha = alpha / np.where(scale > 0, scale, 1.0)[:, None]
    return steps


def log_likelihood(hmm: HMM, outputs: np.ndarray) -> np.ndarray:
    """Log-probability of each output sequence under the HMM (forward algorithm, scaled).

    The sum over steps of :func:`step_log_likelihoods`.

    Args:
        hmm: the model.
        outputs: (n, L) integer outputs in ``[0, K)``; a 1-D array is one sequence.

    Returns:
        (n,) natural-log likelihoods (``-inf`` for impossible sequences).
    """
    return step_log_likelihoods(hmm, outputs).sum(axis=1)


def brute_force_sequence_probability(hmm: HMM, outputs: np.ndarray) -> float:
    """P(outputs) by summing over every hidden path (M**L terms): a test oracle for tiny L."""
    outputs = np.asarray(outputs)
    total = 0.0
    for path in itertools.product(range(hmm.n_states), repeat=len(outputs)):
        p = hmm.start[path[0]] * hmm.emission[path[0], outputs[0]]
        for t in range(1, len(outputs)):
            p *= hmm.transition[path[t - 1], path[t]] * hmm.emission[path[t], outputs[t]]
        total += p
    return float(total)
