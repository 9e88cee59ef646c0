"""Tests of hmmrnn.resonance: noise-axis variants, the batched sweep simulation, and the measures.

Known answers: loops written here (run lengths, lagged joints, the recurrence with its draws),
analytic cases (a geometric dwell has CV sqrt(1 - p) and a flat hazard p; a periodic signal
has its spectral line at 1 / period; the HMM's lag-1 joint is its output pair probability;
Parseval), and exact invariances (positive homogeneity: the argmax outputs do not depend on
the input-noise scale; a gain of 1 changes nothing).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmmrnn import resonance as rs
from hmmrnn.hmm import get_hmm, output_pair_probabilities, sample as hmm_sample
from hmmrnn.model import NoiseRNN, RNNWeights
from tiny_networks import tiny_weights


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)




def markov_switching(rng: np.random.Generator, p: float, n: int, length: int, k: int = 2) -> np.ndarray:
    """(n, length) sequences that leave their value with probability p per step (memoryless)."""
    leave = rng.random((n, length)) < p
    jump = rng.integers(1, k, (n, length))
    return (np.cumsum(np.where(leave, jump, 0), axis=1) % k).astype(np.int64)


# --------------------------------------------------------------------------- run lengths


def loop_runs(seq: np.ndarray):
    out = []
    for b, row in enumerate(seq):
        start = 0
        for t in range(1, len(row) + 1):
            if t == len(row) or row[t] != row[start]:
                out.append((b, start, t - start, row[start]))
                start = t
    return out


def test_run_lengths_match_a_loop(rng):
    seq = rng.integers(0, 3, (6, 40))
    seq[2] = 1  # one trajectory with a single run
    runs = rs.run_lengths(seq)
    expected = loop_runs(seq)
    assert list(zip(runs.traj, runs.start, runs.length, runs.value)) == expected
    # censored: the first and the last run of every trajectory
    for b in range(seq.shape[0]):
        mine = np.flatnonzero(runs.traj == b)
        assert runs.censored[mine[0]] and runs.censored[mine[-1]]
        assert not runs.censored[mine[1:-1]].any()
    assert runs.length.sum() == seq.size


def test_dwell_times_drop_censored_runs():
    seq = np.array([[0, 0, 1, 1, 1, 0, 2, 2, 2, 2, 0, 0]])
    assert rs.dwell_times(seq).tolist() == [3, 1, 4]
    assert rs.dwell_times(np.zeros((3, 10), dtype=int)).size == 0
    assert rs.switching_rate(seq) == pytest.approx(4 / 11)


def test_cv_of_geometric_dwells_and_flat_hazard():
    rng = np.random.default_rng(1)
    p = 0.1
    dwells = rs.dwell_times(markov_switching(rng, p, 50, 4000))
    assert dwells.size > 15000
    assert rs.coefficient_of_variation(dwells) == pytest.approx(math.sqrt(1 - p), abs=0.02)
    assert rs.geometric_cv(1 / p) == pytest.approx(math.sqrt(1 - p))
    h = rs.hazard(dwells, 15)
    assert np.all(np.abs(h - p) < 0.02)


def test_cv_and_hazard_of_deterministic_dwells():
    seq = np.tile(np.repeat([0, 1], 5), 20)[None]  # period 10, dwell 5
    d = rs.dwell_times(seq)
    assert np.all(d == 5) and rs.coefficient_of_variation(d) == 0.0
    assert rs.hazard(d, 6, min_at_risk=1).tolist()[:5] == [0, 0, 0, 0, 1.0]
    assert np.isnan(rs.hazard(d, 6, min_at_risk=1)[5])  # nobody at risk after 5 steps
    assert math.isnan(rs.coefficient_of_variation([3.0]))


# --------------------------------------------------------------------------- spectra


def test_spectrum_of_a_periodic_signal_peaks_at_its_frequency():
    period, t = 16, 1024
    seq = np.tile(np.repeat([0, 2], period // 2), t // period)[None].repeat(3, axis=0)
    spec = rs.power_spectrum(rs.one_hot(seq, 3))
    assert spec.density.sum() / t == pytest.approx(1.0)  # unit total power
    assert spec.freq[np.argmax(spec.density)] == pytest.approx(1 / period)
    rate = rs.switching_rate(seq)
    peak = rs.spectral_peak(spec, (rate / 8, 2 * rate), smooth=1)
    assert peak.freq == pytest.approx(1 / period)
    assert peak.prominence > 100 and peak.q > 10


def test_spectrum_parseval_and_mean_removal(rng):
    x = rng.normal(size=(4, 256)) + 5.0
    spec = rs.power_spectrum(x)
    # total power = variance (the mean removed): the normalisation divides it out
    raw = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2
    assert np.allclose(spec.density, raw.mean(0)[1:129] * 256 / raw.mean(0)[1:129].sum())
    assert spec.freq[0] == 1 / 256 and spec.freq[-1] == 0.5


def test_memoryless_switching_has_no_spectral_peak():
    rng = np.random.default_rng(2)
    seq = markov_switching(rng, 0.05, 64, 2048)
    rate = rs.switching_rate(seq)
    peak = rs.spectral_peak(rs.power_spectrum(rs.one_hot(seq, 2)), (rate / 8, 2 * rate))
    assert peak.prominence < 1.05  # a Lorentzian is flat below its corner, then falls


def gamma_alternation(rng: np.random.Generator, cv: float, mean: float, n: int, length: int) -> np.ndarray:
    """(n, length) 0/1 sequences alternating with i.i.d. gamma dwells (rounded, >= 1 step)."""
    k = 1 / cv**2
    dwells = np.maximum(np.rint(rng.gamma(k, mean / k, (n, 4 * length // int(mean) + 10))), 1).astype(np.int64)
    ends = np.cumsum(dwells, axis=1)
    t = np.arange(length)
    index = np.stack([np.searchsorted(e, t, side="right") for e in ends])
    offset = rng.integers(0, 2, (n, 1))
    return (index + offset) % 2


def test_renewal_peak_matches_a_simulated_alternation():
    assert rs.renewal_peak(1.0) == (0.0, 1.0)  # Lorentzian: no peak
    assert rs.renewal_peak(0.9)[1] == 1.0
    freq, ratio = rs.renewal_peak(0.5)
    assert 0.4 < freq < 0.5 and ratio == pytest.approx(3.17, abs=0.01)
    rng = np.random.default_rng(6)
    seq = gamma_alternation(rng, 0.5, 40.0, 48, 8192)
    rate = rs.switching_rate(seq)
    assert rate == pytest.approx(1 / 40, rel=0.05)
    peak = rs.spectral_peak(rs.power_spectrum(seq), (rate / 8, 2 * rate), smooth=9)
    assert peak.freq / rate == pytest.approx(freq, rel=0.15)
    assert peak.prominence == pytest.approx(ratio, rel=0.2)


def test_spectral_peak_input_checks():
    spec = rs.Spectrum(np.arange(1, 9) / 16, np.ones(8))
    with pytest.raises(ValueError, match="odd"):
        rs.spectral_peak(spec, smooth=2)
    assert math.isnan(rs.spectral_peak(spec, (0.9, 1.0)).freq)  # empty band


# --------------------------------------------------------------------------- emission fit


def loop_lagged_joint(outputs, k, lag):
    counts = np.zeros((k, k))
    for row in outputs:
        for t in range(len(row) - lag):
            counts[row[t], row[t + lag]] += 1
    return counts / counts.sum()


def test_lagged_joint_matches_a_loop(rng):
    outputs = rng.integers(0, 3, (5, 30))
    joint = rs.lagged_joint(outputs, 3, [1, 4])
    for g, lag in enumerate([1, 4]):
        assert np.allclose(joint[g], loop_lagged_joint(outputs, 3, lag))
    with pytest.raises(ValueError, match="largest lag"):
        rs.lagged_joint(outputs, 3, [30])


def test_hmm_lagged_joint_exact_and_sampled():
    hmm = get_hmm("linear3")
    exact = rs.hmm_lagged_joint(hmm, [1, 3, 200])
    assert np.allclose(exact[0], output_pair_probabilities(hmm))
    assert np.allclose(exact.sum(axis=(1, 2)), 1.0)
    marg = exact[0].sum(1)
    assert np.allclose(exact[2], np.outer(marg, marg), atol=1e-9)  # independent far apart
    rng = np.random.default_rng(3)
    batches = np.stack([rs.lagged_joint(hmm_sample(hmm, 400, 60, rng)[1], 3, [3])[0] for _ in range(10)])
    sem = batches.std(axis=0, ddof=1) / math.sqrt(10)
    assert np.all(np.abs(batches.mean(axis=0) - exact[1]) <= 4 * sem + 1e-4)  # sampled agrees with exact
    _, outputs = hmm_sample(hmm, 400, 60, rng)
    assert rs.fit_error(outputs, hmm, [1, 3]) < 0.03
    floor = rs.hmm_fit_floor(hmm, 400, 60, [1, 3], np.random.default_rng(4), repeats=2)
    assert floor.shape == (2,) and np.all(floor < 0.03)
    uniform = np.random.default_rng(5).integers(0, 3, (400, 60))
    assert rs.fit_error(uniform, hmm, [1, 3]) > 0.2


# --------------------------------------------------------------------------- variants and controls


def test_variants_of_each_axis():
    w = tiny_weights()
    basis = np.random.default_rng(0).normal(size=(2, 12))
    plane = rs.variants(w, "subspace_gain", [0.0, 1.0, 3.0], basis=basis)
    assert np.allclose(plane.W_in[1], w.W_in)  # gain 1: unchanged
    q, _ = np.linalg.qr(basis.T)
    assert np.abs(q.T @ plane.W_in[0]).max() < 1e-5  # gain 0: no noise drive in the subspace
    assert np.allclose(q.T @ plane.W_in[2], 3 * q.T @ w.W_in, atol=1e-5)
    assert np.allclose((np.eye(12) - q @ q.T) @ plane.W_in[2], (np.eye(12) - q @ q.T) @ w.W_in, atol=1e-5)
    thr = rs.variants(w, "threshold_scale", [0.5, 2.0], threshold=0.3)
    assert np.all(thr.bias == -np.float32(0.3)) and thr.input_scale.tolist() == [0.5, 2.0]
    assert not thr.homogeneous.any()
    hid = rs.variants(w, "hidden_noise", [0.0, 0.5])
    assert hid.hidden_std.tolist() == [0.0, 0.5] and hid.homogeneous.all()
    with pytest.raises(ValueError, match="unknown axis"):
        rs.variants(w, "volume", [1.0])
    with pytest.raises(ValueError, match="basis"):
        rs.variants(w, "subspace_gain", [1.0])
    with pytest.raises(ValueError, match="> 0"):
        rs.variants(w, "input_scale", [0.0, 1.0])
    with pytest.raises(ValueError, match="linearly dependent"):
        rs.variants(w, "subspace_gain", [1.0], basis=np.ones((2, 12)))


def test_controls_are_copies_with_the_stated_invariants():
    w = tiny_weights()
    before = w.W_rec.copy()
    cols = rs.shuffled_columns(w, gen(0))
    assert np.allclose(np.sort(cols.W_rec, axis=1), np.sort(w.W_rec, axis=1))  # each unit's incoming weights
    assert np.allclose(np.linalg.svd(cols.W_rec, compute_uv=False), np.linalg.svd(w.W_rec, compute_uv=False), atol=1e-5)
    assert not np.allclose(cols.W_rec, w.W_rec)
    entries = rs.shuffled_entries(w, gen(0))
    assert np.allclose(np.sort(entries.W_rec.ravel()), np.sort(w.W_rec.ravel()))
    lin = rs.linearised(w, 0.8)
    assert np.abs(np.linalg.eigvals(lin.W_rec.astype(np.float64))).max() == pytest.approx(0.8, rel=1e-5)
    assert np.array_equal(w.W_rec, before)  # the caller's weights are untouched
    with pytest.raises(ValueError, match="radius"):
        rs.linearised(w, 1.5)


def test_pick_snapshots():
    epochs = np.arange(0, 310, 10)
    assert rs.pick_snapshots(epochs, 80, 30) == (5, 11)
    assert rs.pick_snapshots(epochs, 85, 20) == (6, 11)
    with pytest.raises(ValueError):
        rs.pick_snapshots(epochs, 20, 30)
    with pytest.raises(ValueError, match="NaN"):
        rs.pick_snapshots(epochs, float("nan"), 30)


# --------------------------------------------------------------------------- simulation


def reference_run(net: rs.NetworkVariants, generator, n_seeds, n_traj, n_steps, burn_in):
    """Slow reference: one variant at a time, NumPy float64, the draws in the same order."""
    v_count, h_dim, d_dim = net.W_in.shape
    k_dim = net.W_out.shape[1]
    b = n_seeds * n_traj
    draws = []
    for t in range(burn_in + n_steps):
        x = torch.randn(b, d_dim, generator=generator, dtype=torch.float64).numpy()
        xi = torch.randn(b, h_dim, generator=generator, dtype=torch.float64).numpy() if np.any(net.hidden_std > 0) else 0.0
        u = torch.rand(b, k_dim, generator=generator, dtype=torch.float64).numpy() if t >= burn_in else None
        draws.append((x, xi, u))
    dominant = np.zeros((v_count, b, n_steps), dtype=np.int64)
    sampled = np.zeros_like(dominant)
    for v in range(v_count):
        for i in range(b):
            h = np.zeros(h_dim)
            for t, (x, xi, u) in enumerate(draws):
                pre = net.W_rec[v] @ h + net.input_scale[v] * (net.W_in[v] @ x[i]) + net.bias[v]
                pre = pre + (net.hidden_std[v] * xi[i] if np.ndim(xi) else 0.0)
                h = np.maximum(pre, 0.0) if net.activation == "relu" else pre
                if t >= burn_in:
                    logits = net.W_out[v] @ h
                    dominant[v, i, t - burn_in] = np.argmax(logits)
                    sampled[v, i, t - burn_in] = np.argmax(logits - np.log(-np.log(u[i])))
    shape = (v_count, n_seeds, n_traj, n_steps)
    return dominant.reshape(shape), sampled.reshape(shape)


@pytest.mark.parametrize("axis,kw,activation", [
    ("hidden_noise", {}, "relu"),
    ("threshold_scale", {"threshold": 0.2}, "relu"),
    ("input_scale", {}, "linear"),
])
def test_simulate_matches_a_reference_loop(axis, kw, activation):
    w = tiny_weights(1, gain=0.9)
    net = rs.variants(w, axis, [0.3, 1.0], activation=activation, **kw)
    run = rs.simulate(net, gen(7), n_seeds=2, n_traj=3, n_steps=25, burn_in=5, dtype=torch.float64)
    dominant, sampled = reference_run(net, gen(7), 2, 3, 25, 5)
    assert np.array_equal(run.dominant, dominant)
    assert np.array_equal(run.sampled, sampled)
    assert run.dominant.shape == (2, 2, 3, 25) and not run.diverged.any()


def test_argmax_outputs_do_not_depend_on_the_input_scale():
    # positive homogeneity: the run at scale s is s times the run at scale 1 (same draws);
    # scaling by a power of two is exact in float32
    w = tiny_weights(2)
    net = rs.variants(w, "input_scale", [0.25, 1.0, 4.0])
    run = rs.simulate(net, gen(3), n_seeds=2, n_traj=4, n_steps=300, burn_in=20)
    assert np.array_equal(run.dominant[0], run.dominant[1]) and np.array_equal(run.dominant[2], run.dominant[1])
    m = rs.measure(run, get_hmm("linear2"), lags=[1, 5])
    for name in ("rate", "dwell_cv", "peak_prominence"):
        values = getattr(m, name)
        assert np.array_equal(values[0], values[1], equal_nan=True) and np.array_equal(values[2], values[1], equal_nan=True)
    # the sampled outputs do change: logits scale with s, the Gumbel noise does not
    assert m.sampled_rate[0].mean() > m.sampled_rate[2].mean()
    # a bias breaks the invariance
    thr = rs.simulate(rs.variants(w, "threshold_scale", [0.25, 1.0], threshold=0.5), gen(3), n_seeds=2, n_traj=4,
                      n_steps=300, burn_in=20)
    assert not np.array_equal(thr.dominant[0], thr.dominant[1])


def test_simulate_flags_divergence():
    w = tiny_weights(3)
    exploding = RNNWeights(w.W_in, (np.eye(12) * 3).astype(np.float32), w.W_out)
    net = rs.variants(exploding, "hidden_noise", [0.0])
    run = rs.simulate(net, gen(0), n_seeds=1, n_traj=2, n_steps=100, burn_in=0)
    assert run.diverged.all()
    m = rs.measure(run, None)
    assert np.isnan(m.rate).all() and m.dwells[0].size == 0 and m.diverged.all()


def test_measure_on_a_hand_made_run():
    period = 10
    dom = np.tile(np.repeat(np.array([0, 2], dtype=np.int8), period // 2), 40)  # 400 steps
    dominant = np.broadcast_to(dom, (1, 2, 3, 400)).copy()
    run = rs.SweepRun(dominant, dominant.copy(), np.array([False]), np.array([1.0]), "input_scale", 3)
    m = rs.measure(run, get_hmm("linear2"), lags=[1])
    assert np.allclose(m.rate, 79 / 399)  # a change every 5 steps: 79 of the 399 pairs
    assert np.all(m.dwell_cv == 0) and np.all(m.cv_ratio == 0) and np.all(m.dwell_mean == 5)
    assert np.allclose(m.peak_freq, 1 / period)
    assert np.allclose(m.occupancy[0, :, [0, 2]], 0.5) and np.all(m.occupancy[0, :, 1] == 0)
    mean, low, high = rs.band(m.dwell_mean)
    assert mean[0] == 5 and low[0] == high[0] == 5


# --------------------------------------------------------------------------- time scales


def test_cluster_passages_on_a_hand_built_run():
    # cluster of 0 (with an excursion that returns), passage of 2 steps, cluster of 2, passage, cluster of 0
    is_cluster = np.array([1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1], dtype=bool)
    output = np.array([0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 0, 0, 0])
    dwells, passages = rs.cluster_passages(is_cluster, output)
    assert passages.tolist() == [2, 3]
    assert dwells.tolist() == [3]  # the first and last dwells touch the ends of the run


def test_variant_model_steps_like_the_simulation():
    w = tiny_weights(4)
    plain = rs.variant_model(rs.variants(w, "input_scale", [2.0]), 0)
    assert isinstance(plain, NoiseRNN) and plain.input_size == 5
    noisy = rs.variant_model(rs.variants(w, "hidden_noise", [0.5]), 0)
    assert isinstance(noisy, NoiseRNN) and noisy.input_size == 5 + 12  # private noise as extra inputs
    biased = rs.variant_model(rs.variants(w, "threshold_scale", [2.0], threshold=0.3), 0)
    h = torch.rand(4, 12)
    x = torch.randn(4, 5)
    expected = torch.relu(h @ torch.from_numpy(w.W_rec).T + 2.0 * x @ torch.from_numpy(w.W_in).T - 0.3)
    assert torch.allclose(biased.step(h, x), expected, atol=1e-5)
    with pytest.raises(IndexError):
        rs.variant_model(rs.variants(w, "input_scale", [2.0]), 1)


def test_time_scales_of_a_small_network():
    w = tiny_weights(5, gain=1.0)
    ts = rs.time_scales(rs.variant_model(rs.variants(w, "input_scale", [1.0]), 0), 300, gen(1),
                        n_continuations=4, max_steps=12, burn_in=20)
    assert ts.fractions.sum() == pytest.approx(1.0)
    assert ts.n_passages == ts.passages.size and np.all(ts.passages >= 0)


def test_optimum_finds_interior_dips_and_rejects_noise():
    values = [0.5, 1.0, 2.0, 4.0]
    dip = np.array([[1.0, 1.02, 0.98], [0.8, 0.81, 0.79], [0.9, 0.91, 0.89], [1.1, 1.12, 1.08]])
    best = rs.optimum(values, dip)
    assert best.index == 1 and best.value == 1.0 and best.interior and best.significant
    noisy = np.array([[1.0, 0.5, 1.5], [0.9, 0.5, 1.3], [1.0, 0.6, 1.4], [1.0, 0.5, 1.5]])
    assert rs.optimum(values, noisy).interior and not rs.optimum(values, noisy).significant
    monotone = np.array([[1.0, 1.01], [0.9, 0.91], [0.8, 0.81], [0.7, 0.71]])
    assert not rs.optimum(values, monotone).interior
    with pytest.raises(ValueError, match="increase"):
        rs.optimum([1.0, 0.5, 2.0], dip[:3])


def test_largest_change_treats_matching_nans_as_equal():
    def fake(values):
        v = np.asarray(values, dtype=np.float64)
        return rs.SweepMeasures(np.arange(v.shape[0], dtype=float), "input_scale", *([v] * 11), np.zeros(v.shape + (3,)),
                                np.zeros((v.shape[0], 2)), np.arange(2.0), [], np.zeros(v.shape[0], dtype=bool))
    same = fake([[1.0, np.nan], [1.0, np.nan]])
    assert rs.largest_change(same, ["rate", "fit"], 0) == 0.0
    assert rs.largest_change(fake([[1.0, np.nan], [1.5, np.nan]]), ["rate"], 0) == 0.5
    assert rs.largest_change(fake([[1.0, np.nan], [1.0, 2.0]]), ["rate"], 0) == math.inf


def test_a_growing_but_finite_run_counts_as_exploded():
    w = tiny_weights(3)
    growing = RNNWeights(w.W_in, (np.eye(12) * 1.2).astype(np.float32), w.W_out)  # x 1.2 per step: finite after 150 steps
    run = rs.simulate(rs.variants(growing, "hidden_noise", [0.0]), gen(0), n_seeds=1, n_traj=2, n_steps=150, burn_in=10)
    assert run.diverged.all()
    stable = rs.simulate(rs.variants(w, "hidden_noise", [0.0]), gen(0), n_seeds=1, n_traj=2, n_steps=150, burn_in=10)
    assert not stable.diverged.any()


def test_bifurcation_snapshots_returns_none_without_snapshots_on_both_sides():
    from hmmrnn.checkpoints import Snapshots

    w = tiny_weights(6)
    epochs = np.arange(0, 60, 10)
    snaps = Snapshots(epochs, *(np.repeat(a[None], epochs.size, axis=0) for a in w))
    assert rs.bifurcation_snapshots(snaps, gen(0), offset=1000, n_traj=2, n_steps=50, burn_in=10) is None


# --------------------------------------------------------------------------- several frequent outputs, divergence


def loop_track(seq: np.ndarray, outputs) -> np.ndarray:
    out = seq.copy()
    for b, row in enumerate(seq):
        tracked = [t for t, v in enumerate(row) if v in outputs]
        last = row[tracked[0]] if tracked else None
        for t, v in enumerate(row):
            if v in outputs:
                last = v
            elif last is not None:
                out[b, t] = last
    return out


def test_track_outputs_matches_a_loop(rng):
    seq = rng.integers(0, 4, (7, 30))
    seq[3] = 1  # a row without any tracked value stays as it is
    seq[4, :5] = 3  # leading untracked steps take the first tracked value
    tracked = rs.track_outputs(seq, [0, 2])
    assert np.array_equal(tracked, loop_track(seq, {0, 2}))
    assert np.array_equal(tracked[3], seq[3]) and np.all(np.isin(np.delete(tracked, 3, axis=0), [0, 2]))
    assert np.array_equal(rs.track_outputs(seq, [0, 1, 2, 3]), seq)
    assert np.array_equal(rs.track_outputs(seq[0], [0, 2]), tracked[0])  # 1-D in, 1-D out


def test_frequent_outputs_of_the_targets():
    assert rs.frequent_outputs(get_hmm("linear2")).tolist() == [0, 2]
    assert rs.frequent_outputs(get_hmm("linear5")).tolist() == [0, 2]
    assert rs.frequent_outputs(get_hmm("fully3")).tolist() == [0, 1, 2]
    assert rs.frequent_outputs(get_hmm("cyclic4")).tolist() == [0, 1, 2]
    assert rs.frequent_outputs(get_hmm("cyclic4"), 0.3).tolist() == [1]
    with pytest.raises(ValueError, match="no output"):
        rs.frequent_outputs(get_hmm("linear2"), 0.6)
    with pytest.raises(ValueError, match="min_frequency"):
        rs.frequent_outputs(get_hmm("linear2"), 0.0)


def hand_run(dom: np.ndarray, k: int = 3) -> rs.SweepRun:
    dominant = np.broadcast_to(dom.astype(np.int8), (1, 2, 3, dom.size)).copy()
    return rs.SweepRun(dominant, dominant.copy(), np.array([False]), np.array([1.0]), "subspace_gain", k)


def test_measure_of_a_regular_cycle_through_three_outputs():
    dom = np.tile(np.repeat(np.array([0, 1, 2]), 5), 40)  # 0 -> 1 -> 2 -> 0, 5 steps each: period 15
    m = rs.measure(hand_run(dom), get_hmm("fully3"), lags=[1], outputs=[0, 1, 2])
    assert np.all(m.dwell_mean == 5) and np.all(m.dwell_cv == 0) and np.all(m.cv_ratio == 0)
    assert np.allclose(m.rate, 119 / 599)
    assert np.allclose(m.peak_freq, 1 / 15)  # a cycle through three outputs peaks at a third of the switching rate
    assert np.allclose(m.occupancy, 1 / 3)


def test_tracking_keeps_dwells_through_blips_of_a_rare_output():
    dom = np.tile(np.repeat(np.array([0, 2]), 5), 40)  # dwells of 5
    dom[2::10] = 1  # a one-step blip of the rare output in the middle of every dwell of 0
    raw = rs.measure(hand_run(dom), get_hmm("linear2"), lags=[1])
    tracked = rs.measure(hand_run(dom), get_hmm("linear2"), lags=[1], outputs=[0, 2])
    assert np.all(tracked.dwell_mean == 5) and np.all(tracked.dwell_cv == 0)
    assert np.all(raw.dwell_cv > 0) and np.all(raw.n_dwells > tracked.n_dwells)
    assert np.allclose(tracked.occupancy[..., 1], 0.1)  # occupancy stays raw: the share relabelled
    assert np.array_equal(raw.sampled_rate, tracked.sampled_rate) and np.array_equal(raw.fit, tracked.fit)


def test_orbit_pca_and_divergence():
    w = tiny_weights(7)
    p = rs.orbit_pca(w, gen(3), dims=2, n_steps=200, burn_in=20)
    assert np.allclose(p.components @ p.components.T, np.eye(2), atol=1e-10) and 0 < p.explained.sum() <= 1
    assert np.array_equal(rs.orbit_plane(w, gen(3), dims=2, n_steps=200, burn_in=20), p.components)
    for factor in (3.0, 1.2):  # overflows / grows a millionfold while finite
        exploding = RNNWeights(w.W_in, (np.eye(12) * factor).astype(np.float32), w.W_out)
        with pytest.raises(rs.DivergedError, match="diverged"):
            rs.orbit_plane(exploding, gen(0), n_steps=200, burn_in=10)
    assert issubclass(rs.DivergedError, ValueError)


def test_plane_gain_sweep_on_a_three_output_network():
    w, hmm = tiny_weights(8, gain=1.0), get_hmm("fully3")
    gains, kw = [0.5, 1.0, 2.0], dict(n_seeds=2, n_traj=2, n_steps=200, burn_in=20)
    fam = rs.plane_gain_sweep(w, hmm, gains, gen(4), plane_steps=100, lags=[1, 3], **kw)
    assert fam.status == "ok" and fam.tracked.tolist() == [0, 1, 2] and fam.diverged_gains.size == 0
    # the same steps by hand, with the same draws
    g = gen(4)
    p = rs.orbit_pca(w, g, dims=2, n_steps=100, burn_in=20)
    m = rs.measure(rs.simulate(rs.variants(w, "subspace_gain", gains, basis=p.components), g, **kw), hmm, [1, 3], outputs=[0, 1, 2])
    assert np.array_equal(fam.plane, p.components) and fam.plane_variance == pytest.approx(p.explained.sum())
    for field in ("rate", "dwell_cv", "fit"):
        assert np.array_equal(getattr(fam.measures, field), getattr(m, field), equal_nan=True)
    w_in = w.W_in.astype(np.float64)
    assert fam.input_share == pytest.approx(np.sum((p.components @ w_in) ** 2) / np.sum(w_in**2))
    assert fam.best == rs.optimum(gains, m.cv_ratio) and fam.relabelled == 0.0


def test_plane_gain_sweep_reports_divergence_instead_of_raising():
    w = tiny_weights(9)
    exploding = RNNWeights(w.W_in, (np.eye(12) * 3).astype(np.float32), w.W_out)
    fam = rs.plane_gain_sweep(exploding, get_hmm("fully3"), [0.5, 1.0, 2.0], gen(0), n_seeds=1, n_traj=2, n_steps=50,
                              burn_in=10, plane_steps=100)
    assert fam.status == "diverged" and fam.measures is None and fam.best is None
    # a sweep whose run at g = 1 exploded counts as diverged too, even if other gains did not
    dominant = np.zeros((3, 1, 2, 50), dtype=np.int8)
    run = rs.SweepRun(dominant, dominant.copy(), np.array([False, True, False]), np.array([0.5, 1.0, 2.0]), "subspace_gain", 3)
    wrapped = rs.plane_sweep(w, np.eye(12)[:2], rs.measure(run, None), [0, 1, 2])
    assert wrapped.status == "diverged" and wrapped.best is None and wrapped.diverged_gains.tolist() == [1.0]
    with pytest.raises(ValueError, match="subspace_gain"):
        rs.plane_sweep(w, np.eye(12)[:2], rs.measure(run._replace(axis="input_scale"), None), [0, 1, 2])


def test_plane_sweep_counts_the_relabelled_share_over_measured_gains_only():
    w = tiny_weights(10)
    dom = np.zeros((3, 1, 2, 40), dtype=np.int8)
    dom[:, :, :, ::4] = 1  # output 1 dominant at a quarter of the steps
    dom[:, :, :, 1::4] = 2
    run = rs.SweepRun(dom, dom.copy(), np.array([False, False, True]), np.array([0.5, 1.0, 2.0]), "subspace_gain", 3)
    wrapped = rs.plane_sweep(w, np.eye(12)[:2], rs.measure(run, None, outputs=[0, 2]), [0, 2])
    assert wrapped.status == "ok" and wrapped.relabelled == pytest.approx(0.25)
    assert wrapped.diverged_gains.tolist() == [2.0] and wrapped.best is not None


def test_named_generator_depends_on_seed_and_name_only():
    a = torch.rand(4, generator=rs.named_generator(3, "cyclic4"))
    assert torch.equal(a, torch.rand(4, generator=rs.named_generator(3, "cyclic4")))
    assert not torch.equal(a, torch.rand(4, generator=rs.named_generator(3, "fully3")))
    assert not torch.equal(a, torch.rand(4, generator=rs.named_generator(4, "cyclic4")))
    with pytest.raises(ValueError, match="seed"):
        rs.named_generator(-1, "cyclic4")


def test_dwell_times_by_regime_against_a_hand_count():
    seq = np.array([[0, 0, 1, 1, 1, 2, 2, 0, 0, 0, 1],
                    [2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2]])
    flag = np.zeros_like(seq, dtype=bool)
    flag[0, 2:5] = True  # the run 1,1,1 lies inside; 2,2 and 0,0,0 outside
    flag[1, 5:] = True   # the run 0,0,0,0 straddles the border: dropped
    inside, outside = rs.dwell_times_by_regime(seq, flag)
    assert sorted(inside.tolist()) == [3]
    assert sorted(outside.tolist()) == [2, 3]
    # the two parts together are the uncensored dwells when nothing straddles
    none = np.zeros_like(flag)
    assert sorted(rs.dwell_times_by_regime(seq, none)[1].tolist()) == sorted(rs.dwell_times(seq).tolist())
    with pytest.raises(ValueError, match="shape"):
        rs.dwell_times_by_regime(seq, flag[:, :5])
