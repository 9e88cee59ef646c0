"""hmmrnn.family.fit_uncertainty: standard errors against their analytic values."""

import numpy as np
import pytest

from hmmrnn import family


def test_fit_uncertainty_of_independent_outputs_is_binomial():
    # i.i.d. fair binary outputs: a marginal has variance p (1 - p) / (n L), the lability
    # (a change between independent fair draws has probability 1/2) about 1/2 * 1/2 / (n (L - 1))
    rng = np.random.default_rng(1)
    n, length = 4000, 50
    outputs = rng.integers(0, 2, size=(n, length))
    exact = np.full((2, 2), 0.5)
    u = family.fit_uncertainty(outputs, exact, np.random.default_rng(2), n_boot=100)
    assert u.n == n
    np.testing.assert_allclose(u.marginals, np.sqrt(0.25 / (n * length)), rtol=0.1)
    # consecutive changes of i.i.d. draws are pairwise independent: the same binomial variance
    assert u.lability == pytest.approx(np.sqrt(0.25 / (n * (length - 1))), rel=0.1)
    # a squared error of an estimated 1/2 near the exact 1/2: of the order of its variance
    assert 0 < u.max_transition_error < 1e-4


def test_fit_uncertainty_counts_sticky_sequences_as_correlated():
    # sequences that never change output: the marginals' error is that of n whole sequences,
    # sqrt(L) times the binomial error of n L independent steps; the lability has no spread
    rng = np.random.default_rng(3)
    n, length = 2000, 40
    outputs = np.repeat(rng.integers(0, 2, size=(n, 1)), length, axis=1)
    u = family.fit_uncertainty(outputs, np.eye(2), np.random.default_rng(4), n_boot=50)
    np.testing.assert_allclose(u.marginals, np.sqrt(0.25 / n), rtol=0.1)
    assert u.lability == 0.0
    assert u.max_transition_error == 0.0


def test_fit_uncertainty_refuses_bad_shapes():
    with pytest.raises(ValueError):
        family.fit_uncertainty(np.zeros((1, 10), dtype=int), np.eye(2), np.random.default_rng(0))
    with pytest.raises(ValueError):
        family.fit_uncertainty(np.full((5, 10), 3), np.eye(2), np.random.default_rng(0))
