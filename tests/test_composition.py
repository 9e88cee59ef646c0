"""Tests of hmmrnn.composition (per-pair sub-orbits) and hmmrnn.family (the six networks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmmrnn import composition as comp
from hmmrnn import dynamics as dyn
from hmmrnn import family
from hmmrnn.metrics import default_eval_length, evaluate
from hmmrnn.hmm import get_hmm


def _heading_loop(d: np.ndarray) -> np.ndarray:
    out = np.full(d.shape, -1)
    for b in range(d.shape[0]):
        for t in range(d.shape[1]):
            for s in range(t + 1, d.shape[1]):
                if d[b, s] != d[b, t]:
                    out[b, t] = d[b, s]
                    break
    return out


def test_heading_hand_example():
    d = np.array([[0, 0, 1, 1, 1, 0, 2, 2]])
    assert comp.heading(d).tolist() == [[1, 1, 0, 0, 0, 2, -1, -1]]


def test_heading_matches_loop_reference():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 3, size=(7, 40))
    d[:, 10:20] = 1  # long dwells too
    assert np.array_equal(comp.heading(d), _heading_loop(d))


def test_switch_counts_match_loop_and_pairs_partition_steps():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 3, size=(5, 60))
    counts = comp.switch_counts(d, 3)
    ref = np.zeros((3, 3), dtype=int)
    for row in d:
        for a, b in zip(row[:-1], row[1:]):
            if a != b:
                ref[a, b] += 1
    assert np.array_equal(counts, ref)
    pairs = [(0, 1), (0, 2), (1, 2)]
    index = comp.pair_index(d, pairs)
    head = comp.heading(d)
    # every step with a heading belongs to exactly the pair {d, heading}
    assert np.array_equal(index >= 0, head >= 0)
    for i, (a, b) in enumerate(pairs):
        sel = index == i
        assert np.all(np.minimum(d[sel], head[sel]) == a) and np.all(np.maximum(d[sel], head[sel]) == b)


def test_motif_pairs_finds_the_ring_pairs():
    # a cyclic-like sequence 0 1 2 1 0 1 2 ... never switches 0 <-> 2 directly
    base = np.repeat(np.array([0, 1, 2, 1] * 30), 5)[None]
    assert set(comp.motif_pairs(base, 3, min_switches=5)) == {(0, 1), (1, 2)}
    counts = comp.switch_counts(base, 3)
    assert counts[0, 2] == counts[2, 0] == 0
    assert comp.motif_pairs(base, 3, min_switches=10_000) == []


def test_two_stage_pca_recovers_a_line_per_pair():
    """Pair (0,1) moves along one direction, pair (1,2) along another: each sub-PC1 explains ~all."""
    rng = np.random.default_rng(2)
    h_dim, t = 20, 400
    u, v = np.zeros(h_dim), np.zeros(h_dim)
    u[0], v[1] = 1.0, 1.0
    d = np.repeat(np.array([0, 1, 2, 1] * (t // 40)), 10)[None]
    head = comp.heading(d)[0]
    pair01 = np.isin(np.minimum(d[0], head), [0]) & (head >= 0)
    pos = rng.normal(size=t)
    hidden = np.where(pair01[:, None], pos[:, None] * u, pos[:, None] * v)[None] + 1e-6 * rng.normal(size=(1, t, h_dim))
    ts = comp.two_stage_pca(hidden, d, [(0, 1), (1, 2)], n_global=4, n_sub=2)
    assert ts.coords.shape == (1, t, 4)
    for orbit in ts.pairs:
        assert orbit.sub_pca.explained[0] > 0.999
    # shares add up to one (all steps with a heading are in one of the two pairs)
    assert math.isclose(sum(o.share for o in ts.pairs), 1.0)


def test_two_stage_pca_errors_name_the_problem():
    d = np.zeros((1, 50), dtype=int)
    with pytest.raises(ValueError, match="pair"):
        comp.two_stage_pca(np.zeros((1, 50, 5)), d, [(0, 1)])
    with pytest.raises(ValueError, match="two different outputs"):
        comp.pair_index(d, [(1, 1)])
    with pytest.raises(ValueError, match="integer"):
        comp.heading(np.zeros((2, 3)))


def test_fractions_by_pair_and_overlap_exact():
    labels = np.array([0, 1, 1, 2, 2, 2, 0])
    pair = np.array([0, 0, 1, 1, 1, -1, 1])
    table = comp.fractions_by_pair(labels, pair, n_pairs=3, n_labels=3)
    assert np.allclose(table[0], [0.5, 0.5, 0.0])
    assert np.allclose(table[1], [0.25, 0.25, 0.5])
    assert np.all(np.isnan(table[2]))
    jac = comp.overlap([[1, 2, 3], [3, 4], []])
    assert np.allclose(jac, [[1, 0.25, 0], [0.25, 1, 0], [0, 0, 1]])


def test_default_eval_length_follows_the_paper():
    assert default_eval_length(get_hmm("linear3")) == 100
    assert default_eval_length(get_hmm("fully3")) == 30
    assert default_eval_length(get_hmm("cyclic4")) == 40


def test_family_fit_equals_evaluate_when_not_subsampled():
    ours = family.family_fit("linear2", n=150, length=20, n_matched=150, seed=3)
    ref = evaluate("linear2", n=150, length=20, seed=3)
    assert np.array_equal(ours.rnn.marginals, ref.rnn.marginals)
    assert np.array_equal(ours.transition_error, ref.transition_error)
    assert ours.matched_distance_argmax == pytest.approx(ref.matched_distance_argmax, rel=1e-6)
    assert ours.matched_distance_baseline == pytest.approx(ref.matched_distance_baseline, rel=1e-6)
    sub = family.family_fit("linear2", n=150, length=20, n_matched=0, seed=3)
    assert math.isnan(sub.matched_distance) and np.array_equal(sub.rnn.marginals, ref.rnn.marginals)
    with pytest.raises(ValueError, match="n_matched"):
        family.family_fit("linear2", n=10, length=5, n_matched=11)


def test_orbit_geometry_matches_the_global_dynamics_definitions():
    g1 = torch.Generator().manual_seed(5)
    geo = family.orbit_geometry("linear2", g1, n_traj=2, n_steps=300, burn_in=50)
    g2 = torch.Generator().manual_seed(5)
    ck = family.load("linear2")
    run = dyn.driven_run(ck.weights, 300, g2, n_traj=2, burn_in=50)
    pcs = dyn.pca(run.states.astype(np.float64), 3)
    assert np.allclose(geo.explained, pcs.explained)
    assert np.allclose(geo.alignment, dyn.readout_alignment(ck.weights.W_out, pcs.components[:2], (0, 2)))
    assert geo.outputs == (0, 2) and geo.n_states == 600
    summary = family.training_summary("linear2")
    assert summary["best_epoch"] == ck.results["best_epoch"] and summary["calibrated"]


def test_bounded_trajectories_and_norm_growth_flag_runaways():
    h = np.ones((3, 20, 4))
    h[1, 15:] = 1e6  # runs away late
    h[2, 5] = np.inf
    assert family.bounded_trajectories(h, factor=100, reference=10).tolist() == [True, False, False]
    # a contracting linear network stays bounded; an expanding one explodes
    from hmmrnn.model import RNNWeights
    rng = np.random.default_rng(0)
    w_in = rng.normal(size=(6, 3)).astype(np.float32)
    w_out = rng.normal(size=(3, 6)).astype(np.float32)
    calm = RNNWeights(w_in, 0.5 * np.eye(6, dtype=np.float32), w_out)
    wild = RNNWeights(w_in, 1.5 * np.eye(6, dtype=np.float32), w_out)
    g = torch.Generator().manual_seed(0)
    assert family.norm_growth(calm, g, n_traj=20, n_steps=100).exploded[-1] == 0
    assert family.norm_growth(wild, g, n_traj=20, n_steps=100).exploded[-1] == 1


def test_norm_growth_in_chunks_continues_the_state():
    from hmmrnn import dynamics as dyn
    from hmmrnn.model import RNNWeights
    rng = np.random.default_rng(1)
    w_in = rng.normal(size=(6, 3)).astype(np.float32)
    w_out = rng.normal(size=(3, 6)).astype(np.float32)
    wild = RNNWeights(w_in, 1.5 * np.eye(6, dtype=np.float32), w_out)
    # one chunk: exactly the norms of one driven run
    one = family.norm_growth(wild, torch.Generator().manual_seed(3), n_traj=8, n_steps=30, chunk=30)
    run = dyn.driven_run(wild, 30, torch.Generator().manual_seed(3), n_traj=8, burn_in=0)
    np.testing.assert_array_equal(one.median, np.median(np.linalg.norm(run.hidden.astype(np.float64), axis=-1), axis=0))
    # chunks of 10: the state carries over (an expanding network keeps growing by ~1.5 per step
    # across every chunk boundary; restarting from 0 would drop the norm by orders of magnitude)
    chunked = family.norm_growth(wild, torch.Generator().manual_seed(3), n_traj=8, n_steps=40, chunk=10)
    for boundary in (10, 20, 30):
        assert chunked.median[boundary] / chunked.median[boundary - 1] > 1.3
    with pytest.raises(ValueError, match="chunk"):
        family.norm_growth(wild, torch.Generator(), n_traj=2, n_steps=40, chunk=0)


def test_growth_from_norms_tells_bursts_from_runaways():
    norms = np.ones((4, 10))
    norms[1, 4:] = 1e4  # runs away and stays
    norms[2, 3:5] = 1e5  # a burst that comes back
    norms[3, 6] = np.nan  # not finite counts as above
    gr = family.growth_from_norms(norms, reference=3)
    assert gr.bound == 100.0
    assert gr.time_above == (6 + 2 + 1) / 40
    assert gr.returned == 2 / 3  # trajectories 2 and 3 come back, 1 does not
    np.testing.assert_allclose(gr.exploded, [0, 0, 0, 0.25, 0.5, 0.25, 0.5, 0.25, 0.25, 0.25])
    assert np.isnan(family.growth_from_norms(np.ones((2, 5)), reference=2).returned)
    with pytest.raises(ValueError, match="reference"):
        family.growth_from_norms(np.ones((2, 5)), reference=6)


def test_burst_steps_is_the_bound_of_growth_from_norms():
    norms = np.ones((3, 8))
    norms[0, 5:] = 1e3
    norms[2, 2] = np.inf
    mask = family.burst_steps(norms, reference=3)
    gr = family.growth_from_norms(norms, reference=3)
    np.testing.assert_array_equal(mask.mean(axis=0), gr.exploded)
    assert mask.sum() == 4 and mask[2, 2]
