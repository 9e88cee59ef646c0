"""Tests of hmmrnn.dynamics on hand-built maps and networks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from hmmrnn import dynamics as dyn
from hmmrnn.checkpoints import Snapshots
from hmmrnn.model import RNNWeights, numpy_rollout_hidden


def random_net(seed: int, h: int = 8, d: int = 4, k: int = 3, radius: float = 0.9) -> RNNWeights:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(h, h))
    w *= radius / np.abs(np.linalg.eigvals(w)).max()
    return RNNWeights(rng.normal(size=(h, d)).astype(np.float32) / math.sqrt(d), w.astype(np.float32),
                      rng.normal(size=(k, h)).astype(np.float32))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- fixed points

def test_affine_map_fixed_point_and_spectrum():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    a *= 0.8 / np.abs(np.linalg.eigvals(a)).max()
    b = rng.normal(size=5)
    at, bt = torch.tensor(a), torch.tensor(b)
    fp = dyn.find_fixed_points(lambda h: h @ at.T + bt, rng.normal(size=(20, 5)) * 3, n_iter=300)
    assert len(fp) == 1 and fp.n_merged[0] == 20
    np.testing.assert_allclose(fp.xstar[0], np.linalg.solve(np.eye(5) - a, b), atol=1e-10)
    assert fp.speed[0] < 1e-20
    np.testing.assert_allclose(fp.jacobian[0], a, atol=1e-12)
    np.testing.assert_allclose(np.sort(np.abs(fp.eigvals[0])), np.sort(np.abs(np.linalg.eigvals(a))), atol=1e-10)
    assert fp.is_stable[0] and fp.spectral_radius[0] == pytest.approx(0.8)


def test_two_unit_relu_net_with_bias_has_two_known_fixed_points():
    # unit 0: h = relu(0.5 h + 1) -> 2 (slope 0.5); unit 1: h = relu(1.5 h - 1) -> 0 (stable) or 2 (unstable)
    w, b = torch.tensor([[0.5, 0.0], [0.0, 1.5]], dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    grid = np.stack(np.meshgrid(np.linspace(0.1, 4, 6), np.linspace(0.1, 4, 6)), -1).reshape(-1, 2)
    fp = dyn.find_fixed_points(lambda h: torch.relu(h @ w.T + b), grid, n_iter=1500)
    assert len(fp) == 2
    assert np.all(fp.speed < 1e-20)
    by_y = np.argsort(fp.xstar[:, 1])
    np.testing.assert_allclose(fp.xstar[by_y], [[2.0, 0.0], [2.0, 2.0]], atol=1e-8)
    assert fp.is_stable[by_y].tolist() == [True, False]
    np.testing.assert_allclose(np.abs(fp.eigvals[by_y[1]]), [1.5, 0.5], atol=1e-10)
    np.testing.assert_allclose(np.abs(fp.eigvals[by_y[0]]), [0.5, 0.0], atol=1e-10)
    assert fp.n_merged.sum() == len(grid)


def test_contracting_map_has_unique_fixed_point_equal_to_iteration_limit():
    rng = np.random.default_rng(1)
    a = torch.tensor(rng.normal(size=(6, 6)) * 0.1)
    c = torch.tensor(rng.normal(size=6))
    step = lambda h: torch.tanh(h @ a.T) + c  # Lipschitz < 1: a contraction
    fp = dyn.find_fixed_points(step, rng.normal(size=(30, 6)) * 5, n_iter=500)
    assert len(fp) == 1
    limit = dyn.iterate_map(step, np.zeros((1, 6)), 200)[0, -1].numpy()
    np.testing.assert_allclose(fp.xstar[0], limit, atol=1e-10)
    assert fp.is_stable[0]


def test_bias_free_relu_speed_is_homogeneous_and_finder_goes_to_origin():
    net = random_net(2, radius=0.95)
    step = dyn.autonomous_map(net)
    h = torch.tensor(np.random.default_rng(3).random((10, 8)))
    q = 0.5 * ((step(h) - h) ** 2).sum(-1)
    q3 = 0.5 * ((step(3 * h) - 3 * h) ** 2).sum(-1)
    np.testing.assert_allclose(q3.numpy(), 9 * q.numpy(), rtol=1e-12)
    fp = dyn.find_fixed_points(step, h.numpy() * 5, n_iter=800)
    assert len(fp) == 1
    assert np.linalg.norm(fp.xstar[0]) < 1e-6 and fp.speed[0] < 1e-12


def test_finder_rejects_bad_input():
    step = lambda h: h * 0.5
    with pytest.raises(ValueError):
        dyn.find_fixed_points(step, np.zeros(3))
    with pytest.raises(ValueError):
        dyn.find_fixed_points(step, np.full((2, 3), np.nan))
    with pytest.raises(ValueError):
        dyn.find_fixed_points(lambda h: h[:, :2], np.ones((2, 3)))


def test_converge_times_a_known_contraction():
    h0 = np.array([[1.0, 0.0], [0.0, 8.0]])
    conv = dyn.converge(lambda h: 0.5 * h, h0, n_steps=40, tol=1e-3)
    np.testing.assert_allclose(conv.point, 0.0, atol=1e-10)
    # ||h_t|| = r 0.5^t < 1e-3 first at t = floor(log2(r / 1e-3)) + 1
    expected = [math.floor(math.log2(r / 1e-3)) + 1 for r in (1.0, 8.0)]
    assert conv.time.tolist() == expected
    assert conv.spread < 1e-10 and conv.distance.shape == (2, 41)
    never = dyn.converge(lambda h: h, h0, n_steps=5, tol=1e-3)
    assert np.all(np.isnan(never.time))


# ----------------------------------------------------------------------------- Jacobians

def test_relu_jacobian_matches_autograd():
    net = random_net(4)
    h = np.random.default_rng(5).random((7, 8))
    auto = dyn.jacobian(dyn.autonomous_map(net), h)
    pre = h @ net.W_rec.T.astype(np.float64)
    exact = dyn.relu_jacobian(net.W_rec.astype(np.float64), pre > 0)
    np.testing.assert_allclose(auto.numpy(), exact.numpy(), atol=1e-12)


def test_averaged_jacobian_matches_autograd():
    net = random_net(6)
    h = np.random.default_rng(7).random((5, 8))
    auto = dyn.jacobian(dyn.averaged_map(net, 0.7), h)
    np.testing.assert_allclose(auto.numpy(), dyn.averaged_jacobian(net, h, 0.7).numpy(), atol=1e-10)


# ----------------------------------------------------------------------------- averaged drift

def test_conditional_moments_match_monte_carlo():
    net = random_net(8)
    h = np.random.default_rng(9).random((4, 8)) * 2
    mean, var = dyn.conditional_moments(net, h, 1.3)
    mc_mean, mc_var = dyn.monte_carlo_moments(net, h, 1.3, 200_000, gen(1))
    sigma = 1.3 * np.linalg.norm(net.W_in.astype(np.float64), axis=1)
    np.testing.assert_allclose(mc_mean, mean, atol=5 * sigma.max() / math.sqrt(200_000))
    np.testing.assert_allclose(mc_var, var, rtol=0.03, atol=1e-3)
    np.testing.assert_allclose(dyn.averaged_map(net, 1.3)(torch.tensor(h)).numpy(), mean, atol=1e-12)


def test_averaged_map_rectified_gaussian_formula_scalar():
    # one unit, W_rec = w, W_in = [s0]: the mean of relu(N(mu, sigma^2)) by quadrature
    net = RNNWeights(np.array([[0.8]], np.float32), np.array([[0.5]], np.float32), np.array([[1.0]], np.float32))
    for h in (-2.0, 0.0, 1.0, 3.0):
        mu, sigma = 0.5 * h, 0.8 * 2.0
        quad = stats.norm(mu, sigma).expect(lambda u: max(u, 0.0))
        got = dyn.averaged_map(net, 2.0)(torch.tensor([[h]], dtype=torch.float64)).item()
        assert got == pytest.approx(quad, rel=1e-6, abs=1e-9)


def test_averaged_map_homogeneity_and_noise_free_limit():
    net = random_net(10)
    h = torch.tensor(np.random.default_rng(11).random((6, 8)))
    f1, f3 = dyn.averaged_map(net, 1.0), dyn.averaged_map(net, 3.0)
    np.testing.assert_allclose(f3(3 * h).numpy(), 3 * f1(h).numpy(), rtol=1e-12)
    np.testing.assert_allclose(dyn.averaged_map(net, 0.0)(h).numpy(), dyn.autonomous_map(net)(h).numpy(), atol=1e-15)


def test_averaged_map_fixed_point_one_unit_against_brentq():
    # h* = E[relu(w h* + sigma z)]: scalar equation, solved independently
    net = RNNWeights(np.array([[1.0]], np.float32), np.array([[0.6]], np.float32), np.array([[1.0]], np.float32))
    w, s = float(net.W_rec[0, 0]), 1.5  # the float32 value of 0.6
    sigma = float(net.W_in[0, 0]) * s

    def residual(h):
        z = w * h / sigma
        return w * h * stats.norm.cdf(z) + sigma * stats.norm.pdf(z) - h

    root = optimize.brentq(residual, 0.0, 50.0, xtol=1e-14)
    fp = dyn.find_fixed_points(dyn.averaged_map(net, s), np.array([[0.1], [5.0], [20.0]]), n_iter=500)
    assert len(fp) == 1
    assert fp.xstar[0, 0] == pytest.approx(root, rel=1e-8)
    assert fp.is_stable[0]
    # Jacobian = Phi(mu / sigma) w
    assert fp.eigvals[0, 0].real == pytest.approx(stats.norm.cdf(w * root / sigma) * w, rel=1e-8)


def test_averaged_map_rejects_negative_noise():
    with pytest.raises(ValueError):
        dyn.averaged_map(random_net(0), -1.0)


# ----------------------------------------------------------------------------- exact ReLU regions

def test_activation_patterns_counts():
    masks = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]], dtype=bool)
    pats = dyn.activation_patterns(masks)
    assert pats.n_patterns == 3
    assert pats.counts.tolist() == [3, 1, 1]
    assert pats.patterns[0].tolist() == [True, False, True]
    np.testing.assert_array_equal(pats.patterns[pats.index], masks)
    assert pats.flips.tolist() == [0, 2, 2, 3]
    np.testing.assert_allclose(pats.unit_rate, [0.6, 0.2, 0.6])
    # states instead of masks: > 0 is taken
    assert dyn.activation_patterns(masks * 2.5).n_patterns == 3


def test_region_analysis_finds_a_ray_of_fixed_points_only_where_it_lies_in_the_region():
    w = np.array([[1.0, 0.0], [0.0, 0.5]])  # (c, 0) is fixed for every c > 0
    ra = dyn.region_analysis(w, np.array([[True, False], [True, True], [False, False], [False, True]]))
    assert ra.ray_in_region.tolist() == [True, False, False, False]
    np.testing.assert_allclose(ra.sigma_min[:2], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ra.sigma_min[2:], [1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(ra.gap_to_one, [0.0, 0.0, 1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(ra.spectral_radius, [1.0, 1.0, 0.0, 0.5], atol=1e-12)
    # unit 1 is driven by unit 0: the ray of pattern (1, 0) is inconsistent, pattern (1, 1) has its own
    w2 = np.array([[1.0, 0.0], [1.0, 0.5]])
    ra2 = dyn.region_analysis(w2, np.array([[True, False], [True, True]]))
    assert ra2.ray_in_region.tolist() == [False, True]
    step = dyn.autonomous_map(RNNWeights(np.ones((2, 1), np.float32), w2.astype(np.float32), np.ones((1, 2), np.float32)))
    ray = torch.tensor([[1.0, 2.0]], dtype=torch.float64) * 3.7
    np.testing.assert_allclose(step(ray).numpy(), ray.numpy(), atol=1e-6)  # float32 weights


def test_region_analysis_generic_network_has_only_the_origin():
    net = random_net(12, h=10)
    rng = np.random.default_rng(13)
    pats = rng.random((20, 10)) < 0.6
    ra = dyn.region_analysis(net.W_rec, pats)
    assert np.all(ra.sigma_min > 1e-6) and not ra.ray_in_region.any()
    for i in range(len(pats)):  # against the full H x H local maps
        full = pats[i][:, None] * net.W_rec.astype(np.float64)
        eig = np.linalg.eigvals(full)
        assert ra.spectral_radius[i] == pytest.approx(np.abs(eig).max())
        assert ra.n_unstable[i] == int((np.abs(eig) > 1).sum())
        assert ra.gap_to_one[i] == pytest.approx(np.abs(eig - 1).min())
        assert (ra.sigma_min[i] > 1e-6) == (np.linalg.svd(np.eye(10) - full, compute_uv=False).min() > 1e-6)
    assert ra.n_active.tolist() == pats.sum(1).tolist()


def test_local_eigvals_match_full_local_maps():
    net = random_net(23, h=12, radius=1.3)
    masks = np.random.default_rng(24).random((15, 12)) < 0.5
    masks[0] = False  # all inactive
    compact = dyn.local_eigvals(net.W_rec.astype(np.float64), masks).numpy()
    for i, m in enumerate(masks):
        full = np.linalg.eigvals(m[:, None] * net.W_rec.astype(np.float64))
        padded = np.concatenate([compact[i], np.zeros(12 - compact.shape[1])])
        np.testing.assert_allclose(np.sort_complex(np.round(padded, 10)), np.sort_complex(np.round(full, 10)), atol=1e-8)


def test_map_jacobian_closed_forms_match_autograd():
    net = random_net(25)
    h = np.random.default_rng(26).random((6, 8))
    for scale in (None, 0.8):
        step = dyn.autonomous_map(net) if scale is None else dyn.averaged_map(net, scale)
        np.testing.assert_allclose(dyn.map_jacobian(net, scale)(torch.tensor(h)).numpy(), dyn.jacobian(step, h).numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- driven runs

def test_simulate_matches_numpy_reference_and_batches_over_weight_sets():
    nets = [random_net(s) for s in (14, 15)]
    x = torch.randn(2, 3, 20, 4, generator=gen(2))
    h0 = torch.zeros(2, 3, 8)
    w_in = torch.tensor(np.stack([n.W_in for n in nets]))
    w_rec = torch.tensor(np.stack([n.W_rec for n in nets]))
    both = dyn._simulate(w_in, w_rec, x, h0)
    for i, net in enumerate(nets):
        ref = numpy_rollout_hidden(net, x[i].numpy(), np.zeros((3, 8), np.float32))
        np.testing.assert_allclose(both[i].numpy(), ref, atol=1e-5)


def test_driven_run_is_seeded_and_shaped():
    net = random_net(16)
    a = dyn.driven_run(net, 50, gen(3), n_traj=2, burn_in=10, noise_scale=[0.5, 1.0, 2.0])
    b = dyn.driven_run(net, 50, gen(3), n_traj=2, burn_in=10, noise_scale=[0.5, 1.0, 2.0])
    assert a.hidden.shape == (6, 50, 8) and a.logits.shape == (6, 50, 3) and a.outputs.shape == (6, 50)
    np.testing.assert_array_equal(a.hidden, b.hidden)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert a.noise_scale.tolist() == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]
    assert a.dominant.shape == (6, 50) and a.states.shape == (300, 8)
    with pytest.raises(ValueError):
        dyn.driven_run(net, 10, gen(0), noise_scale=-1.0)


def test_positive_homogeneity_of_driven_runs():
    net = random_net(17)
    assert dyn.scaled_copy_check(net, 2.0, 200, gen(4)) == 0.0  # exact in floating point
    assert dyn.scaled_copy_check(net, 0.3, 200, gen(4)) < 1e-5


def test_outputs_sampled_with_softmax_probabilities():
    # W_rec = 0: h = relu(W_in x) i.i.d.; compare sample frequencies with the mean softmax
    rng = np.random.default_rng(18)
    net = RNNWeights(rng.normal(size=(4, 2)).astype(np.float32), np.zeros((4, 4), np.float32),
                     rng.normal(size=(3, 4)).astype(np.float32))
    run = dyn.driven_run(net, 20_000, gen(5), burn_in=0)
    probs = torch.softmax(torch.tensor(run.logits[0]), -1).numpy().mean(0)
    freq = np.bincount(run.outputs[0], minlength=3) / 20_000
    np.testing.assert_allclose(freq, probs, atol=0.015)


# ----------------------------------------------------------------------------- orbit geometry

def test_pca_recovers_an_embedded_ellipse():
    rng = np.random.default_rng(19)
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    basis, _ = np.linalg.qr(rng.normal(size=(10, 2)))
    x = np.stack([3 * np.cos(t), 1 * np.sin(t)], 1) @ basis.T + 5.0
    p = dyn.pca(x, 3)
    np.testing.assert_allclose(p.explained[:2], [0.9, 0.1], atol=1e-10)
    assert abs(p.components[0] @ basis[:, 0]) == pytest.approx(1.0)
    np.testing.assert_allclose(p.mean, 5.0, atol=1e-10)
    coords = p.project(x)
    assert dyn.orbit_radius(coords[:, :2]) == pytest.approx(math.sqrt((9 + 1) / 2), rel=1e-6)
    flipped = dyn.orient_pcs(p, np.stack([-p.components[0], np.zeros(10), p.components[0]]))
    assert flipped.components[0] @ p.components[0] == pytest.approx(-1.0)


def test_rotation_of_a_circle_and_of_a_back_and_forth_arc():
    t = np.arange(2000)
    period = 100
    theta = 2 * np.pi * t / period
    circle = np.stack([np.cos(theta), np.sin(theta)], -1)[None] + 5.0  # off-centre: areas do not care
    dom = np.where(np.cos(theta) > 0, 0, 2)[None]
    ccw = dyn.rotation(circle, dom)
    assert ccw.sign == 1 and ccw.same_sense == 1.0
    assert ccw.n_cycles == 19  # 20 switches 0 -> 2 in 20 periods, 19 complete round trips
    np.testing.assert_allclose(ccw.cycle_areas, np.pi * np.sin(np.pi / period) / (np.pi / period), rtol=1e-3)
    cw = dyn.rotation(circle[..., ::-1].copy(), dom)
    assert cw.sign == -1 and cw.same_sense == 1.0
    # counter-clockwise from output 0 (right): out over the top, back along the bottom
    np.testing.assert_allclose(ccw.switch_out[:, 1].mean(), 5.0 + 1.0, atol=0.01)
    np.testing.assert_allclose(ccw.switch_back[:, 1].mean(), 5.0 - 1.0, atol=0.01)
    # an arc travelled back and forth: round trips of (almost) no area
    phase = np.pi / 2 * np.sin(2 * np.pi * t / period)
    arc = np.stack([np.cos(phase), np.sin(phase)], -1)[None]
    back = dyn.rotation(arc, np.where(phase > 0, 0, 2)[None])
    assert back.n_cycles == 19 and np.abs(back.cycle_areas).max() < 1e-2
    # visits to a third output between the pair do not create switches
    assert dyn.rotation(circle, np.where(np.cos(theta) > 0.9, 1, dom)).n_cycles == ccw.n_cycles
    path = dyn.switch_triggered_average(circle, dom, (0, 2), window=5)
    assert path.shape == (10, 2) and path[5, 1] > 5.0  # the switch 0 -> 2 happens at the top


def test_linear_fit_and_radius_sweep_follow_the_noise_std():
    fit = dyn.linear_fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 5.0, 7.0, 9.0]))
    assert fit.slope == pytest.approx(2.0) and fit.intercept == pytest.approx(1.0) and fit.r2 == pytest.approx(1.0)
    net = random_net(20)
    nominal = dyn.driven_run(net, 2000, gen(6), n_traj=2, burn_in=100)
    plane = dyn.pca(nominal.states, 2)
    sweep = dyn.radius_sweep(net, plane, [0.1, 0.5, 1.0, 2.0, 4.0], gen(7), n_traj=2, n_steps=2000, burn_in=100)
    ratio = sweep.radius / sweep.noise_scales
    assert np.ptp(ratio) / ratio.mean() < 0.1  # radius proportional to the std
    assert sweep.fit_std.r2 > 0.99 and sweep.fit_std.r2 > sweep.fit_var.r2
    assert abs(sweep.fit_std.intercept) < 0.05 * sweep.radius.max()


def test_readout_alignment():
    comps = np.eye(4)[:2]
    w_out = np.array([[2.0, 0, 0, 0], [0, 0, 1, 0], [1.0, 0, 1.0, 0]])
    np.testing.assert_allclose(dyn.readout_alignment(w_out, comps, (0, 1, 2)), [1.0, 0.0, 1 / math.sqrt(2)])


def test_drift_field_bins_the_averaged_drift_and_the_residual_noise_has_zero_mean():
    net = random_net(21)
    run = dyn.driven_run(net, 3000, gen(8), n_traj=2, burn_in=100)
    plane = dyn.pca(run.states, 2)
    field = dyn.drift_field(net, run.hidden, plane, 1.0, bins=6, min_count=1)
    assert field.count.sum() == 2 * 2999
    x = run.hidden[:, :-1].reshape(-1, 8).astype(np.float64)
    mean, var = dyn.conditional_moments(net, x, 1.0)
    # count-weighted bin averages give back the overall averages
    overall = ((mean - x) @ plane.components[:2].T).mean(0)
    weighted = [np.nansum(f * field.count) / field.count.sum() for f in (field.u, field.v)]
    np.testing.assert_allclose(weighted, overall, rtol=1e-4, atol=1e-6)
    speed = np.nansum(field.speed * field.count) / field.count.sum()
    assert speed == pytest.approx(np.linalg.norm(mean - x, axis=1).mean(), rel=1e-4)
    # E[h_{t+1} | h_t] is exact: the residuals of the run average to 0 within their standard error
    assert np.all(np.abs(field.residual_mean) < 4 * field.residual_sem)
    # the total residual variance (all H dimensions) matches the closed-form conditional variance
    resid = run.hidden[:, 1:].reshape(-1, 8) - mean
    assert (resid**2).sum(1).mean() == pytest.approx(var.sum(1).mean(), rel=0.05)
    assert np.all(field.ratio[field.count > 0] >= 0)


# ----------------------------------------------------------------------------- bifurcation

def test_eigen_counts_known_spectra():
    r, th = 1.02, 0.3
    rot = r * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    mats = torch.tensor(np.stack([rot, np.diag([0.5, 1.5]), np.diag([0.5, 0.2]), 0.5 * rot]), dtype=torch.float32)
    unstable, pairs = dyn.eigen_counts(torch.linalg.eigvals(mats))
    assert unstable.tolist() == [2, 1, 0, 0]
    assert pairs.tolist() == [1, 0, 0, 0]


def test_snapshot_dynamics_rates_and_spectra():
    stable = random_net(22, radius=0.5)
    silent = RNNWeights(stable.W_in, stable.W_rec, np.zeros_like(stable.W_out))
    expanding = RNNWeights(stable.W_in, (1.5 * np.eye(8)).astype(np.float32), stable.W_out)
    snaps = Snapshots(np.array([0, 10, 20]), *(np.stack([getattr(n, f) for n in (stable, silent, expanding)])
                                              for f in ("W_in", "W_rec", "W_out")))
    td = dyn.snapshot_dynamics(snaps, gen(9), n_traj=3, n_steps=40, burn_in=5, n_eig=30)
    # independent count of runs of the argmax output for snapshot 0
    torch_gen = gen(9)
    x = torch.randn(3, 3, 45, 4, generator=torch_gen)
    hidden = numpy_rollout_hidden(stable, x[0].numpy(), np.zeros((3, 8), np.float32))[:, 5:]
    dom = (hidden @ stable.W_out.T).argmax(-1)
    runs = 3 + (dom[:, 1:] != dom[:, :-1]).sum()
    assert td.transition_rate[0] == pytest.approx(runs / 120)
    assert td.transition_rate[1] == pytest.approx(3 / 120)  # zero readout: argmax never changes
    assert td.unstable_fraction[0] == 0.0 and td.unstable_fraction[2] == 1.0
    assert td.mean_unstable[2] > 1
    assert not td.diverged.any()
    assert td.growth[0] == pytest.approx(1.0, abs=0.5) and td.growth[2] > 1e3  # 1.5 I explodes
    boom = Snapshots(np.array([0]), stable.W_in[None], (30 * np.eye(8, dtype=np.float32))[None], stable.W_out[None])
    exploded = dyn.snapshot_dynamics(boom, gen(9), n_traj=2, n_steps=40, burn_in=5, n_eig=10)
    assert exploded.diverged.tolist() == [True] and np.isnan(exploded.transition_rate[0])


def test_detect_transition_midpoint_rule():
    epochs = np.arange(0, 101, 10)
    values = np.where(epochs < 60, 0.7, 0.05)
    tr = dyn.detect_transition(epochs, values, early=(10, 30), final_count=3)
    assert tr.epoch == 60 and tr.threshold == pytest.approx(0.375)
    rising = dyn.detect_transition(epochs, 1 - values, early=(10, 30), final_count=3)
    assert rising.epoch == 60
    late = np.where(epochs < 80, 0.7, 0.05)
    noisy = late + np.where(epochs == 50, -0.5, 0.0)  # one outlier at epoch 50
    assert dyn.detect_transition(epochs, noisy, early=(10, 30), final_count=3).epoch == 50
    assert dyn.detect_transition(epochs, noisy, early=(10, 30), final_count=3, smooth=3).epoch == 80
    with pytest.raises(ValueError):
        dyn.detect_transition(epochs, values, early=(200, 300))
    gap = np.where(epochs == 70, np.nan, late)  # a diverged snapshot is skipped
    assert dyn.detect_transition(epochs, gap, early=(10, 30), final_count=3, smooth=3).epoch == 80
    np.testing.assert_allclose(dyn._nanmedian_rows(np.array([[1.0, np.nan, 3.0], [np.nan] * 3, [4.0, 1.0, 2.0]])),
                               [2.0, np.nan, 2.0])
