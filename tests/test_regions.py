"""Tests of hmmrnn.regions: residency times, region labels, sign changes, Jacobians, noise sensitivity.

Known answers come from hand-built networks (a readout that never changes, an output that
flips every step, a coin-flip network whose switch time is geometric with p = 1/2), from a
slow per-state NumPy reference loop (``residency_reference``, and loops written here), and
from autograd (Jacobians).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hmmrnn import paper
from hmmrnn.model import NoiseRNN, RNNWeights
from hmmrnn.regions import (
    CLUSTER,
    KICK_ZONE,
    REGION_NAMES,
    TRANSITION,
    UNCERTAIN,
    RecordedRun,
    active_masks,
    alignment,
    classify_regions,
    difference_ci,
    jacobian_spectra,
    local_linear_analysis,
    mean_ci,
    mix_noise,
    noise_sensitivity,
    random_alignment_baseline,
    recorded_run,
    region_means,
    residency_reference,
    residency_times,
    sign_changes_along_run,
    sample_states,
)
from hmmrnn.dynamics import relu_jacobian


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weights(W_in, W_rec, W_out) -> RNNWeights:
    return RNNWeights(*(np.asarray(w, dtype=np.float32) for w in (W_in, W_rec, W_out))).validate()


def random_weights(rng: np.random.Generator, hidden=12, inputs=5, outputs=3, gain=1.1) -> RNNWeights:
    return weights(
        rng.normal(0, 1 / math.sqrt(inputs), (hidden, inputs)),
        rng.normal(0, gain / math.sqrt(hidden), (hidden, hidden)),
        rng.normal(0, 1, (outputs, hidden)),
    )


# A readout that never changes: logits (s, -s) with s = sum(h) >= 0, so argmax is always 0.
NEVER = weights(np.ones((2, 1)), 0.5 * np.eye(2), [[1.0, 1.0], [-1.0, -1.0]])
# An output that flips every step: a permutation of two units read out one-to-one, no input.
FLIP = weights(np.zeros((2, 1)), [[0.0, 1.0], [1.0, 0.0]], np.eye(2))
# A fair coin each step: h = (relu(x), relu(-x)), argmax 0 iff x > 0 -> switch time ~ Geometric(1/2).
COIN = weights([[1.0], [-1.0]], np.zeros((2, 2)), np.eye(2))


# --------------------------------------------------------------------------- residency


def test_never_switching_readout_is_all_censored():
    states = np.array([[1.0, 0.0], [0.3, 2.0], [5.0, 5.0]])
    res = residency_times(NEVER, states, gen(), n_continuations=7, max_steps=9)
    assert np.all(res.censored_fraction == 1.0)
    assert np.all(res.censored)
    assert np.all(res.rt == 9.0)  # naive mean: censored counted as max_steps
    assert np.all(np.isinf(res.rt_mle))  # no switch observed: the MLE of the mean is unbounded
    assert np.all(res.start_output == 0)


def test_output_flipping_every_step_has_rt_one():
    states = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    res = residency_times(FLIP, states, gen(), n_continuations=5, max_steps=60)
    assert np.all(res.rt == 1.0)
    assert np.all(res.rt_mle == 1.0)
    assert np.all(res.switch_step == 1)
    assert np.all(res.censored_fraction == 0.0)
    assert np.all(res.sign_changes == 0.0)  # one increment, no pair to change sign


def test_geometric_switching_censoring_aware_estimate():
    # P(T > k) = 2^-k. With max_steps = 3: restricted mean 1 + 1/2 + 1/4 = 1.75, censored
    # fraction 1/8, while the unrestricted mean is 2 -- which the censoring-aware MLE recovers.
    states = np.array([[1.0, 0.0]])
    res = residency_times(COIN, states, gen(1), n_continuations=40_000, max_steps=3)
    assert res.rt[0] == pytest.approx(1.75, abs=0.02)
    assert res.censored_fraction[0] == pytest.approx(0.125, abs=0.01)
    assert res.rt_mle[0] == pytest.approx(2.0, abs=0.03)
    # switch steps follow the geometric law
    counts = np.bincount(res.switch_step[0], minlength=4) / res.switch_step.shape[1]
    np.testing.assert_allclose(counts, [0.125, 0.5, 0.25, 0.125], atol=0.01)


def test_batched_equals_reference_loop():
    rng = np.random.default_rng(3)
    w = random_weights(rng, hidden=10, inputs=4, outputs=3, gain=1.2)
    W_out = w.W_out.copy()
    W_out[0] += 0.8  # h >= 0, so this favours output 0: some continuations stay, some switch
    w = weights(w.W_in, w.W_rec, W_out)
    n_states, n, max_steps = 6, 5, 12
    states = np.abs(rng.normal(size=(n_states, 10))).astype(np.float32)
    inputs = rng.normal(size=(n_states, n, max_steps, 4)).astype(np.float32)
    ref = residency_reference(w, states, inputs)
    assert 0 < ref.censored_fraction.mean() < 1 and ref.sign_changes.max() > 0  # a non-trivial case
    for model in (NoiseRNN.from_weights(w), w):
        # max_batch=7 forces several chunks; the fused path and the compaction are exercised
        res = residency_times(model, states, inputs=inputs, n_continuations=n, max_steps=max_steps, max_batch=7)
        np.testing.assert_array_equal(res.switch_step, ref.switch_step)
        np.testing.assert_allclose(res.sign_changes, ref.sign_changes)
        np.testing.assert_allclose(res.rt, ref.rt)
        np.testing.assert_allclose(res.rt_mle, ref.rt_mle)
        np.testing.assert_array_equal(res.start_output, ref.start_output)
        np.testing.assert_allclose(res.confidence, ref.confidence, rtol=1e-5)


class _GenericModel:
    """A model seen only through the StepModel protocol (no W_rec attribute)."""

    def __init__(self, w: RNNWeights) -> None:
        self.net = NoiseRNN.from_weights(w)
        self.input_size = w.input_size
        self.hidden_size = w.hidden_size

    def step(self, h, x):
        return self.net.step(h, x)

    def logits(self, h):
        return self.net.logits(h)


def test_drawn_noise_is_seeded_and_same_law_on_both_paths():
    rng = np.random.default_rng(4)
    w = random_weights(rng, hidden=16, inputs=6, gain=1.3)  # RT from 1 to ~13 steps, 40% censored
    states = np.abs(rng.normal(size=(40, 16))).astype(np.float32)
    kwargs = dict(n_continuations=200, max_steps=15)
    fused = residency_times(NoiseRNN.from_weights(w), states, gen(7), **kwargs)
    again = residency_times(NoiseRNN.from_weights(w), states, gen(7), **kwargs)
    generic = residency_times(_GenericModel(w), states, gen(8), **kwargs)
    np.testing.assert_array_equal(fused.switch_step, again.switch_step)  # same seed, same numbers
    np.testing.assert_array_equal(generic.switch_step, residency_times(_GenericModel(w), states, gen(8), **kwargs).switch_step)
    # the two paths draw the noise in different layouts: same law, independent draws
    assert 2 < fused.rt.mean() < 14 and 0.1 < fused.censored_fraction.mean() < 0.9
    observed = lambda r: np.where(r.censored, 15, r.switch_step)  # min(T, max_steps) per continuation
    var = (observed(fused).var(axis=1, ddof=1) + observed(generic).var(axis=1, ddof=1)) / 200
    z_overall = (fused.rt.mean() - generic.rt.mean()) / np.sqrt(var.sum()) * 40
    assert abs(z_overall) < 4
    assert np.all(np.abs(fused.rt - generic.rt) <= 5 * np.sqrt(var) + 1e-9)


def test_column_argmax_breaks_ties_like_torch():
    from hmmrnn.regions import _argmax

    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0], [0.0, -1.0, 5.0]])
    wide = torch.randn(50, 12, generator=gen(3)).round()  # many ties; the generic branch
    for x in (logits, torch.randn(200, 3, generator=gen(2)).round(), wide):
        np.testing.assert_array_equal(_argmax(x).numpy(), x.argmax(dim=-1).numpy())


def test_residency_input_validation():
    with pytest.raises(ValueError, match="Generator"):
        residency_times(FLIP, np.ones((2, 2)), None)
    with pytest.raises(ValueError, match="2-D"):
        residency_times(FLIP, np.ones(2), gen())
    with pytest.raises(ValueError, match="inputs must have shape"):
        residency_times(FLIP, np.ones((2, 2)), inputs=np.zeros((2, 3, 4, 1)), n_continuations=3, max_steps=5)
    with pytest.raises(ValueError, match="positive integer"):
        residency_times(FLIP, np.ones((2, 2)), gen(), max_steps=0)
    with pytest.raises(TypeError):
        residency_times(object(), np.ones((2, 2)), gen())


# --------------------------------------------------------------------------- classification


def test_classification_thresholds_and_boundaries():
    rt = np.array([1.0, 1.999, 2.0, 5.0, 8.0, 8.01, 8.01, 30.0, 60.0])
    conf = np.array([0.99, 0.5, 0.5, 0.9, 0.99, 0.81, 0.8, 0.3, 0.95])
    labels = classify_regions(rt, conf)
    expected = [TRANSITION, TRANSITION, KICK_ZONE, KICK_ZONE, KICK_ZONE, CLUSTER, UNCERTAIN, UNCERTAIN, CLUSTER]
    np.testing.assert_array_equal(labels.labels, expected)
    assert labels.thresholds == paper.RT_THRESHOLDS
    assert labels.counts() == {"transition": 2, "kick_zone": 3, "cluster": 2, "uncertain": 2}
    assert sum(labels.fractions().values()) == pytest.approx(1.0)
    np.testing.assert_array_equal(labels.mask("cluster"), labels.labels == CLUSTER)
    # thresholds are parameters
    other = classify_regions(rt, conf, transition_below=1.5, kick_zone_max=4, cluster_confidence=0.5)
    np.testing.assert_array_equal(other.labels[[0, 1, 3, 5]], [TRANSITION, KICK_ZONE, CLUSTER, CLUSTER])
    with pytest.raises(ValueError, match="unknown region"):
        labels.mask("orbit")
    with pytest.raises(ValueError):
        classify_regions(rt, conf[:3])
    with pytest.raises(ValueError):
        classify_regions(rt, conf, transition_below=9, kick_zone_max=8)
    assert REGION_NAMES[CLUSTER] == "cluster"


def test_sign_changes_along_run_matches_loop():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(40, 3))
    window = 6
    got = sign_changes_along_run(logits, window)
    assert got.shape == (40 - window,)
    for t in range(40 - window):
        a = np.argmax(logits[t])
        d = [logits[t + k, a] - logits[t + k - 1, a] for k in range(1, window + 1)]
        assert got[t] == sum(d[i] * d[i + 1] < 0 for i in range(window - 1))
    # a monotone logit never changes sign; an alternating one changes at every step
    ramp = np.stack([np.arange(20.0), np.zeros(20)], axis=1)
    assert np.all(sign_changes_along_run(ramp, 5) == 0)
    zigzag = np.stack([10 + (-1.0) ** np.arange(20), np.zeros(20)], axis=1)
    assert np.all(sign_changes_along_run(zigzag, 5) == 4)


# --------------------------------------------------------------------------- runs and planes


def test_recorded_run_matches_model_rollout_recurrence():
    rng = np.random.default_rng(6)
    w = random_weights(rng)
    run = recorded_run(w, 50, gen(2), burn_in=10)
    assert isinstance(run, RecordedRun)
    np.testing.assert_allclose(run.prev_hidden[1:], run.hidden[:-1])
    step = np.maximum(run.prev_hidden @ w.W_rec.T + run.inputs @ w.W_in.T, 0)
    np.testing.assert_allclose(run.hidden, step, atol=1e-5)
    np.testing.assert_allclose(run.logits, run.hidden @ w.W_out.T, atol=1e-5)
    again = recorded_run(NoiseRNN.from_weights(w), 50, gen(2), burn_in=10)
    np.testing.assert_array_equal(run.hidden, again.hidden)
    half = recorded_run(w, 50, gen(2), burn_in=10, noise_scale=0.5)
    np.testing.assert_allclose(half.inputs, 0.5 * run.inputs)
    assert np.all((run.confidence > 1 / 3) & (run.confidence <= 1))


# --------------------------------------------------------------------------- Jacobians


def test_jacobian_masks_equal_autograd():
    rng = np.random.default_rng(8)
    w = random_weights(rng, hidden=9, inputs=4)
    model = NoiseRNN.from_weights(w)
    run = recorded_run(model, 12, gen(3), burn_in=5)
    masks = active_masks(w, run.prev_hidden, run.inputs)
    np.testing.assert_array_equal(masks, run.hidden > 0)  # the mask that produced h_t is h_t's active set
    J = relu_jacobian(w.W_rec.astype(np.float64), masks).numpy()
    for t in range(12):
        h_prev = torch.tensor(run.prev_hidden[t])
        x = torch.tensor(run.inputs[t])
        auto = torch.autograd.functional.jacobian(lambda h: model.step(h[None], x[None])[0], h_prev)
        np.testing.assert_allclose(J[t], auto.detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError):
        active_masks(w, run.prev_hidden, run.inputs[:3])


def test_unstable_eigenvalue_counts_known_network():
    # W_rec diagonal (2, 0.5, 1.5, 0.9): unstable eigenvalues are the active 2 and 1.5
    w = weights(np.zeros((4, 1)), np.diag([2.0, 0.5, 1.5, 0.9]), np.eye(3, 4))
    masks = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 1], [1, 0, 0, 0]], dtype=bool)
    spec = jacobian_spectra(w, masks, chunk=3)
    np.testing.assert_array_equal(spec.n_unstable, [2, 1, 0, 1])
    np.testing.assert_allclose(np.abs(spec.leading), [2.0, 1.5, 0.9, 2.0])
    # leading eigenvector: the unit vector of the dominant unit
    np.testing.assert_allclose(np.abs(spec.leading_vector[0]), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(np.abs(spec.leading_vector[1]), [0, 0, 1, 0], atol=1e-12)


def test_spectra_equal_full_masked_eigendecomposition():
    rng = np.random.default_rng(9)
    w = random_weights(rng, hidden=14, gain=2.0)
    masks = rng.random((9, 14)) < rng.uniform(0.2, 0.9, (9, 1))
    masks[0] = False  # no active unit: J = 0
    spec = jacobian_spectra(NoiseRNN.from_weights(w), masks, chunk=4)
    W = w.W_rec.astype(np.float64)
    assert spec.n_unstable[0] == 0 and np.all(spec.eigvals[0] == 0)
    for s in range(9):
        J = masks[s][:, None] * W
        full = np.linalg.eigvals(J)  # the H x H masked matrix, decomposed directly
        np.testing.assert_allclose(np.sort(np.abs(spec.eigvals[s])), np.sort(np.abs(full)), atol=1e-8)
        assert spec.n_unstable[s] == int((np.abs(full) > 1).sum())
        assert abs(spec.leading[s]) == pytest.approx(np.abs(full).max(), abs=1e-9)
        lam, v = spec.leading[s], spec.leading_vector[s]
        assert np.all(v[~masks[s]] == 0)
        if abs(lam.imag) < 1e-12 and abs(lam) > 0:  # real eigenpair: J v = lambda v
            np.testing.assert_allclose(J @ v, lam.real * v, atol=1e-9)
            assert np.linalg.norm(v) == pytest.approx(1.0)
    assert spec.n_unstable.max() > 0  # the case is not trivial


def test_alignment_and_random_baseline():
    rng = np.random.default_rng(10)
    v = rng.normal(size=(20_000, 30))
    line = np.tile(np.eye(30)[:1], (20_000, 1))
    plane = np.eye(30)[:2]
    assert alignment(v, line).mean() == pytest.approx(random_alignment_baseline(30, 1), abs=0.005)
    assert alignment(v, plane).mean() == pytest.approx(random_alignment_baseline(30, 2), abs=0.005)
    np.testing.assert_allclose(alignment(np.eye(30)[:3] * 5, plane), [1, 1, 0])
    with pytest.raises(ValueError):
        alignment(v[:2], rng.normal(size=(2, 30))[:1] * 3)


def test_local_linear_analysis_on_a_small_network():
    rng = np.random.default_rng(14)
    w = random_weights(rng, hidden=20, inputs=6, gain=1.6)
    run = recorded_run(w, 300, gen(6))
    labels = classify_regions(np.where(np.arange(300) % 3 == 0, 1.0, 20.0), np.full(300, 0.9))
    plane = np.linalg.qr(rng.normal(size=(20, 2)))[0].T
    out = local_linear_analysis(w, run, labels, plane, per_region=25, generator=gen(7))
    assert out.indices.size == 50 and set(np.unique(out.labels)) == {TRANSITION, CLUSTER}
    spec = jacobian_spectra(w, run.hidden[out.indices] > 0)
    np.testing.assert_array_equal(out.n_unstable, spec.n_unstable)
    unstable = out.n_unstable > 0
    assert unstable.any()
    assert np.all(np.isnan(out.cos_tangent[~unstable])) and np.all((out.cos_tangent[unstable] >= 0) & (out.cos_tangent[unstable] <= 1))
    assert out.baseline_plane == pytest.approx(random_alignment_baseline(20, 2))
    again = local_linear_analysis(w, run, labels, plane, per_region=25, generator=gen(7))
    np.testing.assert_array_equal(out.indices, again.indices)


def test_sample_states_takes_all_of_a_small_region():
    labels = classify_regions(np.array([1.0] * 3 + [5.0] * 30), np.full(33, 0.9))
    idx = sample_states(labels, 10, gen(2))
    assert idx.size == 13 and set(idx[:3]) == {0, 1, 2} and np.all(np.diff(idx) > 0)


# --------------------------------------------------------------------------- noise sensitivity


def test_mix_noise_preserves_variance():
    g = gen(11)
    x, x_new = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    for gamma in (0.0, 0.25, 0.5, 1.0):
        y = mix_noise(x, x_new, gamma)
        assert float(y.var()) == pytest.approx(1.0, abs=0.01)
        assert float(torch.corrcoef(torch.stack([x, y]))[0, 1]) == pytest.approx(math.sqrt(1 - gamma), abs=0.01)
    with pytest.raises(ValueError):
        mix_noise(x, x_new, 1.5)


def test_noise_sensitivity_zero_gamma_replays_the_run_and_matches_a_loop():
    rng = np.random.default_rng(12)
    w = random_weights(rng, hidden=12, inputs=5)
    run = recorded_run(w, 40, gen(4))
    points = np.array([3, 10, 20])
    ns = noise_sensitivity(w, run, points, gen(5), gammas=(0.0, 1.0), n_runs=50, n_steps=4)
    assert ns.trace_cov.shape == ns.distance.shape == (2, 3, 4)
    np.testing.assert_allclose(ns.trace_cov[0], 0, atol=1e-8)  # gamma 0: the run itself
    np.testing.assert_allclose(ns.distance[0], 0, atol=1e-4)
    assert np.all(ns.trace_cov[1] > 0)
    moved = np.linalg.norm(run.hidden[points[:, None] + np.arange(1, 5)] - run.hidden[points][:, None], axis=-1)
    np.testing.assert_allclose(ns.displacement, moved, rtol=1e-5)
    # gamma 1 from a loop: fresh noise of the run's scale, the trace of the sample covariance
    g = gen(99)
    ns1 = noise_sensitivity(w, run, points[:1], g, gammas=(1.0,), n_runs=3000, n_steps=1)
    x = np.random.default_rng(0).normal(size=(3000, 5))
    ends = np.maximum(run.hidden[3] @ w.W_rec.T + x @ w.W_in.T, 0)
    assert ns1.trace_cov[0, 0, 0] == pytest.approx(np.trace(np.cov(ends.T)), rel=0.08)
    with pytest.raises(ValueError):
        noise_sensitivity(w, run, np.array([38]), gen(), n_steps=4)
    empty = noise_sensitivity(w, run, np.zeros(0, dtype=int), gen(), n_steps=4)  # a region without states
    assert empty.trace_cov.shape == (2, 0, 4) and empty.displacement.shape == (0, 4)


def test_sample_states_is_seeded_and_respects_region_and_margin():
    labels = classify_regions(np.array([1.0] * 10 + [20.0] * 10), np.full(20, 0.9))
    a = sample_states(labels, 5, gen(1), "cluster", margin=3)
    b = sample_states(labels, 5, gen(1), "cluster", margin=3)
    np.testing.assert_array_equal(a, b)
    assert np.all((a >= 10) & (a < 17)) and len(set(a)) == 5
    assert sample_states(labels, 4, gen(1), "kick_zone").size == 0
    both = sample_states(labels, 4, gen(2), ("transition", "cluster"))
    assert both.size == 8 and (both < 10).sum() == 4


def test_mean_ci_and_region_means():
    rng = np.random.default_rng(13)
    v = rng.normal(3.0, 2.0, size=50)
    ci = mean_ci(v)
    se = v.std(ddof=1) / math.sqrt(50)
    assert ci.low < ci.mean < ci.high and ci.high - ci.mean == pytest.approx(2.0096 * se, rel=1e-3)
    # Welch interval of a difference, against the textbook formula
    a, b = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 3.0, 25)
    va, vb = a.var(ddof=1) / 40, b.var(ddof=1) / 25
    dof = (va + vb) ** 2 / (va**2 / 39 + vb**2 / 24)
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    diff = difference_ci(a, b)
    assert diff.mean == pytest.approx(a.mean() - b.mean())
    assert (diff.low, diff.high) == pytest.approx((diff.mean - half, diff.mean + half))
    few = difference_ci(a, b[:1])
    assert few.mean == pytest.approx(a.mean() - b[0]) and math.isnan(few.low) and math.isnan(few.high)
    labels = classify_regions(np.array([1.0, 1.0, 5.0, 20.0]), np.full(4, 0.9))
    means = region_means(np.array([1.0, 3.0, 7.0, 9.0]), labels)
    assert means["transition"].mean == 2.0 and means["kick_zone"].n == 1 and means["uncertain"].n == 0
