"""Re-fitting categorical HMMs to output sequences: what hidden structure would one infer?

Categorical HMMs with ``K = 1 .. max_states`` hidden states are fitted by expectation-
maximisation (``hmmlearn``'s :class:`~hmmlearn.hmm.CategoricalHMM`, scaled forward-backward,
several seeded random restarts, the restart with the best training likelihood kept) to one
set of sequences, and scored on another (held-out) set with the forward algorithm of
:mod:`hmmrnn.hmm`. The number of states is chosen by held-out likelihood with a
one-standard-error rule (:func:`choose_n_states`), and a fitted model is compared with the
true one after matching its states to the true states (:func:`match_states`, Hungarian
assignment on the emission rows).

Notation: ``K`` hidden states of a fitted model, ``M`` of the true one, ``C`` outputs;
sequences are integer arrays of shape (n, L).

``hmmlearn`` is an optional dependency (the ``book`` and ``test`` extras): it is imported
when a fit is made, and its absence is reported with the command that installs it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .hmm import HMM, HMMError, log_likelihood

__all__ = [
    "RefitResult",
    "StateMatch",
    "fit_categorical_hmm",
    "refit",
    "choose_n_states",
    "match_states",
]

SELECTION_N_SE = 2.0
"""The one-standard-error rule of :func:`choose_n_states`: the smallest K whose held-out
log-likelihood is within this many standard errors of the best K's."""


class RefitResult(NamedTuple):
    """HMMs with 1 .. max_states states fitted to one sample, scored on a held-out sample.

    Attributes:
        n_states: (S,) the candidate numbers of states, 1 .. S.
        models: the best fit (over restarts, by training likelihood) for each K, as :class:`HMM`.
        train_loglik: (S,) training log-likelihood per step of each best fit.
        heldout: (S, n_test) held-out log-likelihood of each test sequence under each fit.
        heldout_per_step: (S,) total held-out log-likelihood divided by the number of test steps.
        converged: (S,) whether the best restart met the tolerance within ``n_iter`` iterations.
        chosen: the selected number of states (:func:`choose_n_states`).
    """

    n_states: np.ndarray
    models: tuple[HMM, ...]
    train_loglik: np.ndarray
    heldout: np.ndarray
    heldout_per_step: np.ndarray
    converged: np.ndarray
    chosen: int


class StateMatch(NamedTuple):
    """A fitted HMM's states matched to the true states.

    Attributes:
        assignment: (min(K, M),) pairs as two arrays stacked: ``assignment[0]`` fitted state
            indices, ``assignment[1]`` the true states they are matched to.
        emission_error: largest absolute difference between matched emission rows.
        transition_error: largest absolute difference between the transition matrices
            restricted to the matched states (NaN unless K == M: with different numbers of
            states the matrices do not correspond).
    """

    assignment: np.ndarray
    emission_error: float
    transition_error: float


@contextmanager
def _quiet_hmmlearn() -> Iterator[None]:
    """Silence hmmlearn's logger during a fit.

    It logs "Model is not converging" when the likelihood falls by more than sqrt(machine
    epsilon) between iterations (rounding near convergence in the scaled recursion), and
    notes on unused states; convergence is reported in :class:`RefitResult` instead.
    """
    logger = logging.getLogger("hmmlearn")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _categorical_hmm_class() -> type:
    try:
        from hmmlearn.hmm import CategoricalHMM
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "re-fitting HMMs needs hmmlearn: pip install 'hmmlearn>=0.3.3' (or pip install -e '.[book]')"
        ) from err
    return CategoricalHMM


def _check_sequences(outputs: np.ndarray, n_outputs: int, name: str) -> np.ndarray:
    array = np.asarray(outputs)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, L) array of outputs, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n_outputs:
        raise ValueError(f"{name} must lie in [0, {n_outputs}), got range [{array.min()}, {array.max()}]")
    return array.astype(np.int64, copy=False)


