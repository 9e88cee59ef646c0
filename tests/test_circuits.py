"""Tests of hmmrnn.circuits: interventions as copies, the batched simulation against slow
references, switch counting on hand-made sequences, the kick criterion on a hand-built network
whose kick neurons are known by construction, the connectivity statistics on planted
structure, and the ``kick-neurons`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hmmrnn import circuits as C
from hmmrnn import regions
from hmmrnn.model import NoiseRNN, RNNWeights


def random_weights(seed: int = 0, H: int = 12, D: int = 5, K: int = 3) -> RNNWeights:
    rng = np.random.default_rng(seed)
    return RNNWeights(
        rng.normal(0, 0.5, (H, D)).astype(np.float32),
        rng.normal(0, 0.35, (H, H)).astype(np.float32),
        rng.normal(0, 1.0, (K, H)).astype(np.float32),
    )


def gated_chain(a: float = 0.95, sigma: float = 1.0) -> RNNWeights:
    """A hand-built network whose kick neurons are known by construction (H = 10, D = 1).

    Units: 0 = u = relu(s), 1 = v = relu(-s) carry an AR(1) variable s_t = a s_{t-1} + sigma x_t
    (u - v = s exactly); 2, 3, 4 = group G2, copies of relu(s); 5, 6, 7 = group G0, copies of
    relu(-s); 8 = R2 = mean(G2) and 9 = R0 = mean(G0) one step later; logits (R0, -(R0 + R2), R2).
    The readout lags s by one step, so G2 (and u) switch on one step *before* the output turns
    from 0 to 2: they are the kick neurons of 0 -> 2. Silencing G2 keeps R2 = 0: output 2 never
    wins (ties go to output 0). Silencing two of the three copies leaves the third to do the job.
    """
    H = 10
    W_in = np.zeros((H, 1), np.float32)
    W_rec = np.zeros((H, H), np.float32)
    W_out = np.zeros((3, H), np.float32)
    diff = np.zeros(H, np.float32)
    diff[0], diff[1] = a, -a
    for i in (0, 2, 3, 4):
        W_in[i], W_rec[i] = sigma, diff
    for i in (1, 5, 6, 7):
        W_in[i], W_rec[i] = -sigma, -diff
    W_rec[8, [2, 3, 4]] = 1 / 3
    W_rec[9, [5, 6, 7]] = 1 / 3
    W_out[0, 9] = 1.0
    W_out[1, [8, 9]] = -1.0
    W_out[2, 8] = 1.0
    return RNNWeights(W_in, W_rec, W_out)


# --------------------------------------------------------------------------- interventions


def test_interventions_are_copies_and_leave_the_original_untouched():
    w = random_weights()
    before = [a.copy() for a in w]
    silenced = C.modulate_activity(w, [1, 4], 0.0)
    halved = C.modulate_input(w, [2], 0.5)
    for a, b in zip(w, before):
        assert np.array_equal(a, b)
    for copy in (silenced, halved):
        assert all(x is not y and not np.shares_memory(x, y) for x, y in zip(copy, w))
    # exact row scalings, nothing else touched
    assert np.array_equal(silenced.W_rec[[1, 4]], np.zeros((2, 12))) and np.array_equal(silenced.W_in[[1, 4]], np.zeros((2, 5)))
    keep = np.setdiff1d(np.arange(12), [1, 4])
    assert np.array_equal(silenced.W_rec[keep], w.W_rec[keep]) and np.array_equal(silenced.W_out, w.W_out)
    assert np.array_equal(halved.W_in[2], w.W_in[2] * np.float32(0.5)) and np.array_equal(halved.W_rec, w.W_rec)
    # a loaded torch model is not modified either
    model = NoiseRNN.from_weights(w)
    C.modulate_activity(model, [0], 2.0)
    assert np.array_equal(model.weights().W_rec, w.W_rec)


def test_activity_modulation_multiplies_the_activity():
    # relu(mu z) = mu relu(z): the modified copy is the network whose unit activities are scaled by mu
    w = random_weights(1)
    rng = np.random.default_rng(3)
    x, h0 = rng.normal(size=(3, 20, 5)), rng.random((3, 12))
    mu, units = 1.7, [0, 5, 6]
    hidden, _ = C.simulate_reference(C.modulate_activity(w, units, mu), x, h0)
    gain = np.ones(12)
    gain[units] = mu
    Wi, Wr = w.W_in.astype(np.float64), w.W_rec.astype(np.float64)
    h = h0.copy()
    for t in range(20):
        h = gain * np.maximum(h @ Wr.T + x[:, t] @ Wi.T, 0.0)
        np.testing.assert_allclose(hidden[:, t], h, rtol=1e-6, atol=1e-6)  # the copy holds float32 weights


def test_bad_modulations_are_refused():
    with pytest.raises(ValueError, match="mu must be"):
        C.modulation(5, [1], -1.0)
    with pytest.raises(ValueError, match="kind must be"):
        C.modulation(5, [1], 0.0, "output")
    with pytest.raises(ValueError, match="indices in"):
        C.modulation(5, [7], 0.0)
    with pytest.raises(ValueError, match="repeated"):
        C.modulation(5, [1, 1], 0.0)
    with pytest.raises(ValueError, match="one condition"):
        C.apply_modulation(random_weights(), C.stack_modulations([C.modulation(12), C.modulation(12)]))


# --------------------------------------------------------------------------- batched simulation


@pytest.fixture(scope="module")
def batch():
    w = random_weights(2)
    g = torch.Generator().manual_seed(0)
    noise = C.shared_noise(w, 6, 40, g)
    noise = noise._replace(h0=torch.rand(6, 12, generator=g))
    mods = [C.modulation(12), C.modulation(12, [1, 2], 1.0), C.modulation(12, [3], 1.0, C.INPUT)]
    mods += [C.modulation(12, [1, 4, 5], mu, kind) for mu in (0.0, 0.5, 2.0, 0.75, 1.5) for kind in (C.ACTIVITY, C.INPUT)]
    runs = C.simulate_modulations(w, C.stack_modulations(mods), noise, directions=np.eye(12)[:2], keep_active=True,
                                  keep_hidden=True, chunk=4)
    return w, noise, mods, runs


def test_gain_one_is_bit_identical_to_the_nominal_network(batch):
    w, noise, _, runs = batch
    assert np.array_equal(runs.hidden[1], runs.hidden[0]) and np.array_equal(runs.hidden[2], runs.hidden[0])
    with torch.no_grad():
        plain = NoiseRNN.from_weights(w).hidden_states(noise.inputs, noise.h0).numpy()
    assert np.array_equal(runs.hidden[0], plain)


def test_batched_conditions_match_each_modified_copy(batch):
    w, noise, mods, runs = batch
    for c, mod in enumerate(mods):
        copy = C.apply_modulation(w, mod)
        with torch.no_grad():
            alone = NoiseRNN.from_weights(copy).hidden_states(noise.inputs, noise.h0).numpy()
        ref, ref_dom = C.simulate_reference(copy, noise.inputs.numpy(), noise.h0.numpy())
        mu = mod.activity.min() if mod.activity.min() < 1 else mod.activity.max()
        mu = mu if mu != 1 else (mod.input.min() if mod.input.min() < 1 else mod.input.max())
        if mu in (0.0, 0.5, 1.0, 2.0):  # exact scalings: the same float32 numbers as the copy alone
            assert np.array_equal(runs.hidden[c], alone), c
        np.testing.assert_allclose(runs.hidden[c], ref, rtol=1e-5, atol=1e-5)
        logits = ref @ w.W_out.T.astype(np.float64)
        top2 = np.sort(logits, axis=-1)
        clear = top2[..., -1] - top2[..., -2] > 1e-4
        assert np.array_equal(runs.dominant[c][clear], ref_dom[clear])
        np.testing.assert_allclose(runs.projection[c], runs.hidden[c][..., :2], rtol=1e-6, atol=1e-6)
        assert np.array_equal(runs.active[c], runs.hidden[c] > 0)
        np.testing.assert_allclose(runs.max_norm[c], np.linalg.norm(runs.hidden[c], axis=-1).max(), rtol=1e-5)


def test_shared_noise_is_seeded_and_starts_from_given_states():
    w = random_weights()
    pool = np.arange(50 * 12, dtype=np.float32).reshape(50, 12)
    a = C.shared_noise(w, 8, 10, torch.Generator().manual_seed(4), start_states=pool)
    b = C.shared_noise(w, 8, 10, torch.Generator().manual_seed(4), start_states=pool)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.h0, b.h0)
    rows = (a.h0[:, 0] / 12).long().numpy()
    assert np.unique(rows).size == 8 and np.array_equal(a.h0.numpy(), pool[rows])
    assert tuple(a.inputs.shape) == (8, 10, 5)
    with pytest.raises(ValueError, match="start_states"):
        C.shared_noise(w, 2, 3, torch.Generator(), start_states=np.zeros((4, 7)))


def test_runaway_flags_exploding_activity():
    # a self-exciting unit with gain 0.9; doubled it grows as 1.8^t
    w = RNNWeights(np.ones((1, 1), np.float32), np.full((1, 1), 0.9, np.float32), np.ones((2, 1), np.float32))
    noise = C.shared_noise(w, 4, 200, torch.Generator().manual_seed(0))
    runs = C.simulate_modulations(w, C.stack_modulations([C.modulation(1), C.modulation(1, [0], 2.0)]), noise)
    assert runs.runaway().tolist() == [False, True]


# --------------------------------------------------------------------------- switches


def test_carried_outputs_and_switch_stats_on_a_hand_made_sequence():
    dom = np.array([[[1, 0, 0, 1, 2, 2, 1, 0, 0, 2]]])  # (C=1, B=1, T=10); output 1 is not tracked
    carried = C.carried_outputs(dom, (0, 2))
    assert carried.tolist() == [[[-1, 0, 0, 0, 2, 2, 2, 0, 0, 2]]]
    st = C.switch_stats(dom, [(0, 2), (2, 0)], (0, 2), 3)
    assert st.events.tolist() == [[2, 1]]
    assert st.exposure.tolist() == [[5, 3]]  # steps t (of 0..8) in 0, then in 2
    np.testing.assert_allclose(st.hazard, [[2 / 5, 1 / 3]])
    assert st.switches.tolist() == [3]
    np.testing.assert_allclose(st.rate, [3 / 9])
    np.testing.assert_allclose(st.mean_dwell, [8 / 3])
    np.testing.assert_allclose(st.occupancy, [[0.4, 0.3, 0.3]])
    settled = C.switch_stats(dom, [(0, 2)], (0, 2), 3, settle=5)  # [2, 1, 0, 0, 2]
    assert settled.events.tolist() == [[1]] and settled.exposure.tolist() == [[2]]
    assert C.dwell_times(dom[0], (0, 2)).tolist() == [3, 2]  # in 2 from step 4 to 6, in 0 from 7 to 8
    carried1, nxt = C.transition_context(dom[0, 0], (0, 2))
    assert carried1.tolist() == carried[0, 0].tolist()
    assert nxt.tolist() == [2, 2, 2, 2, 0, 0, 0, 2, 2, -1]


def test_dwell_times_match_a_loop():
    rng = np.random.default_rng(5)
    dom = np.where(rng.random((7, 300)) < 0.1, 1, 0)
    dom = np.where(np.cumsum(rng.random((7, 300)) < 0.05, axis=1) % 2 == 1, 2, dom)
    expected = []
    for row in C.carried_outputs(dom, (0, 2)):
        starts = [t for t in range(1, row.size) if row[t] != row[t - 1] and row[t - 1] >= 0]
        expected += [b - a for a, b in zip(starts[:-1], starts[1:])]
    assert C.dwell_times(dom, (0, 2)).tolist() == expected


def test_pooled_reduction_compares_with_the_nominal_hazards():
    st = C.SwitchStats(np.array([[0, 2], [2, 0]]), events=np.array([[10, 20], [0, 0], [5, 20], [0, 0]]),
                       exposure=np.array([[100, 100], [100, 0], [100, 200], [0, 0]]),
                       hazard=np.array([[0.1, 0.2], [0.0, np.nan], [0.05, 0.1], [np.nan, np.nan]]),
                       switches=np.zeros(4), rate=np.zeros(4), mean_dwell=np.zeros(4), occupancy=np.zeros((4, 3)))
    red = C.pooled_reduction(st)
    np.testing.assert_allclose(red[:3], [0.0, 1.0, 1 - 25 / (10 + 40)])
    assert np.isnan(red[3])
    np.testing.assert_allclose(C.pooled_reduction(st, columns=[0])[:3], [0.0, 1.0, 0.5])


def test_bootstrap_reduction_resamples_whole_trajectories():
    # 2 conditions x 3 trajectories x 1 transition; the reference has hazard 0.1 in every trajectory
    ev = np.array([[[10], [10], [10]], [[0], [5], [10]]])
    ex = np.full((2, 3, 1), 100)
    st = C.SwitchStats(np.array([[0, 2]]), ev.sum(1), ex.sum(1), ev.sum(1) / ex.sum(1), np.zeros(2), np.zeros(2), np.zeros(2),
                       np.zeros((2, 3)), ev, ex)
    boot = C.bootstrap_reduction(st, torch.Generator().manual_seed(0), n_boot=4000)
    np.testing.assert_allclose(boot[:, 0], 0.0)
    # condition 1 keeps 0, 5 or 10 switches per trajectory: the resampled reduction is 1 - mean / 10
    np.testing.assert_allclose(boot[:, 1] * 6, np.round(boot[:, 1] * 6), atol=1e-9)  # 1 - (three of 0, 5, 10) / 30
    np.testing.assert_allclose(boot[:, 1].mean(), C.pooled_reduction(st)[1], atol=0.01)
    assert boot[:, 1].min() == 0.0 and boot[:, 1].max() == 1.0  # all three the same trajectory happens


# --------------------------------------------------------------------------- identification


def test_kick_signature_on_synthetic_preactivations():
    # 6 states: cluster of 0 (x3), transition 0 -> 2 (x2), kick-zone 0 -> 2 (x1)
    labels = np.array([regions.CLUSTER] * 3 + [regions.TRANSITION] * 2 + [regions.KICK_ZONE])
    carried = np.zeros(6, dtype=np.int64)
    nxt = np.full(6, 2)
    z = np.array([
        [-1.0, 1.0, -1.0, 0.5],
        [-2.0, 1.0, 1.0, 0.5],
        [-3.0, 1.0, -1.0, -0.5],
        [2.0, 1.0, -1.0, 0.5],
        [1.0, -1.0, -1.0, -0.5],
        [0.1, 1.0, 1.0, 0.5],
    ])
    sig = C.kick_signature(z, labels, carried, nxt, 0, 2)
    np.testing.assert_allclose(sig.score, [1.0, 0.5 - 1.0, 0.0 - 1 / 3, 0.5 - 2 / 3])
    np.testing.assert_allclose(sig.active_cluster, [0.0, 1.0, 1 / 3, 2 / 3])
    assert sig.ranking.tolist() == [0, 3, 2, 1]
    np.testing.assert_allclose(sig.active_kick_zone, [1.0, 1.0, 1.0, 1.0])
    assert (sig.n_cluster, sig.n_kick_zone, sig.n_transition) == (3, 1, 2)
    with pytest.raises(ValueError, match="no transition state"):
        C.kick_signature(z, labels, carried, nxt, 0, 1)


def test_preactivations_reproduce_the_states():
    w = random_weights(3)
    run = regions.recorded_run(NoiseRNN.from_weights(w), 30, torch.Generator().manual_seed(1), burn_in=5)
    z = C.preactivations(w, run.prev_hidden, run.inputs)
    np.testing.assert_allclose(np.maximum(z, 0), run.hidden, atol=1e-5)


@pytest.fixture(scope="module")
def gated_search():
    w = gated_chain()
    ks = C.find_kick_neurons(w, [(0, 2), (2, 0)], torch.Generator().manual_seed(0), n_states=1500, burn_in=50,
                             n_continuations=10, max_steps=30, n_traj=16, n_steps=300, settle=20, max_size=5)
    return w, ks


def test_find_kick_neurons_recovers_the_groups_built_into_the_network(gated_search):
    _, ks = gated_search
    assert ks.outputs == (0, 2)
    up, down = ks.signatures
    # u and the G2 copies share one pre-activation: identical top scores, ties by index
    assert up.ranking[:4].tolist() == [0, 2, 3, 4] and down.ranking[:4].tolist() == [1, 5, 6, 7]
    assert up.score[0] == up.score[2] == up.score[4] > 0.5 > up.score[[1, 5, 6, 7, 8, 9]].max()
    assert ks.search.size == 4 and ks.search.reached
    assert [g.tolist() for g in ks.groups] == [[0, 2, 3, 4], [1, 5, 6, 7]]
    # k = 3 kills the integrator (u and v) but leaves one copy per side: memoryless flicker, more switching
    assert ks.search.reduction[2] < 0 and ks.search.reduction[3] == 1.0 and ks.search.reduction_low[3] == 1.0
    assert ks.search.nominal_rate > 0 and ks.search.rate[3] == 0.0
    d = ks.to_dict()
    assert d["groups"] == [[0, 2, 3, 4], [1, 5, 6, 7]] and len(d["scores"]["0->2"]) == 10
    json.dumps(d)


def test_silencing_the_built_in_group_traps_the_network(gated_search):
    w, ks = gated_search
    noise = C.shared_noise(w, 8, 200, torch.Generator().manual_seed(2), start_states=ks.run.hidden)
    mods = C.stack_modulations([C.modulation(10), C.modulation(10, [2, 3, 4], 0.0), C.modulation(10, [2, 3], 0.0)])
    runs = C.simulate_modulations(w, mods, noise)
    st = C.switch_stats(runs.dominant, [(0, 2), (2, 0)], (0, 2), 3, settle=5)
    assert st.occupancy[1, 2] == 0.0 and st.events[1].sum() == 0  # output 2 never wins again
    assert st.events[2].sum() == st.events[0].sum()  # two of the three copies: no effect at all
    subsets, red = C.subset_search(w, [2, 3, 4], 3, [(0, 2)], noise, (0, 2), settle=5)
    assert subsets == [(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    np.testing.assert_allclose(red, [0, 0, 0, 0, 0, 0, 1], atol=1e-12)


def test_region_profiles_on_synthetic_preactivations():
    labels = np.array([regions.CLUSTER, regions.CLUSTER, regions.KICK_ZONE, regions.TRANSITION, regions.CLUSTER, regions.CLUSTER])
    carried = np.array([0, 0, 0, 0, 2, 0])
    nxt = np.array([2, 2, 2, 2, 0, 2])
    z = np.array([[-4.0, 1], [-2.0, 1], [0.5, 1], [3.0, 1], [5.0, 1], [-3.0, 1]])
    prof = C.region_profiles(z, labels, carried, nxt, 0, 2, [0], percentiles=(0, 100))
    assert prof.categories == C.PROFILE_CATEGORIES and prof.counts.tolist() == [3, 1, 1, 1]
    np.testing.assert_allclose(prof.mean, [[-3.0, 0.5, 3.0, 5.0]])
    np.testing.assert_allclose(prof.low, [[-4.0, 0.5, 3.0, 5.0]])
    np.testing.assert_allclose(prof.high, [[-2.0, 0.5, 3.0, 5.0]])


def test_single_neuron_effects_and_the_sweep_on_the_built_in_network(gated_search):
    w, ks = gated_search
    noise = C.shared_noise(w, 8, 200, torch.Generator().manual_seed(3), start_states=ks.run.hidden)
    single = C.single_neuron_effects(w, [(0, 2), (2, 0)], noise, (0, 2), settle=5)
    subsets, red = C.subset_search(w, range(10), 1, [(0, 2), (2, 0)], noise, (0, 2), settle=5)
    np.testing.assert_array_equal(single, red)  # the same conditions on the same noise
    np.testing.assert_allclose(single[[2, 3, 4, 5, 6, 7]], 0.0, atol=1e-12)  # one copy of three: no effect
    axis = C.cluster_axis(ks.run.hidden, ks.labels, ks.run.outputs, (0, 2))
    sweep = C.intervention_sweep(w, [([2, 3, 4], C.ACTIVITY), (range(8), C.INPUT)], [0.0, 1.0, 2.0], noise, [(0, 2), (2, 0)],
                                 (0, 2), axis, names=["G2", "noise input"], settle=5)
    assert sweep.names == ("G2", "noise input") and sweep.rate.shape == (2, 3)
    np.testing.assert_allclose(sweep.rate[:, 1], sweep.nominal_rate)  # mu = 1 is the nominal network
    np.testing.assert_allclose(sweep.peak[:, 1], sweep.nominal_peak)
    assert sweep.reduction[0, 0] == 1.0 and sweep.rate[0, 0] == 0.0  # G2 silenced: trapped in output 0
    assert sweep.reduction[1, 0] == 1.0  # no noise: s_t = a^t s_0 keeps its sign, no switch
    assert not sweep.runaway.any()  # a = 0.95 and relu(2 z) = 2 relu(z): nothing grows without bound
    # doubling G2 doubles R2 = relu(s) against R0 = relu(-s): the argmax, hence the switching, is unchanged
    np.testing.assert_allclose(sweep.rate[0, 2], sweep.nominal_rate)
    assert sweep.peak[0, 2] > sweep.nominal_peak  # but the states go twice as far along the axis


def test_group_size_search_validates_its_arguments():
    w = random_weights()
    noise = C.shared_noise(w, 2, 10, torch.Generator())
    with pytest.raises(ValueError, match="target"):
        C.group_size_search(w, [np.arange(12)], [(0, 2)], noise, (0, 2), torch.Generator(), target=1.5)
    with pytest.raises(ValueError, match="level"):
        C.group_size_search(w, [np.arange(12)], [(0, 2)], noise, (0, 2), torch.Generator(), level=1.0)
    with pytest.raises(ValueError, match="one ranking per transition"):
        C.group_size_search(w, [np.arange(12)], [(0, 2), (2, 0)], noise, (0, 2), torch.Generator())
    with pytest.raises(ValueError, match="not a pair"):
        C.find_kick_neurons(w, [(0, 0)], torch.Generator())


# --------------------------------------------------------------------------- random sets and connectivity


def test_random_sets_are_seeded_distinct_and_respect_exclusions():
    a = C.random_sets(20, 5, 300, torch.Generator().manual_seed(1), exclude=[0, 1, 2])
    b = C.random_sets(20, 5, 300, torch.Generator().manual_seed(1), exclude=[0, 1, 2])
    assert np.array_equal(a, b) and a.shape == (300, 5)
    assert all(np.unique(r).size == 5 for r in a) and not np.isin(a, [0, 1, 2]).any()
    counts = np.bincount(a.ravel(), minlength=20)[3:]
    assert counts.min() > 0.5 * counts.mean()  # every allowed neuron drawn about equally often
    with pytest.raises(ValueError, match="cannot draw"):
        C.random_sets(5, 6, 1, torch.Generator())


def test_connectivity_statistics_on_planted_structure():
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.05, (40, 40))
    A, B = [3, 7, 11], [20, 25, 30]
    for g in (A, B):
        W[np.ix_(g, g)] += 0.5
    W[np.ix_(A, B)] -= 0.5
    W[np.ix_(B, A)] -= 0.5
    M = C.group_weight_matrix(W, [A, B])
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(M, [[W[np.ix_(A, A)][off].mean(), W[np.ix_(A, B)].mean()],
                                   [W[np.ix_(B, A)].mean(), W[np.ix_(B, B)][off].mean()]])
    test = C.connectivity_test(W, [A, B], 2000, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(test.within, 0.5 * (M[0, 0] + M[1, 1]))
    np.testing.assert_allclose(test.between, 0.5 * (M[0, 1] + M[1, 0]))
    assert test.p_within == test.p_between == 1 / 2001
    assert abs(np.median(test.null_within)) < 0.05


def test_noise_population_picks_the_most_opposite_projections():
    rng = np.random.default_rng(1)
    H = 30
    W = rng.normal(0, 0.01, (H, H))
    A, B = [0, 1], [2, 3]
    drive_a, drive_b = [10, 11, 12], [20, 21, 22]  # excite A and inhibit B, and the reverse
    W[np.ix_(A, drive_a)], W[np.ix_(B, drive_a)] = 1.0, -1.0
    W[np.ix_(A, drive_b)], W[np.ix_(B, drive_b)] = -1.0, 1.0
    W[np.ix_(A, B)] = W[np.ix_(B, A)] = -5.0  # kick neurons themselves are excluded
    pop = C.noise_population(W, [A, B], 6)
    assert pop.neurons.tolist() == drive_a + drive_b
    assert pop.drives.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(pop.projection[0], W[A].mean(0))
    np.testing.assert_allclose(pop.product, W[A].mean(0) * W[B].mean(0))
    w = RNNWeights(rng.normal(size=(H, 4)).astype(np.float32), W.astype(np.float32), np.zeros((3, H), np.float32))
    test = C.noise_population_test(w, [A, B], pop, 500, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(test.statistic, -1.0, rtol=1e-3)
    assert test.p_value == 1 / 501 and test.null.shape == (500,)
    np.testing.assert_allclose(test.input_norm, np.linalg.norm(w.W_in[pop.neurons].astype(np.float64), axis=1).mean())


# --------------------------------------------------------------------------- overshoot and eigenvalues


def test_cluster_axis_and_switch_peaks():
    hidden = np.array([[0.0, 0.0], [0.2, 0.0], [4.0, 0.0], [3.8, 0.0], [2.0, 5.0]])
    labels = np.array([regions.CLUSTER] * 4 + [regions.TRANSITION])
    axis = C.cluster_axis(hidden, labels, np.array([0, 0, 2, 2, 0]), (0, 2))
    np.testing.assert_allclose(axis.position(np.array([[0.1, 0.0], [3.9, 7.0]])), [0.0, 1.0])
    np.testing.assert_allclose(axis.offset, axis.origin @ axis.direction)
    pos = np.array([[0.0, 0.1, 0.6, 1.4, 1.1, 0.9, 0.3, -0.5, 0.0, 0.1]])
    dom = np.array([[0, 0, 2, 2, 2, 2, 0, 0, 0, 0]])
    peaks = C.switch_peaks(pos, dom, axis, (0, 2), window=3)
    np.testing.assert_allclose(peaks, [1.4, 1.5])  # into 2: max(0.6, 1.4, 1.1); into 0: max(1 - (0.3, -0.5, 0))


def test_complex_pairs_near_switches_on_a_known_spectrum():
    # units 0, 1: a rotation by 45 degrees with |lambda| = 1 (a near-critical complex pair);
    # unit 2 alone: a real eigenvalue 0.5
    c = np.cos(np.pi / 4)
    W = np.array([[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 0.5]])
    T = 30
    active = np.zeros((1, T, 3), dtype=bool)
    active[0, :, 2] = True
    active[0, 12:18, :2] = True  # the pair is active only around the switch at t = 15
    dom = np.zeros((1, T), dtype=np.int64)
    dom[0, 15:] = 2
    res = C.complex_pairs_near_switches(W, active, dom, (0, 2), torch.Generator().manual_seed(0), window=4, n_anywhere=T)
    assert res.n_switches == 1 and res.offsets.tolist() == list(range(-4, 5))
    assert res.counts.tolist() == [[0, 1, 1, 1, 1, 1, 1, 0, 0]]
    assert res.per_switch.tolist() == [6] and res.anywhere.sum() == 6


# --------------------------------------------------------------------------- command line


def test_cli_kick_neurons_prints_the_groups_as_json():
    env = dict(os.environ, HMMRNN_NO_TCMALLOC="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "hmmrnn", "kick-neurons", "linear2", "--json", "--n-states", "1500",
                             "--n-traj", "8", "--n-steps", "400"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["transitions"] == [[0, 2], [2, 0]] and out["outputs"] == [0, 2]
    k = out["group_size"]
    assert len(out["groups"]) == 2 and all(len(g) == k for g in out["groups"])
    assert not set(out["groups"][0]) & set(out["groups"][1])
    for group, key in zip(out["groups"], ("0->2", "2->0")):
        assert sorted(out["ranking"][key][:k]) == group
        scores = np.array(out["scores"][key])
        assert scores.shape == (150,) and scores[group].min() >= np.sort(scores)[-k] - 1e-9
    assert out["reached"] == (out["reduction_low"] >= out["target"]) and "kick signature" in out["criterion"]
    assert out["reduction_low"] <= out["reduction"]


def test_cli_kick_neurons_rejects_a_bad_transition():
    from hmmrnn.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["kick-neurons", "linear2", "--transitions", "0-2"])
    assert info.value.code == 2
