"""Tests of hmmrnn.refit: EM re-fits recover a known HMM; model selection; state matching."""

from __future__ import annotations

import numpy as np
import pytest

from hmmrnn.hmm import HMM, get_hmm, log_likelihood, sample
from hmmrnn.refit import choose_n_states, fit_categorical_hmm, match_states, refit

pytest.importorskip("hmmlearn")


def test_refit_recovers_a_known_hmm_from_its_own_samples():
    truth = get_hmm("fully3")
    rng = np.random.default_rng(0)
    _, outputs = sample(truth, 40, 500, rng)
    result = refit(outputs[:20], outputs[20:], 3, np.random.default_rng(1), max_states=4, restarts=2)
    assert result.chosen == 3
    np.testing.assert_array_equal(result.n_states, [1, 2, 3, 4])
    assert result.heldout.shape == (4, 20) and np.all(result.converged)
    match = match_states(result.models[2], truth)
    assert match.emission_error < 0.02
    assert match.transition_error < 0.02
    # the fit explains held-out data as well as the truth does (it cannot do much better)
    true_heldout = log_likelihood(truth, outputs[20:]).sum() / outputs[20:].size
    assert abs(result.heldout_per_step[2] - true_heldout) < 0.002
    # too few states explain it clearly worse
    assert result.heldout_per_step[1] < true_heldout - 0.05


def test_fit_is_reproducible_and_validates():
    truth = get_hmm("linear2")
    _, outputs = sample(truth, 5, 200, np.random.default_rng(2))
    a = fit_categorical_hmm(outputs, 2, 3, np.random.default_rng(3), restarts=2, n_iter=20)
    b = fit_categorical_hmm(outputs, 2, 3, np.random.default_rng(3), restarts=2, n_iter=20)
    np.testing.assert_array_equal(a[0].emission, b[0].emission)
    assert a[1] == b[1]
    with pytest.raises(TypeError, match="Generator"):
        fit_categorical_hmm(outputs, 2, 3, 3)
    with pytest.raises(ValueError, match="lie in"):
        fit_categorical_hmm(outputs + 1, 2, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="stay"):
        fit_categorical_hmm(outputs, 2, 3, np.random.default_rng(0), stay=1.0)


def test_one_state_fit_is_the_marginal():
    outputs = np.array([[0, 0, 1, 2], [2, 2, 2, 0]])
    model, loglik, _ = fit_categorical_hmm(outputs, 1, 3, np.random.default_rng(0), restarts=1)
    np.testing.assert_allclose(model.emission[0], [3 / 8, 1 / 8, 4 / 8], atol=1e-6)
    assert loglik == pytest.approx((3 * np.log(3 / 8) + np.log(1 / 8) + 4 * np.log(4 / 8)) / 8, abs=1e-6)


def test_choose_n_states_one_standard_error_rule():
    base = np.array([-10.0, -11.0, -12.0, -9.0])
    heldout = np.stack([base - 5.0, base, base + np.array([0.01, -0.01, 0.02, -0.01]), base + np.array([0.02, -0.01, 0.03, -0.02])])
    # K=3 and K=4 beat K=2 by a hair (within 2 standard errors): K=2 is chosen
    assert choose_n_states(heldout) == 2
    clearly = np.stack([base - 5.0, base, base + np.array([1.0, 1.1, 0.9, 1.0])])
    assert choose_n_states(clearly) == 3
    with pytest.raises(ValueError, match="not finite"):
        choose_n_states(np.array([[0.0, -np.inf], [0.0, 0.0]]))


def test_match_states_undoes_a_permutation():
    truth = get_hmm("cyclic4")
    perm = np.array([2, 0, 3, 1])
    relabelled = HMM(truth.start[perm], truth.transition[np.ix_(perm, perm)], truth.emission[perm])
    match = match_states(relabelled, truth)
    assert match.emission_error == 0.0 and match.transition_error == 0.0
    np.testing.assert_array_equal(perm[match.assignment[0]], match.assignment[1])
    smaller = HMM([1.0], [[1.0]], [[0.45, 0.5, 0.05]])
    partial = match_states(smaller, truth)
    assert partial.assignment.shape == (2, 1) and np.isnan(partial.transition_error)
