"""Tests of hmmrnn.emulation and the per-step forward algorithm of hmmrnn.hmm.

Oracles written here, independently of the package: brute-force sums over every hidden path
(``hmm.brute_force_sequence_probability`` for single sequences and a path enumeration for
whole distributions), enumeration of every output sequence of a short length with a naive
run counter, a log-space (logsumexp) forward recursion, and closed forms (a Markov chain
whose outputs reveal its states; an i.i.d. source).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import logsumexp

from hmmrnn import emulation
from hmmrnn.emulation import (
    BlockComparison,
    DwellComparison,
    LikelihoodGap,
    block_counts,
    block_divergence,
    block_probabilities,
    compare_blocks,
    dwell_bins,
    dwell_time_distribution,
    entropy_rate_bounds,
    expected_run_counts,
    likelihood_gap,
    mean_dwell_time,
    prefix_log_loss,
    run_length_counts,
    verdict,
)
from hmmrnn.hmm import (
    HMM,
    brute_force_sequence_probability,
    get_hmm,
    log_likelihood,
    output_transition_matrix,
    sample,
    stationary_distribution,
    step_log_likelihoods,
    without_output,
)


def stationary_copy(hmm: HMM) -> HMM:
    return HMM(stationary_distribution(hmm), hmm.transition, hmm.emission)


def naive_runs(seq, k):
    """Lengths of the complete runs of k in one sequence (both neighbours inside)."""
    runs, t, n = [], 0, len(seq)
    while t < n:
        if seq[t] == k:
            u = t
            while u < n and seq[u] == k:
                u += 1
            if t > 0 and u < n:
                runs.append(u - t)
            t = u
        else:
            t += 1
    return runs


# --------------------------------------------------------------------------- forward algorithm

@pytest.mark.parametrize("seed", range(4))
def test_step_log_likelihoods_are_conditional_probabilities(seed, make_random_hmm):
    rng = np.random.default_rng(200 + seed)
    hmm = make_random_hmm(rng, 2 + seed % 3, 2 + seed % 2, zeros=seed % 2 == 1)
    seqs = rng.integers(0, hmm.n_outputs, size=(10, 5))
    steps = step_log_likelihoods(hmm, seqs)
    assert steps.shape == (10, 5)
    cumulative = np.cumsum(steps, axis=1)
    for row, cum in zip(seqs, cumulative):
        for t in range(1, 6):
            brute = brute_force_sequence_probability(hmm, row[:t])
            if brute == 0:
                assert cum[t - 1] == -np.inf
            else:
                assert cum[t - 1] == pytest.approx(math.log(brute), rel=1e-10, abs=1e-12)
    np.testing.assert_array_equal(cumulative[:, -1], log_likelihood(hmm, seqs))


def test_step_log_likelihoods_match_log_space_forward_on_long_sequences():
    # probabilities of 1,000-step sequences underflow; the log-space recursion does not
    hmm = get_hmm("cyclic4")  # emission zeros: log 0 = -inf entries in the recursion
    _, seqs = sample(hmm, 4, 1000, np.random.default_rng(3))
    with np.errstate(divide="ignore"):
        log_t, log_e = np.log(hmm.transition), np.log(hmm.emission)
        log_alpha = np.log(hmm.start)[None, :] + log_e[:, seqs[:, 0]].T
    expected = np.empty(seqs.shape)
    previous = np.zeros(len(seqs))
    for t in range(seqs.shape[1]):
        if t > 0:
            log_alpha = logsumexp(log_alpha[:, :, None] + log_t[None], axis=1) + log_e[:, seqs[:, t]].T
        total = logsumexp(log_alpha, axis=1)
        expected[:, t] = total - previous
        previous = total
    np.testing.assert_allclose(step_log_likelihoods(hmm, seqs), expected, rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(expected))


def test_step_log_likelihoods_validate_input():
    hmm = get_hmm("linear2")
    with pytest.raises(ValueError, match="lie in"):
        step_log_likelihoods(hmm, np.array([[0, 3]]))
    with pytest.raises(ValueError, match="integers"):
        step_log_likelihoods(hmm, np.array([[0.0, 1.0]]))


def test_prefix_log_loss_and_gap():
    hmm = get_hmm("linear2")
    _, seqs = sample(hmm, 6, 50, np.random.default_rng(0))
    loss = prefix_log_loss(hmm, seqs, [1, 10, 50])
    np.testing.assert_allclose(loss[:, 2], -log_likelihood(hmm, seqs) / 50)
    np.testing.assert_allclose(loss[:, 1], -log_likelihood(hmm, seqs[:, :10]) / 10)
    with pytest.raises(ValueError, match="prefix lengths"):
        prefix_log_loss(hmm, seqs, [0, 51])
    a = np.array([[1.0], [2.0], [3.0]])
    b = np.array([[1.0], [1.0], [1.0], [1.0]])
    gap = likelihood_gap(a, b, [5], confidence=0.95)
    assert isinstance(gap, LikelihoodGap)
    assert gap.gap[0] == pytest.approx(1.0)
    assert gap.half_width[0] == pytest.approx(1.959963985 * 1.0 / math.sqrt(3), rel=1e-8)
    inf = likelihood_gap(np.array([[1.0], [np.inf]]), b, [5])
    assert inf.gap[0] == np.inf  # reported, not dropped


# --------------------------------------------------------------------------- entropy rate and blocks

def enumerate_blocks(hmm: HMM, order: int) -> np.ndarray:
    """Probability of every word (first output most significant), by brute force from the
    stationary start."""
    stationary = stationary_copy(hmm)
    k = hmm.n_outputs
    return np.array([brute_force_sequence_probability(stationary, np.array(w))
                     for w in itertools.product(range(k), repeat=order)])


@pytest.mark.parametrize("seed", range(3))
def test_block_probabilities_vs_brute_force(seed, make_random_hmm):
    rng = np.random.default_rng(300 + seed)
    hmm = make_random_hmm(rng, 3, 2 + seed % 2, zeros=seed == 2)
    for order in (1, 2, 4):
        np.testing.assert_allclose(block_probabilities(hmm, order), enumerate_blocks(hmm, order), rtol=1e-12, atol=1e-15)


def test_block_counts_vs_loop():
    rng = np.random.default_rng(1)
    seqs = rng.integers(0, 3, size=(5, 12))
    for order in (1, 3, 12):
        expected = np.zeros(3**order, dtype=np.int64)
        for row in seqs:
            for t in range(12 - order + 1):
                expected[int("".join(map(str, row[t : t + order])), 3)] += 1
        np.testing.assert_array_equal(block_counts(seqs, order, 3), expected)
    with pytest.raises(ValueError, match="order"):
        block_counts(seqs, 13, 3)


def test_block_divergence():
    p = np.array([0.5, 0.25, 0.25])
    assert block_divergence(np.array([2, 1, 1]), p) == pytest.approx(0.0, abs=1e-15)
    assert block_divergence(np.array([1, 1, 0]), p) == pytest.approx(0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(0.5 / 0.25))
    assert block_divergence(np.array([1, 0, 1]), np.array([1.0, 0.0, 0.0])) == np.inf


def test_entropy_rate_of_a_visible_markov_chain():
    # outputs reveal the states: the rate is the chain's, -sum_i pi_i sum_j T_ij log T_ij
    transition = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    hmm = HMM(np.full(3, 1 / 3), transition, np.eye(3))
    pi = stationary_distribution(hmm)
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = -np.sum(pi[:, None] * np.where(transition > 0, transition * np.log(transition), 0.0))
    lower, upper = entropy_rate_bounds(hmm, 4)
    assert lower == pytest.approx(exact, abs=1e-12) and upper == pytest.approx(exact, abs=1e-12)


def test_entropy_rate_of_an_iid_source_and_bracketing():
    iid = HMM([1.0], [[1.0]], [[0.2, 0.3, 0.5]])
    h = -sum(p * math.log(p) for p in (0.2, 0.3, 0.5))
    assert entropy_rate_bounds(iid, 3) == pytest.approx((h, h), abs=1e-12)
    hmm = get_hmm("cyclic4")
    brackets = [entropy_rate_bounds(hmm, n) for n in (4, 6, 8)]
    for (lo1, hi1), (lo2, hi2) in zip(brackets, brackets[1:]):
        assert lo1 <= lo2 + 1e-12 and hi2 <= hi1 + 1e-12 and lo2 <= hi2
    # the per-step log-loss of long HMM samples estimates the rate (Shannon-McMillan-Breiman)
    _, seqs = sample(hmm, 200, 1000, np.random.default_rng(5))
    steps = -step_log_likelihoods(hmm, seqs)[:, 200:]
    estimate, se = steps.mean(), steps.mean(axis=1).std(ddof=1) / math.sqrt(len(seqs))
    lo, hi = brackets[-1]
    assert lo - 4 * se <= estimate <= hi + 4 * se


# --------------------------------------------------------------------------- dwell times

@pytest.mark.parametrize("seed", range(3))
def test_dwell_time_distribution_vs_brute_force(seed, make_random_hmm):
    rng = np.random.default_rng(400 + seed)
    hmm = stationary_copy(make_random_hmm(rng, 3, 3, zeros=seed == 1))
    k = 1
    others = [o for o in range(3) if o != k]

    def pattern(d):  # P(o_1 != k, o_2..o_{d+1} = k, o_{d+2} != k), summing over the other outputs
        return sum(brute_force_sequence_probability(hmm, np.array([a] + [k] * d + [b])) for a in others for b in others)

    start = sum(brute_force_sequence_probability(hmm, np.array([a, k])) for a in others)
    expected = np.array([pattern(d) for d in range(1, 5)]) / start
    np.testing.assert_allclose(dwell_time_distribution(hmm, k, 4), expected, rtol=1e-10)
    full = dwell_time_distribution(hmm, k, 400)
    assert full.sum() == pytest.approx(1.0, abs=1e-9)
    mean = mean_dwell_time(hmm, k)
    assert mean == pytest.approx(np.sum(np.arange(1, 401) * full), rel=1e-8)
    assert mean == pytest.approx(1.0 / (1.0 - output_transition_matrix(hmm)[k, k]), rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_expected_run_counts_vs_enumeration(seed, make_random_hmm):
    # every output sequence of 8 steps with its exact probability (the forward algorithm,
    # checked against brute force above), and a naive run counter
    rng = np.random.default_rng(500 + seed)
    hmm = make_random_hmm(rng, 2 + seed, 2 + seed % 2, zeros=seed == 2)  # start need not be stationary
    length, k = 8, 0
    seqs = np.array(list(itertools.product(range(hmm.n_outputs), repeat=length)))
    probs = np.exp(log_likelihood(hmm, seqs))
    expected = np.zeros(length - 2)
    for seq, p in zip(seqs.tolist(), probs):
        for d in naive_runs(seq, k):
            expected[d - 1] += p
    np.testing.assert_allclose(expected_run_counts(hmm, k, length), expected, rtol=1e-10, atol=1e-15)


def test_run_length_counts_vs_naive_and_simulation():
    rng = np.random.default_rng(7)
    seqs = rng.integers(0, 2, size=(30, 15))
    for k in (0, 1):
        expected = np.zeros(13, dtype=np.int64)
        for row in seqs:
            for d in naive_runs(list(row), k):
                expected[d - 1] += 1
        np.testing.assert_array_equal(run_length_counts(seqs, k, 2), expected)
    # simulated HMM sequences: mean counts match the exact expectation
    hmm = get_hmm("linear3")
    _, sim = sample(hmm, 4000, 30, np.random.default_rng(8))
    observed = run_length_counts(sim, 0, 3) / 4000
    exact = expected_run_counts(hmm, 0, 30)
    assert observed.sum() == pytest.approx(exact.sum(), rel=0.03)
    assert np.abs(observed[:5] - exact[:5]).max() < 0.02


def test_one_step_runs_at_switches_vs_loop():
    rng = np.random.default_rng(9)
    seqs = np.repeat(rng.integers(0, 3, size=(20, 8)), 4, axis=1)  # dwells of 4 steps
    flips = rng.random(seqs.shape) < 0.1
    seqs = np.where(flips, rng.integers(0, 3, size=seqs.shape), seqs)
    w, k = 3, 1
    runs = at_switch = 0
    for row in seqs:
        for t in range(w, len(row) - w):
            if row[t] == k and row[t - 1] != k and row[t + 1] != k:
                runs += 1
                major = [int(np.argmax(np.bincount(part, minlength=3))) for part in (row[t - w : t], row[t + 1 : t + 1 + w])]
                at_switch += major[0] != major[1]
    total, share = emulation.one_step_runs_at_switches(seqs, k, 3, window=w)
    assert total == runs and runs > 10
    assert share == pytest.approx(at_switch / runs)
    assert np.isnan(emulation.one_step_runs_at_switches(np.zeros((2, 10), dtype=int), 1, 3, window=3)[1])


def test_dwell_bins_cover_every_duration():
    for length in (3, 5, 30, 1000):
        edges = dwell_bins(length)
        assert edges[0] == 1 and edges[-1] == length - 1 and np.all(np.diff(edges) > 0)
    np.testing.assert_array_equal(dwell_bins(30), [1, 2, 3, 4, 6, 8, 12, 16, 24, 29])
    counts = np.arange(1, 28, dtype=float)  # durations 1 .. 27
    binned = emulation.binned_distribution(counts, dwell_bins(29))
    assert binned.sum() == pytest.approx(1.0)
    assert binned[3] == pytest.approx((4 + 5) / counts.sum())


# --------------------------------------------------------------------------- comparisons and the verdict

def test_likelihood_gap_sees_a_dropped_rare_output():
    # an exact sampler that never emits the rare output is *more* likely under the HMM per
    # step than the HMM's own samples (it skips the improbable steps): a negative gap
    hmm = get_hmm("linear2")
    rng = np.random.default_rng(12)
    _, control = sample(hmm, 100, 300, rng)
    _, wrong = sample(without_output(hmm, 1), 100, 300, rng)
    gap = likelihood_gap(prefix_log_loss(hmm, wrong, [300]), prefix_log_loss(hmm, control, [300]), [300])
    assert gap.gap[0] + gap.half_width[0] < -0.02


def test_compare_blocks_corrects_by_the_control():
    control = np.array([[0.01, 0.02], [0.03, 0.04]])  # mean 0.02, 0.03; sd 0.01414
    result = compare_blocks(np.array([0.02, 0.2]), control, z_threshold=4.0)
    assert isinstance(result, BlockComparison)
    np.testing.assert_allclose(result.excess_rate, [0.0, (0.2 - 0.03) / 2])
    assert result.first_mismatch == 2 and result.first_excess == 2  # 0.085 nats/step > 0.01
    tiny = compare_blocks(np.array([0.02, 0.03 + 0.019]), control)  # z = 1.3, rate 0.0095 <= 0.01
    assert tiny.first_mismatch is None and tiny.first_excess is None
    narrow = np.array([[0.01, 0.02], [0.0101, 0.0201]])  # a tight control: sd 7e-5
    detected = compare_blocks(np.array([0.01005, 0.02105]), narrow)  # z = 14 at n = 2, rate 0.0005
    assert detected.first_mismatch == 2 and detected.first_excess is None
    assert compare_blocks(np.array([0.02, 0.03]), control).first_mismatch is None
    infinite = compare_blocks(np.array([np.inf, 0.03]), control)
    assert infinite.first_mismatch == 1 and infinite.first_excess == 1


def _dwell(excess):
    return DwellComparison(0, np.array([1, 2]), np.array([1.0]), np.array([1.0]), 10, excess, np.zeros(2), excess)


def test_verdict_rule():
    ok_pairs = {"transition_error": True, "frequent_marginals": True}
    gap_ok = LikelihoodGap(np.array([10, 100]), np.zeros(2), np.zeros(2), np.array([0.5, 0.004]), np.array([0.1, 0.005]), 0.95)
    gap_bad = gap_ok._replace(gap=np.array([0.0, -0.006]))  # |gap| + half-width = 0.011 > 0.01
    blocks_ok = BlockComparison(np.array([1, 2]), np.zeros(2), np.zeros((2, 2)), np.array([0.0, 0.01]), np.zeros(2), None, None)
    blocks_bad = blocks_ok._replace(excess_rate=np.array([0.0, 0.011]))
    good = verdict(ok_pairs, gap_ok, blocks_ok, [_dwell(0.05)], 0.012, 0.002)
    assert good.label == "emulates the HMM" and good.failed == ()
    assert verdict(ok_pairs, gap_bad, blocks_ok, [_dwell(0.0)], 0.0, 0.0).failed == ("likelihood",)
    assert verdict(ok_pairs, gap_ok, blocks_bad, [_dwell(0.0)], 0.0, 0.0).label == "matches pairs only"
    assert verdict(ok_pairs, gap_ok, blocks_ok, [_dwell(0.051)], 0.0, 0.0).failed == ("dwell",)
    assert verdict(ok_pairs, gap_ok, blocks_ok, [_dwell(0.0)], 0.02, 0.0).failed == ("structure",)
    assert verdict(ok_pairs, gap_ok, blocks_ok, [_dwell(0.0)], np.nan, 0.0).failed == ("structure",)
    bad_pairs = {"transition_error": False, "frequent_marginals": True}
    assert verdict(bad_pairs, gap_ok, blocks_ok, [_dwell(0.0)], 0.0, 0.0).label == "differs"


def test_assess_an_exact_sampler_against_its_own_control():
    # an exact sampler of the HMM, measured like a network. The likelihood criterion is an
    # equivalence test (its interval must fit inside +-0.01 nats/step): at this small size
    # the interval is wider than that, so only the gap's consistency with 0 is asserted
    hmm = get_hmm("fully3")
    rng = np.random.default_rng(11)
    kwargs = dict(refit_kwargs={"max_states": 4, "restarts": 2, "n_iter": 50})
    control = emulation.make_control(hmm, 60, 300, rng, [10, 300], pair_size=(2000, 30), repeats=3, max_order=3,
                                     n_fit=10, fit_length=300, **kwargs)
    lower, upper = control.entropy_rate
    assert lower <= upper and upper - lower < 1e-6
    _, outputs = sample(hmm, 60, 300, rng)
    _, pairs = sample(hmm, 2000, 30, rng)
    result = emulation.assess("exact", outputs, pairs, control, rng, n_fit=10, fit_length=300, **kwargs)
    assert abs(result.likelihood.gap[-1]) < 3 * result.likelihood.half_width[-1] + 1e-12
    assert result.refit.chosen == 3 and control.refit.chosen == 3
    criteria = result.verdict.criteria
    assert criteria["pairs"] and criteria["blocks"] and criteria["dwell"] and criteria["structure"]
    with pytest.raises(ValueError, match="control was made"):
        emulation.assess("exact", outputs[:50], pairs, control, rng, n_fit=10, fit_length=300, **kwargs)


def test_plot_dwell_distributions_draws_densities():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hmmrnn.plotting import plot_dwell_distributions

    fig, ax = plt.subplots()
    edges = np.array([1, 2, 3, 4, 6])
    plot_dwell_distributions(ax, edges, {"a": np.array([0.4, 0.3, 0.1, 0.2])})
    (stairs,) = ax.patches
    np.testing.assert_allclose(stairs.get_data().values, [0.4, 0.3, 0.1, 0.1])
    with pytest.raises(ValueError, match="bins"):
        plot_dwell_distributions(ax, edges, {"b": np.array([1.0])})
    plt.close(fig)