def fit_categorical_hmm(
    outputs: np.ndarray,
    n_states: int,
    n_outputs: int,
    rng: np.random.Generator,
    restarts: int = 3,
    n_iter: int = 100,
    tol: float = 1e-5,
    stay: float = 0.9,
) -> tuple[HMM, float, bool]:
    """The best of ``restarts`` EM fits of a K-state categorical HMM (by training likelihood).

    Every restart starts from a uniform start distribution, a *sticky* transition matrix
    (``stay`` on the diagonal, the rest spread evenly) and emission rows drawn from a flat
    Dirichlet distribution with ``rng``. Sticky starts suit processes that dwell (all six
    targets do): from hmmlearn's default start (sparse Dirichlet transition rows) EM found
    the optimum of a four-state cyclic fit in 1 of 10 restarts, from sticky starts in 5 of 6.
    A restart that ends with a state never visited (a transition row of zeros) is not a
    valid HMM and is skipped.

    Args:
        outputs: (n, L) integer sequences in ``[0, n_outputs)``.
        n_states: K >= 1.
        n_outputs: C, the number of outputs.
        rng: source of the restarts' emission matrices.
        restarts: number of random restarts (>= 1).
        n_iter: largest number of EM iterations per restart.
        tol: convergence tolerance in nats per output step (hmmlearn's absolute tolerance
            is this times the number of steps).
        stay: diagonal of the initial transition matrix (0 < stay < 1).

    Returns:
        (model, training log-likelihood per step, converged).

    Raises:
        RuntimeError: no restart produced a valid HMM.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not 0.0 < stay < 1.0:
        raise ValueError(f"stay must lie strictly between 0 and 1, got {stay}")
    if int(n_states) != n_states or n_states < 1 or restarts < 1 or n_iter < 1 or not tol > 0:
        raise ValueError(f"need n_states >= 1, restarts >= 1, n_iter >= 1, tol > 0; got {n_states}, {restarts}, {n_iter}, {tol}")
    outputs = _check_sequences(outputs, n_outputs, "outputs")
    n, length = outputs.shape
    column = outputs.reshape(-1, 1)
    lengths = [length] * n
    CategoricalHMM = _categorical_hmm_class()
    k = int(n_states)
    sticky = np.full((k, k), (1.0 - stay) / max(k - 1, 1)) + np.eye(k) * (stay - (1.0 - stay) / max(k - 1, 1))
    if k == 1:
        sticky = np.ones((1, 1))
    best: tuple[HMM, float, bool] | None = None
    for _ in range(int(restarts)):
        model = CategoricalHMM(
            n_components=k, n_features=int(n_outputs), n_iter=int(n_iter), tol=float(tol) * outputs.size,
            implementation="scaling", init_params="", params="ste",
        )
        model.startprob_ = np.full(k, 1.0 / k)
        model.transmat_ = sticky.copy()
        model.emissionprob_ = rng.dirichlet(np.ones(int(n_outputs)), size=k)
        with _quiet_hmmlearn():
            model.fit(column, lengths=lengths)
        try:
            fitted = HMM(model.startprob_, model.transmat_, model.emissionprob_, name=f"fit K={n_states}")
        except HMMError:
            continue
        loglik = float(log_likelihood(fitted, outputs).sum()) / outputs.size
        if best is None or loglik > best[1]:
            best = (fitted, loglik, bool(model.monitor_.converged))
    if best is None:
        raise RuntimeError(f"no restart of the {n_states}-state fit produced a valid HMM ({restarts} restarts)")
    return best


def choose_n_states(heldout: np.ndarray, n_se: float = SELECTION_N_SE) -> int:
    """The number of states chosen by held-out likelihood, with a one-standard-error rule.

    The best K maximises the total held-out log-likelihood. A smaller K is as good when its
    deficit, ``mean_i (ll_best[i] - ll_K[i])`` over test sequences i, is at most ``n_se``
    standard errors of that mean (paired over the same sequences); the smallest such K is
    chosen, so that a duplicated state that adds nothing is not counted.

    Args:
        heldout: (S, n_test) held-out log-likelihood of each test sequence, row k-1 for K = k.
        n_se: the allowance in standard errors.

    Returns:
        The chosen K (1-based).

    Raises:
        ValueError: a non-finite held-out likelihood (a test sequence impossible under a fit).
    """
    heldout = np.asarray(heldout, dtype=np.float64)
    if heldout.ndim != 2 or heldout.shape[1] < 2:
        raise ValueError(f"heldout must be (S, n_test) with n_test >= 2, got shape {heldout.shape}")
    if not np.all(np.isfinite(heldout)):
        bad = np.argwhere(~np.isfinite(heldout))[0]
        raise ValueError(f"held-out log-likelihood is not finite for K={bad[0] + 1}, test sequence {bad[1]}")
    best = int(np.argmax(heldout.sum(axis=1)))
    deficit = heldout[best][None, :] - heldout  # (S, n_test)
    n_test = heldout.shape[1]
    mean = deficit.mean(axis=1)
    se = deficit.std(axis=1, ddof=1) / np.sqrt(n_test)
    within = np.flatnonzero(mean <= n_se * se)
    return int(within[0]) + 1


def refit(
    train: np.ndarray,
    test: np.ndarray,
    n_outputs: int,
    rng: np.random.Generator,
    max_states: int = 6,
    restarts: int = 3,
    n_iter: int = 100,
    tol: float = 1e-5,
    n_se: float = SELECTION_N_SE,
) -> RefitResult:
    """Fit HMMs with K = 1 .. ``max_states`` states to ``train`` and choose K on ``test``.

    Args:
        train: (n_train, L) sequences the HMMs are fitted to.
        test: (n_test, L') held-out sequences (n_test >= 2).
        n_outputs: C.
        rng: source of every restart's initial emissions (drawn in order K = 1, 2, ...).
        max_states: the largest K.
        restarts, n_iter, tol: as :func:`fit_categorical_hmm`.
        n_se: as :func:`choose_n_states`.
    """
    train = _check_sequences(train, n_outputs, "train")
    test = _check_sequences(test, n_outputs, "test")
    if max_states < 1:
        raise ValueError(f"max_states must be >= 1, got {max_states}")
    models, train_ll, converged, heldout = [], [], [], []
    for k in range(1, int(max_states) + 1):
        model, loglik, ok = fit_categorical_hmm(train, k, n_outputs, rng, restarts=restarts, n_iter=n_iter, tol=tol)
        models.append(model)
        train_ll.append(loglik)
        converged.append(ok)
        heldout.append(log_likelihood(model, test))
    heldout_arr = np.array(heldout)
    return RefitResult(
        n_states=np.arange(1, int(max_states) + 1),
        models=tuple(models),
        train_loglik=np.array(train_ll),
        heldout=heldout_arr,
        heldout_per_step=heldout_arr.sum(axis=1) / test.size,
        converged=np.array(converged),
        chosen=choose_n_states(heldout_arr, n_se),
    )


def match_states(fitted: HMM, truth: HMM) -> StateMatch:
    """Match a fitted HMM's states to the true states and measure the parameter errors.

    States are paired by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
    on the L1 distance between emission rows; with K != M only min(K, M) states are paired.
    Hidden states are identifiable only up to relabelling, and only through what they emit,
    hence the matching on emissions.

    Raises:
        ValueError: the two HMMs have different numbers of outputs.
    """
    if fitted.n_outputs != truth.n_outputs:
        raise ValueError(f"the fitted HMM has {fitted.n_outputs} outputs, the true one {truth.n_outputs}")
    cost = np.abs(fitted.emission[:, None, :] - truth.emission[None, :, :]).sum(axis=-1)  # (K, M)
    rows, cols = linear_sum_assignment(cost)
    emission_error = float(np.max(np.abs(fitted.emission[rows] - truth.emission[cols])))
    if fitted.n_states == truth.n_states:
        order = rows[np.argsort(cols)]  # fitted state matched to true state 0, 1, ...
        transition_error = float(np.max(np.abs(fitted.transition[np.ix_(order, order)] - truth.transition)))
    else:
        transition_error = float("nan")
    return StateMatch(np.stack([rows, cols]), emission_error, transition_error)
