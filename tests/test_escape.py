"""Tests of hmmrnn.escape: the exact grid first passage, the linear-Gaussian cluster, the kick
drive, the noise interventions and the measured hazards.

Known answers: an i.i.d. Gaussian sequence (rho = 0) escapes with probability Phi(mean / sd)
per step exactly and its dwell is geometric; an AR(1) process simulated directly (an independent
implementation) has the grid's quasi-stationary hazard and mean first passage; the linear model's
stationary moments solve their own equations and agree with a direct simulation of the linear
process; the HMM leaving probabilities of the paper's targets are known by hand; a memoryless
switching sequence has a flat hazard p.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from hmmrnn import escape as es
from hmmrnn.hmm import get_hmm
from hmmrnn.model import RNNWeights, numpy_rollout_hidden
from tiny_networks import tiny_weights


# ------------------------------------------------------------------ exact first passage on a grid


@pytest.mark.parametrize("mean,sd", [(-1.0, 1.0), (-2.5, 0.8), (-0.3, 2.0)])
def test_iid_escape_is_exact(mean, sd):
    esc = es.ar1_escape(mean, sd, 0.0, max_steps=50)
    p = float(ndtr(mean / sd))  # P(z > 0) for z ~ N(mean, sd^2)
    assert esc.hazard == pytest.approx(p, rel=1e-10, abs=1e-14)
    assert np.allclose(esc.survival, (1 - p) ** np.arange(51), rtol=1e-10)
    assert esc.mean_dwell == pytest.approx(1 / p, rel=1e-9)
    assert esc.dwell_pmf.sum() == pytest.approx(1 - (1 - p) ** 50, rel=1e-10)


def simulate_ar1(mean, sd, rho, n, steps, seed):
    rng = np.random.default_rng(seed)
    z = np.full(n, mean)
    alive = np.ones(n, dtype=bool)
    at_risk, events = np.zeros(steps), np.zeros(steps)
    first = np.full(n, steps + 1)
    for t in range(steps):
        z = mean + rho * (z - mean) + sd * math.sqrt(1 - rho * rho) * rng.standard_normal(n)
        hit = alive & (z > 0)
        at_risk[t], events[t] = alive.sum(), hit.sum()
        first[hit] = t + 1
        alive &= ~hit
    return at_risk, events, first


def test_ar1_escape_matches_direct_simulation():
    mean, sd, rho = -1.5, 1.0, 0.8
    esc = es.ar1_escape(mean, sd, rho, n_grid=600, max_steps=600)
    at_risk, events, first = simulate_ar1(mean, sd, rho, 40000, 600, seed=0)
    late = slice(60, 600)  # after the start has been forgotten: the quasi-stationary hazard
    h = events[late].sum() / at_risk[late].sum()
    se = math.sqrt(h * (1 - h) / at_risk[late].sum())
    assert abs(esc.hazard - h) < 4 * se + 0.01 * h
    assert (first <= 600).mean() > 0.999
    mfp = first.mean()
    assert esc.mean_dwell == pytest.approx(mfp, rel=0.02)
    # survival curve of the grid chain against the simulated one
    surv = np.concatenate([[1.0], 1 - np.cumsum(np.bincount(first, minlength=602)[1:601]) / first.size])
    assert np.max(np.abs(esc.survival[:100] - surv[:100])) < 0.01


def test_ar1_escape_converges_with_the_grid():
    coarse = es.ar1_escape(-2.0, 1.0, 0.9, n_grid=300)
    fine = es.ar1_escape(-2.0, 1.0, 0.9, n_grid=1200)
    assert coarse.hazard == pytest.approx(fine.hazard, rel=0.02)
    assert coarse.hazard < es.ar1_escape(-2.0, 1.0, 0.0).hazard  # memory slows the escape


@pytest.mark.parametrize("kwargs", [dict(mean=0.1, sd=1.0, rho=0.5), dict(mean=-1.0, sd=0.0, rho=0.5),
                                    dict(mean=-1.0, sd=1.0, rho=1.0), dict(mean=float("nan"), sd=1.0, rho=0.1)])
def test_ar1_escape_refuses_bad_input(kwargs):
    with pytest.raises(ValueError):
        es.ar1_escape(**kwargs)


# ------------------------------------------------------------------ linear-Gaussian cluster and kick drive


def test_linear_cluster_solves_its_equations():
    w = tiny_weights(gain=0.6)
    point = np.abs(np.random.default_rng(1).normal(size=12))
    cl = es.linear_cluster(w, point)
    assert cl.stable
    W_in, W_rec = w.W_in.astype(np.float64), w.W_rec.astype(np.float64)
    sigma = np.linalg.norm(W_in, axis=1)
    assert np.allclose(cl.gain, ndtr(W_rec @ point / sigma))
    assert np.allclose(cl.A, cl.gain[:, None] * W_rec)
    assert np.allclose(cl.cov, cl.A @ cl.cov @ cl.A.T + cl.Q, atol=1e-10)
    # the mean is the fixed point of the linear process c + A h, with c = Fbar(point) - A point
    from hmmrnn.dynamics import conditional_moments

    mean1, var1 = conditional_moments(w, point[None])
    assert np.allclose(cl.mean, mean1[0] - cl.A @ point + cl.A @ cl.mean)
    assert np.allclose(np.diag(cl.Q), var1[0])
    # Var relu(u) >= (E relu'(u))^2 Var u for Gaussian u: the diagonal correction is a variance
    G = cl.gain[:, None] * W_in
    assert np.all(np.diag(cl.Q) - np.diag(G @ G.T) >= -1e-12)


def test_kick_drive_matches_a_simulation_of_the_linear_process():
    w = tiny_weights(seed=3, gain=0.6)
    W_in, W_rec = w.W_in.astype(np.float64), w.W_rec.astype(np.float64)
    point = np.abs(np.random.default_rng(4).normal(size=12))
    cl = es.linear_cluster(w, point)
    units = [1, 4, 7]
    drive = es.kick_drive(w, cl, units)
    G = cl.gain[:, None] * W_in
    extra = np.sqrt(np.clip(np.diag(cl.Q) - np.diag(G @ G.T), 0, None))
    c = cl.mean - cl.A @ cl.mean
    rng = np.random.default_rng(5)
    n, steps = 4000, 400
    h = np.tile(cl.mean, (n, 1))
    r, wv = W_rec[units].mean(0), W_in[units].mean(0)
    zs = []
    for t in range(steps):
        x = rng.standard_normal((n, 5))
        z = h @ r + x @ wv  # the kick group's drive from h_{t-1} and x_t
        h = c + h @ cl.A.T + x @ G.T + extra * rng.standard_normal((n, 12))
        if t >= 100:
            zs.append(z)
    zs = np.stack(zs, 1)
    assert zs.mean() == pytest.approx(drive.mean, abs=0.01 * drive.sd + 0.005)
    assert zs.std() == pytest.approx(drive.sd, rel=0.01)
    rho = np.corrcoef(zs[:, :-1].ravel(), zs[:, 1:].ravel())[0, 1]
    assert rho == pytest.approx(drive.rho, abs=0.01)


def test_accumulation_direction_is_the_top_of_its_quadratic_form():
    w = tiny_weights(seed=6, gain=0.6)
    cl = es.linear_cluster(w, np.abs(np.random.default_rng(7).normal(size=12)))
    units = [0, 2]
    v = es.accumulation_direction(w, cl, units, n_lags=300)
    W_in, W_rec = w.W_in.astype(np.float64), w.W_rec.astype(np.float64)
    r, wv = W_rec[units].mean(0), W_in[units].mean(0)
    G = cl.gain[:, None] * W_in
    M = np.outer(wv, wv)
    a = r.copy()
    for _ in range(300):
        M += np.outer(G.T @ a, G.T @ a)
        a = cl.A.T @ a
    vals, vecs = np.linalg.eigh(M)
    assert np.linalg.norm(v) == pytest.approx(1.0)
    assert abs(v @ vecs[:, -1]) == pytest.approx(1.0, abs=1e-8)
    # the drive's variance is that quadratic form plus the rectification noise: the sum over
    # all input directions is the model's variance without the diagonal correction
    assert v @ M @ v == pytest.approx(vals[-1])


def test_noise_gain_scales_the_covariance_along_one_direction():
    w = tiny_weights(seed=8, gain=0.6)
    v = np.random.default_rng(9).normal(size=5)
    same = es.noise_gain(w, v, 1.0)
    assert np.array_equal(same.W_in, w.W_in) and np.array_equal(same.W_rec, w.W_rec)
    g = 1.7
    new = es.noise_gain(w, v, g)
    vn = v / np.linalg.norm(v)
    W = w.W_in.astype(np.float64)
    expected = W @ (np.eye(5) + (g * g - 1) * np.outer(vn, vn)) @ W.T
    assert np.allclose(new.W_in.astype(np.float64) @ new.W_in.astype(np.float64).T, expected, atol=1e-5)
    u = es.orthogonal_direction(v, torch.Generator().manual_seed(0))
    assert abs(u @ vn) < 1e-12 and np.linalg.norm(u) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        es.noise_gain(w, np.zeros(5), 2.0)


# ------------------------------------------------------------------ simulation and measurement


def test_simulate_matches_the_numpy_reference_and_shares_noise():
    w = tiny_weights(seed=10, gain=1.0)
    sim = es.simulate([w, es.noise_gain(w, np.ones(5), 1.0)], 3, 40, torch.Generator().manual_seed(0), burn_in=5, keep=40)
    assert np.array_equal(sim.dominant[0], sim.dominant[1])  # gain 1 changes nothing, same noise
    gen = torch.Generator().manual_seed(0)
    draws = []
    for t in range(45):  # the simulation's order: the input, then (after the burn-in) the Gumbel uniforms
        draws.append(torch.randn(3, 5, generator=gen).numpy())
        if t >= 5:
            torch.rand(3, 3, generator=gen)
    draws = np.stack(draws, 1)  # (B, T, D)
    hidden = numpy_rollout_hidden(w, draws, np.zeros((3, 12), dtype=np.float32))[:, -40:]
    assert np.allclose(sim.hidden, hidden, atol=1e-4)
    assert np.array_equal(sim.dominant[0], (hidden @ w.W_out.T).argmax(-1))
    assert np.allclose(sim.norms[0], np.linalg.norm(hidden, axis=-1), rtol=1e-4)


def test_sampled_outputs_follow_the_softmax():
    w = tiny_weights(seed=11, gain=0.6)
    flat = RNNWeights(w.W_in, w.W_rec, np.zeros_like(w.W_out))  # logits 0: every output equally likely
    sim = es.simulate([flat], 20, 500, torch.Generator().manual_seed(0), burn_in=5)
    freq = np.bincount(sim.sampled.ravel(), minlength=3) / sim.sampled.size
    assert np.max(np.abs(freq - 1 / 3)) < 4 * math.sqrt(2 / 9 / sim.sampled.size)
    assert np.all(sim.dominant == 0)  # argmax of equal logits: the first
    sharp = RNNWeights(w.W_in, w.W_rec, (w.W_out * 1e4).astype(np.float32))  # softmax ~ one-hot: sampled = dominant
    sim = es.simulate([sharp], 4, 200, torch.Generator().manual_seed(1), burn_in=5)
    assert (sim.sampled == sim.dominant).mean() > 0.99


def markov_outputs(rng, p, n, length):
    """(n, length) sequences over outputs {0, 2} that leave their value with probability p per step."""
    leave = rng.random((n, length)) < p
    return 2 * (np.cumsum(leave, axis=1) % 2)


def test_leaving_hazard_of_memoryless_switching():
    rng = np.random.default_rng(0)
    p = 0.05
    dom = markov_outputs(rng, p, 200, 2000)
    for kwargs in (dict(), dict(min_age=15), dict(target=2)):
        hz = es.leaving_hazard(dom, (0, 2), 0, **kwargs)
        assert hz.low < p < hz.high
        assert hz.high - hz.low < 0.2 * p
    # a rare output passed on the way is not a switch
    dom2 = dom.copy()
    inner = np.zeros_like(dom, dtype=bool)
    inner[:, 50:-1:97] = True
    inner[:, 1:-1] &= (dom[:, :-2] == dom[:, 1:-1]) & (dom[:, 2:] == dom[:, 1:-1])  # not at a switch
    dom2[inner] = 1
    assert inner.sum() > 1000
    assert es.leaving_hazard(dom2, (0, 2), 0).events == es.leaving_hazard(dom, (0, 2), 0).events
    surv = es.dwell_survival(dom, (0, 2), 0, 30)
    assert np.max(np.abs(surv - (1 - p) ** np.arange(31))) < 0.02


def test_leaving_hazard_respects_the_valid_mask():
    dom = np.array([[0, 0, 2, 2, 0, 0, 0, 2]])
    assert es.leaving_hazard(dom, (0, 2), 0).events == 2
    valid = np.ones_like(dom, dtype=bool)
    valid[0, 2] = False
    hz = es.leaving_hazard(dom, (0, 2), 0, valid=valid)
    assert hz.events == 1 and hz.at_risk == 4  # t = 0, 4, 5, 6 (t = 1 needs step 2)


def test_kick_units_finds_the_units_that_switch_on_at_the_switch():
    rng = np.random.default_rng(1)
    dom = markov_outputs(rng, 0.05, 20, 500)
    pre = rng.normal(-1.0, 1.0, (20, 500, 10)).astype(np.float32)
    c = es.carried(dom, (0, 2))
    switch = np.zeros_like(dom, dtype=bool)
    switch[:, 1:] = (c[:, :-1] == 0) & (c[:, 1:] == 2)
    pre[..., 3][switch] = 5.0
    pre[..., 8][switch] = 5.0
    units, n = es.kick_units(pre, dom, (0, 2), 0, 2, size=2)
    assert n == int(switch.sum()) and units.tolist() == [3, 8]


# ------------------------------------------------------------------ the HMM's leaving probabilities


def test_hmm_leaving_probabilities():
    q = {M: 0.05 ** (1 / (M - 1)) for M in (2, 3, 4, 5)}
    for M in (2, 3):  # the end states own outputs 0 and 2; M = 3's middle state ties
        assert es.hmm_leaving(get_hmm(f"linear{M}")) == pytest.approx({0: q[M], 2: q[M]})
    for M in (4, 5):  # two states per end: the inner one leaves with q, the outer one never
        assert es.hmm_leaving(get_hmm(f"linear{M}")) == pytest.approx({0: q[M] / 2, 2: q[M] / 2})
    assert es.hmm_leaving(get_hmm("fully3")) == pytest.approx({0: 0.05, 1: 0.05, 2: 0.05})
    assert es.hmm_leaving(get_hmm("cyclic4")) == pytest.approx({0: 0.05, 1: 0.05, 2: 0.05})


def test_agreement_rule():
    hz = es.Hazard(0.03, 0.028, 0.032, 100, 3000)
    assert es.agrees(0.028 / 1.5, hz) and es.agrees(0.032 * 1.5, hz)
    assert not es.agrees(0.028 / 1.5 * 0.99, hz) and not es.agrees(float("nan"), hz)


def test_causal_verdicts():
    def hz(v, half=0.001):
        return es.Hazard(v, v - half, v + half, 100, 5000)

    base = dict(source=0, target=2, units=np.array([1]), direction=np.ones(3), control=np.ones(3), gains=np.array([0.5, 2.0]),
                predicted_nominal=0.02, measured_nominal=hz(0.03))
    test = es.CausalTest(**base, predicted=np.array([[0.012, 0.028], [0.02, 0.02]]),
                         measured=[[hz(0.015), hz(0.045)], [hz(0.0301), hz(0.0299)]])
    v = es.causal_verdicts(test)
    assert v.direction_causal and v.control_null and v.predicted_response
    assert np.allclose(v.measured_ratio[0], [0.5, 1.5]) and np.allclose(v.predicted_ratio[0], [0.6, 1.4])
    wrong_side = test._replace(predicted=np.array([[0.025, 0.015], [0.02, 0.02]]))
    assert not es.causal_verdicts(wrong_side).predicted_response
    no_move = test._replace(measured=[[hz(0.0295), hz(0.045)], [hz(0.0301), hz(0.0299)]])
    assert not es.causal_verdicts(no_move).direction_causal
    loud_control = test._replace(measured=[[hz(0.015), hz(0.045)], [hz(0.02), hz(0.0299)]])
    assert not es.causal_verdicts(loud_control).control_null
