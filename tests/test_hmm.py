"""Tests of hmmrnn.hmm: validation, the paper's six targets, exact statistics, sampler, likelihood.

Reference values come from the paper's definition of its targets (its Methods: exact
matrices and statistics), from brute-force enumeration over every hidden path of tiny HMMs
(written here, independently of the package), and from a log-space forward recursion
written here.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hmmrnn.hmm import (
    HMM,
    TARGET_NAMES,
    HMMError,
    brute_force_sequence_probability,
    cyclic,
    fully_connected,
    get_hmm,
    lability,
    linear_chain,
    log_likelihood,
    one_hot,
    output_marginals,
    output_pair_probabilities,
    output_transition_matrix,
    sample,
    stationary_distribution,
)

# --------------------------------------------------------------------------- independent oracles


def enumerate_output_distribution(start, transition, emission, length):
    """Joint distribution of ``length`` consecutive outputs, summing over every hidden path.

    Returns a (K,)*length array. Pure loops over all M**L state paths and K**L output
    sequences: an oracle independent of the package's matrix formulas.
    """
    start, transition, emission = map(np.asarray, (start, transition, emission))
    m, k = emission.shape
    joint = np.zeros((k,) * length)
    for path in itertools.product(range(m), repeat=length):
        p_path = start[path[0]]
        for a, b in zip(path[:-1], path[1:]):
            p_path *= transition[a, b]
        if p_path == 0:
            continue
        for outs in itertools.product(range(k), repeat=length):
            p = p_path
            for z, o in zip(path, outs):
                p *= emission[z, o]
            joint[outs] += p
    return joint


def power_iteration_stationary(transition, iterations=5000):
    p = np.full(transition.shape[0], 1.0 / transition.shape[0])
    for _ in range(iterations):
        p = p @ transition
    return p


def log_forward(hmm: HMM, outputs) -> float:
    """Log-space forward recursion (logsumexp), no scaling: a second, independent forward."""
    with np.errstate(divide="ignore"):
        log_t = np.log(hmm.transition)
        log_e = np.log(hmm.emission)
        log_alpha = np.log(hmm.start) + log_e[:, outputs[0]]
    for o in outputs[1:]:
        z = log_alpha[:, None] + log_t
        mx = np.max(z, axis=0)
        safe = np.where(np.isfinite(mx), mx, 0.0)
        with np.errstate(divide="ignore"):
            log_alpha = safe + np.log(np.exp(z - safe).sum(axis=0)) + log_e[:, o]
    mx = np.max(log_alpha)
    if not np.isfinite(mx):
        return -math.inf
    return float(mx + np.log(np.exp(log_alpha - mx).sum()))


# --------------------------------------------------------------------------- construction errors

GOOD_T = [[0.9, 0.1], [0.2, 0.8]]
GOOD_E = [[0.7, 0.3], [0.4, 0.6]]


def test_valid_hmm_is_built_and_frozen():
    hmm = HMM([0.5, 0.5], GOOD_T, GOOD_E, name="x", seq_len=7)
    assert hmm.n_states == 2 and hmm.n_outputs == 2 and hmm.seq_len == 7
    assert hmm.transition.dtype == np.float64
    with pytest.raises(ValueError):
        hmm.transition[0, 0] = 0.5  # read-only arrays: the model cannot be mutated after validation


def test_row_not_summing_to_one_is_named_by_index():
    bad = [[0.9, 0.1], [0.2, 0.7]]
    with pytest.raises(HMMError, match=r"transition row 1 sums to 0\.9"):
        HMM([0.5, 0.5], bad, GOOD_E)
    with pytest.raises(HMMError, match=r"emission row 0 sums to 1\.2"):
        HMM([0.5, 0.5], GOOD_T, [[0.9, 0.3], [0.4, 0.6]])
    with pytest.raises(HMMError, match=r"start row 0 sums to 0\.8"):
        HMM([0.4, 0.4], GOOD_T, GOOD_E)
    # several bad rows: all are listed
    with pytest.raises(HMMError, match=r"\[0, 2\]"):
        HMM(np.ones(3) / 3, [[0.5, 0.4, 0.0], [0, 1, 0], [0.3, 0.3, 0.3]], np.eye(3))


def test_hmm_error_is_a_value_error():
    assert issubclass(HMMError, ValueError)


def test_negative_entry_is_named():
    with pytest.raises(HMMError, match=r"transition has a negative entry -0\.1 at index \[0, 1\]"):
        HMM([0.5, 0.5], [[1.1, -0.1], [0.2, 0.8]], GOOD_E)
    with pytest.raises(HMMError, match=r"start has a negative entry"):
        HMM([1.5, -0.5], GOOD_T, GOOD_E)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_entry_is_named(value):
    with pytest.raises(HMMError, match=r"emission has a non-finite entry at index \[1, 0\]"):
        HMM([0.5, 0.5], GOOD_T, [[0.7, 0.3], [value, 0.6]])


def test_mismatched_shapes_are_named():
    with pytest.raises(HMMError, match=r"transition must have shape \(2, 2\).*got \(3, 3\)"):
        HMM([0.5, 0.5], np.eye(3), GOOD_E)
    with pytest.raises(HMMError, match=r"emission must have shape \(2, K\).*got \(3, 2\)"):
        HMM([0.5, 0.5], GOOD_T, [[1, 0], [0, 1], [0.5, 0.5]])
    with pytest.raises(HMMError, match=r"start must be a 1-D array"):
        HMM([[0.5, 0.5]], GOOD_T, GOOD_E)
    with pytest.raises(HMMError, match=r"transition must be a 2-D array"):
        HMM([0.5, 0.5], [0.5, 0.5], GOOD_E)


def test_empty_is_refused():
    with pytest.raises(HMMError, match="empty"):
        HMM(np.zeros(0), np.zeros((0, 0)), np.zeros((0, 3)))
    with pytest.raises(HMMError, match=r"K >= 1"):
        HMM([1.0], [[1.0]], np.zeros((1, 0)))


@pytest.mark.parametrize("seq_len", [0, -3, 2.5])
def test_bad_seq_len(seq_len):
    with pytest.raises(HMMError, match="seq_len"):
        HMM([0.5, 0.5], GOOD_T, GOOD_E, seq_len=seq_len)


def test_dict_round_trip_and_missing_keys():
    hmm = get_hmm("cyclic4")
    back = HMM.from_dict(hmm.to_dict())
    assert back.name == "cyclic4" and back.seq_len == 40
    for attr in ("start", "transition", "emission"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(hmm, attr))
    with pytest.raises(HMMError, match="emission"):
        HMM.from_dict({"start": [1.0], "transition": [[1.0]]})


def test_linear_chain_needs_two_states():
    for bad in (1, 0, 2.5):
        with pytest.raises(HMMError, match="states >= 2"):
            linear_chain(bad)


# --------------------------------------------------------------------------- the six targets (the paper's Methods)

EXPECTED_SEQ_LEN = {"linear2": 100, "linear3": 30, "linear4": 30, "linear5": 40, "fully3": 30, "cyclic4": 40}
# the paper's table of the linear chains: q, interior stay, end stay (rounded as printed)
PAPER_TABLE = {2: (0.05, None, 0.95), 3: (0.2236, 0.553, 0.776), 4: (0.3684, 0.263, 0.632), 5: (0.4729, 0.054, 0.527)}


def test_target_names_and_sequence_lengths():
    assert tuple(TARGET_NAMES) == tuple(EXPECTED_SEQ_LEN)
    for name, length in EXPECTED_SEQ_LEN.items():
        hmm = get_hmm(name)
        assert hmm.name == name
        assert hmm.seq_len == length
        assert hmm.n_outputs == 3


def test_unknown_target_raises_key_error_listing_names():
    with pytest.raises(KeyError) as info:
        get_hmm("linear9")
    message = str(info.value)
    assert "linear9" in message
    for name in TARGET_NAMES:
        assert name in message


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_linear_chain_exact_matrices(m):
    hmm = get_hmm(f"linear{m}")
    q = 0.05 ** (1 / (m - 1))
    expected_t = np.zeros((m, m))
    for i in range(m):
        for j in (i - 1, i + 1):
            if 0 <= j < m:
                expected_t[i, j] = q
        expected_t[i, i] = 1 - q if i in (0, m - 1) else 1 - 2 * q
    expected_e = np.array([[0.99 * (1 - i / (m - 1)), 0.01, 0.99 * i / (m - 1)] for i in range(m)])
    np.testing.assert_allclose(hmm.transition, expected_t, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hmm.emission, expected_e, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hmm.start, np.full(m, 1 / m), rtol=0, atol=1e-15)
    # the printed table, to its printed precision
    q_paper, interior_paper, end_paper = PAPER_TABLE[m]
    assert abs(hmm.transition[0, 1] - q_paper) < 5e-5
    assert abs(hmm.transition[0, 0] - end_paper) < 5e-4
    assert abs(hmm.transition[-1, -1] - end_paper) < 5e-4
    if interior_paper is not None:
        assert abs(hmm.transition[1, 1] - interior_paper) < 5e-4
    # output 1 is always rare
    np.testing.assert_allclose(hmm.emission[:, 1], 0.01, rtol=0, atol=1e-15)


def test_fully_connected_exact_matrices():
    hmm = get_hmm("fully3")
    np.testing.assert_allclose(
        hmm.transition, [[0.95, 0.025, 0.025], [0.025, 0.95, 0.025], [0.025, 0.025, 0.95]], rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(
        hmm.emission, [[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]], rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(hmm.start, np.full(3, 1 / 3), rtol=0, atol=1e-15)
    assert fully_connected().name == "fully3"


def test_cyclic_exact_matrices():
    hmm = get_hmm("cyclic4")
    np.testing.assert_array_equal(
        hmm.transition,
        [[0.95, 0.025, 0, 0.025], [0.025, 0.95, 0.025, 0], [0, 0.025, 0.95, 0.025], [0.025, 0, 0.025, 0.95]],
    )
    np.testing.assert_array_equal(hmm.emission, [[0.9, 0.1, 0], [0.1, 0.9, 0], [0, 0.1, 0.9], [0, 0.9, 0.1]])
    np.testing.assert_array_equal(hmm.start, np.full(4, 0.25))
    assert cyclic().name == "cyclic4"


# --------------------------------------------------------------------------- exact statistics vs the paper

PAPER_LABILITY = {"linear2": 0.0688, "linear3": 0.2562, "linear4": 0.2978, "linear5": 0.3112, "fully3": 0.0864, "cyclic4": 0.2143}
PAPER_MARGINALS = {
    "linear2": [0.495, 0.01, 0.495],
    "linear3": [0.495, 0.01, 0.495],
    "linear4": [0.495, 0.01, 0.495],
    "linear5": [0.495, 0.01, 0.495],
    "fully3": [1 / 3, 1 / 3, 1 / 3],
    "cyclic4": [0.25, 0.5, 0.25],
}


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_lability_matches_paper_to_four_decimals(name):
    # the paper prints 4 decimals: agreement within half a unit of the last digit
    assert abs(lability(get_hmm(name)) - PAPER_LABILITY[name]) <= 5e-5 + 1e-12


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_marginals_match_paper(name):
    hmm = get_hmm(name)
    np.testing.assert_allclose(output_marginals(hmm), PAPER_MARGINALS[name], rtol=0, atol=1e-12)
    # uniform start is stationary for every target (doubly stochastic transitions)
    np.testing.assert_allclose(stationary_distribution(hmm), hmm.start, rtol=0, atol=1e-12)


def test_linear2_output_transition_first_row():
    t = output_transition_matrix(get_hmm("linear2"))
    np.testing.assert_allclose(t[0], [0.9405, 0.01, 0.0495], rtol=0, atol=1e-12)
    np.testing.assert_allclose(t[2], [0.0495, 0.01, 0.9405], rtol=0, atol=1e-12)  # mirror symmetry


@pytest.mark.parametrize("name", ["linear2", "linear3", "linear4", "linear5"])
def test_linear_chain_middle_row(name):
    # output 1 is emitted with 0.01 by every state, so it says nothing about the state:
    # the next output is distributed as the marginal, exactly
    t = output_transition_matrix(get_hmm(name))
    np.testing.assert_allclose(t[1], [0.495, 0.01, 0.495], rtol=0, atol=1e-12)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_target_statistics_vs_enumeration(name):
    hmm = get_hmm(name)
    joint = enumerate_output_distribution(hmm.start, hmm.transition, hmm.emission, 2)
    np.testing.assert_allclose(output_pair_probabilities(hmm), joint, rtol=0, atol=1e-13)
    assert lability(hmm) == pytest.approx(1 - np.trace(joint), abs=1e-13)


# --------------------------------------------------------------------------- exact statistics vs brute force


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_statistics_vs_brute_force_on_random_hmm(seed, make_random_hmm):
    rng = np.random.default_rng(seed)
    hmm = make_random_hmm(rng, n_states=3, n_outputs=2 + seed % 2, zeros=seed >= 2)
    pi = power_iteration_stationary(hmm.transition)
    np.testing.assert_allclose(pi @ hmm.transition, pi, atol=1e-12)  # converged
    np.testing.assert_allclose(stationary_distribution(hmm), pi, rtol=0, atol=1e-10)

    # the statistics are those of the stationary chain, whatever the HMM's start
    joint2 = enumerate_output_distribution(pi, hmm.transition, hmm.emission, 2)
    joint1 = enumerate_output_distribution(pi, hmm.transition, hmm.emission, 1)
    np.testing.assert_allclose(output_pair_probabilities(hmm), joint2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(output_marginals(hmm), joint1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(output_transition_matrix(hmm), joint2 / joint2.sum(axis=1, keepdims=True), rtol=0, atol=1e-9)
    assert lability(hmm) == pytest.approx(1 - np.trace(joint2), abs=1e-10)
    # stationarity: the marginal of the second step equals that of the first
    np.testing.assert_allclose(joint2.sum(axis=0), joint1, rtol=0, atol=1e-10)


def test_output_transition_matrix_nan_for_impossible_output():
    hmm = HMM([0.5, 0.5], GOOD_T, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = output_transition_matrix(hmm)
    assert np.all(np.isnan(t[2]))
    np.testing.assert_allclose(t[:2].sum(axis=1), 1.0)


# --------------------------------------------------------------------------- sampler


def test_sample_shapes_dtypes_and_seed_reproducibility():
    hmm = get_hmm("linear3")
    s1, o1 = sample(hmm, 50, 20, np.random.default_rng(7))
    s2, o2 = sample(hmm, 50, 20, np.random.default_rng(7))
    s3, o3 = sample(hmm, 50, 20, np.random.default_rng(8))
    assert s1.shape == o1.shape == (50, 20)
    assert s1.dtype == o1.dtype == np.int64
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(o1, o2)
    assert not np.array_equal(o1, o3)
    assert s1.min() >= 0 and s1.max() < 3 and o1.min() >= 0 and o1.max() < 3


def test_sample_argument_errors():
    hmm = get_hmm("linear2")
    with pytest.raises(TypeError):
        sample(hmm, 3, 3, 0)
    with pytest.raises(ValueError):
        sample(hmm, -1, 3, np.random.default_rng(0))
    states, outputs = sample(hmm, 0, 5, np.random.default_rng(0))
    assert states.shape == outputs.shape == (0, 5)


def test_sampler_respects_zero_probabilities(make_random_hmm):
    rng = np.random.default_rng(3)
    hmm = make_random_hmm(rng, 4, 3, zeros=True)
    assert (hmm.transition == 0).any() and (hmm.emission == 0).any()
    states, outputs = sample(hmm, 500, 30, np.random.default_rng(0))
    assert np.all(hmm.transition[states[:, :-1], states[:, 1:]] > 0)
    assert np.all(hmm.emission[states, outputs] > 0)


def _batched_estimates(outputs: np.ndarray, k: int, groups: int):
    """Marginals, output transition matrix and lability of each of ``groups`` disjoint batches."""
    marg, trans, lab = [], [], []
    for chunk in np.array_split(outputs, groups):
        marg.append(np.bincount(chunk.ravel(), minlength=k) / chunk.size)
        pairs = np.zeros((k, k))
        np.add.at(pairs, (chunk[:, :-1].ravel(), chunk[:, 1:].ravel()), 1)
        trans.append(pairs / pairs.sum(axis=1, keepdims=True))
        lab.append(np.mean(chunk[:, 1:] != chunk[:, :-1]))
    return np.array(marg), np.array(trans), np.array(lab)


@pytest.mark.parametrize("name", ["linear2", "linear3", "cyclic4"])
def test_sampled_statistics_agree_with_analytic(name):
    """Sampled statistics vs exact ones, within 5 standard errors.

    Sequences are i.i.d., so the statistic computed on each of 40 disjoint batches of
    sequences gives 40 i.i.d. estimates (their within-sequence correlation is accounted for
    automatically); the standard error of the overall estimate is their standard deviation
    / sqrt(40). A 5-sigma bound has a false-alarm probability ~6e-7 per entry under the
    normal approximation (so < 1e-4 over all entries checked here), and the draw is seeded,
    so the test is deterministic; a sampler error of a few standard errors (here ~1e-3 on
    the frequent entries) would be caught.
    """
    hmm = get_hmm(name)
    groups = 40
    _, outputs = sample(hmm, 8000, 30, np.random.default_rng(2025))
    marg, trans, lab = _batched_estimates(outputs, 3, groups)

    def check(estimates, exact):
        mean = estimates.mean(axis=0)
        se = estimates.std(axis=0, ddof=1) / math.sqrt(groups)
        assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12), (mean, exact, se)

    check(marg, output_marginals(hmm))
    exact_t = output_transition_matrix(hmm)
    check(trans, np.nan_to_num(exact_t))
    check(lab, lability(hmm))
    # the bound is informative: the standard errors are small
    assert lab.std(ddof=1) / math.sqrt(groups) < 0.003


def test_first_step_state_distribution_equals_start_and_propagates(make_random_hmm):
    """P(z_1) = start and P(z_t) = start T^(t-1): exact law of a non-stationary start."""
    rng = np.random.default_rng(11)
    hmm = make_random_hmm(rng, 3, 2)
    start = np.array([0.7, 0.2, 0.1])
    hmm = HMM(start, hmm.transition, hmm.emission)
    n = 40000
    states, outputs = sample(hmm, n, 4, np.random.default_rng(5))
    law = start.copy()
    for t in range(4):
        freq = np.bincount(states[:, t], minlength=3) / n
        se = np.sqrt(law * (1 - law) / n)  # i.i.d. multinomial draws across sequences
        assert np.all(np.abs(freq - law) <= 5 * se), (t, freq, law)
        out_law = law @ hmm.emission
        out_freq = np.bincount(outputs[:, t], minlength=2) / n
        assert np.all(np.abs(out_freq - out_law) <= 5 * np.sqrt(out_law * (1 - out_law) / n))
        law = law @ hmm.transition


def test_one_hot():
    x = one_hot(np.array([[0, 2, 1]]), 3)
    np.testing.assert_array_equal(x, [[[1, 0, 0], [0, 0, 1], [0, 1, 0]]])
    assert x.dtype == np.float32
    with pytest.raises(ValueError):
        one_hot(np.array([[3]]), 3)


# --------------------------------------------------------------------------- forward algorithm


@pytest.mark.parametrize("seed", range(6))
def test_forward_vs_brute_force(seed, make_random_hmm):
    rng = np.random.default_rng(100 + seed)
    m, k = 2 + seed % 3, 2 + seed % 2
    hmm = make_random_hmm(rng, m, k, zeros=seed % 2 == 1)
    length = 5
    seqs = rng.integers(0, k, size=(12, length))
    ll = log_likelihood(hmm, seqs)
    assert ll.shape == (12,)
    enumerated = enumerate_output_distribution(hmm.start, hmm.transition, hmm.emission, length)
    for row, value in zip(seqs, ll):
        brute = brute_force_sequence_probability(hmm, row)
        assert brute == pytest.approx(enumerated[tuple(row)], rel=1e-12, abs=1e-300)
        if brute == 0:
            assert value == -np.inf
        else:
            assert value == pytest.approx(math.log(brute), rel=1e-10)


def test_impossible_sequence_has_minus_infinite_log_likelihood():
    # two absorbing states that emit different outputs: the output can never change
    hmm = HMM([0.5, 0.5], np.eye(2), np.eye(2))
    ll = log_likelihood(hmm, np.array([[0, 0, 0], [0, 1, 1], [1, 1, 1]]))
    assert ll[0] == pytest.approx(math.log(0.5)) and ll[2] == pytest.approx(math.log(0.5))
    assert ll[1] == -np.inf
    assert brute_force_sequence_probability(hmm, np.array([0, 1, 1])) == 0.0
    # an output no state emits
    hmm2 = HMM([0.5, 0.5], GOOD_T, [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    assert log_likelihood(hmm2, np.array([0, 2, 1]))[0] == -np.inf


@pytest.mark.parametrize("name", ["linear2", "fully3", "cyclic4"])
def test_probabilities_of_all_length_three_sequences_sum_to_one(name):
    hmm = get_hmm(name)
    seqs = np.array(list(itertools.product(range(3), repeat=3)))
    total = np.exp(log_likelihood(hmm, seqs)).sum()
    assert total == pytest.approx(1.0, abs=1e-12)


def test_forward_on_long_sequences_does_not_underflow():
    hmm = get_hmm("linear4")
    _, outputs = sample(hmm, 3, 2000, np.random.default_rng(0))
    ll = log_likelihood(hmm, outputs)
    assert np.all(np.isfinite(ll)) and np.all(ll < -100)  # far below float64's exp range
    for row, value in zip(outputs, ll):
        assert value == pytest.approx(log_forward(hmm, row), rel=1e-10)


def test_forward_single_sequence_and_errors():
    hmm = get_hmm("linear2")
    # 1-D input is one sequence; P(o_1 = 0) = 0.495
    assert log_likelihood(hmm, np.array([0]))[0] == pytest.approx(math.log(0.495))
    with pytest.raises(ValueError):
        log_likelihood(hmm, np.array([[0, 3]]))


def test_without_output_moves_its_mass_proportionally():
    from hmmrnn.hmm import without_output

    chain = without_output(get_hmm("linear3"), 1)
    np.testing.assert_allclose(chain.emission, [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(chain.transition, get_hmm("linear3").transition)
    assert chain.seq_len == 30
    # a state that emits only the dropped output emits the others uniformly
    only = HMM([1.0], [[1.0]], [[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(without_output(only, 1).emission, [[0.5, 0.0, 0.5]])
    _, outputs = sample(chain, 200, 50, np.random.default_rng(0))
    assert not (outputs == 1).any()
    with pytest.raises(ValueError, match="output must be one of 0..2"):
        without_output(chain, 3)
