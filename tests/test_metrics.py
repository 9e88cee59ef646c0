"""Tests of hmmrnn.metrics: emission statistics, the matched distance, the fit bar, evaluate and the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from hmmrnn import paper
from hmmrnn.checkpoints import Checkpoint, save
from hmmrnn.hmm import get_hmm, lability, one_hot, output_marginals, output_transition_matrix, sample
from hmmrnn.metrics import (
    CHECK_DESCRIPTIONS,
    FitReport,
    changes_per_sequence,
    empirical_lability,
    empirical_marginals,
    empirical_transition_matrix,
    entropic_plan_potentials,
    euclidean_cost_onehot,
    evaluate,
    fit_checks,
    fit_report,
    fit_table,
    format_fit_table,
    heldout_sinkhorn,
    matched_euclidean_distance,
    matched_euclidean_distances,
    output_transition_counts,
    sample_rnn_outputs,
    transition_matrix_error,
    transition_table,
)
from hmmrnn.model import NoiseRNN, RNNWeights
from hmmrnn.tables import Table

REPO = Path(__file__).resolve().parents[1]

# two hand-made sequences: pairs (0,0) (0,1) (1,2) | (2,2) (2,2) (2,0)
HAND = np.array([[0, 0, 1, 2], [2, 2, 2, 0]])


# --------------------------------------------------------------------------- exact values

def test_counts_and_matrix_on_hand_made_sequences():
    counts = output_transition_counts(HAND, 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 0, 1], [1, 0, 2]])
    assert counts.sum() == HAND.shape[0] * (HAND.shape[1] - 1)  # pairs never straddle sequences
    matrix = empirical_transition_matrix(HAND, 3)
    np.testing.assert_allclose(matrix, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1 / 3, 0.0, 2 / 3]])
    np.testing.assert_allclose(empirical_marginals(HAND, 3), [3 / 8, 1 / 8, 4 / 8])
    assert empirical_lability(HAND) == pytest.approx(3 / 6)
    assert changes_per_sequence(HAND) == pytest.approx(1.5)  # 2 and 1 changes


def test_accepts_torch_tensors():
    t = torch.as_tensor(HAND)
    np.testing.assert_array_equal(output_transition_counts(t, 3), output_transition_counts(HAND, 3))
    assert changes_per_sequence(t) == pytest.approx(1.5)


def test_nan_row_for_output_never_before_last_step():
    outputs = np.array([[0, 0, 1]])  # 1 only at the last step, 2 never
    matrix = empirical_transition_matrix(outputs, 3)
    np.testing.assert_allclose(matrix[0], [0.5, 0.5, 0.0])
    assert np.all(np.isnan(matrix[1])) and np.all(np.isnan(matrix[2]))


def test_degenerate_lengths_and_bad_input():
    single = np.array([[0], [1]])
    np.testing.assert_array_equal(output_transition_counts(single, 3), np.zeros((3, 3)))
    assert math.isnan(empirical_lability(single))
    assert changes_per_sequence(single) == 0.0
    with pytest.raises(ValueError, match="lie in"):
        output_transition_counts(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="2-D"):
        empirical_marginals(np.array([0, 1]), 3)


def test_changes_per_sequence_is_length_minus_one_times_lability():
    rng = np.random.default_rng(1)
    outputs = rng.integers(0, 3, size=(50, 17))
    assert changes_per_sequence(outputs) == pytest.approx(16 * empirical_lability(outputs))


def test_transition_matrix_error_exact():
    empirical = np.array([[0.9, 0.1], [np.nan, np.nan]])
    exact = np.array([[0.6, 0.4], [0.5, 0.5]])
    error = transition_matrix_error(empirical, exact)
    np.testing.assert_allclose(error[0], [0.09, 0.09])
    assert np.all(np.isnan(error[1]))
    with pytest.raises(ValueError):
        transition_matrix_error(np.zeros((2, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("name", ["linear2", "fully3", "cyclic4"])
def test_long_hmm_samples_approach_exact_statistics(name):
    hmm = get_hmm(name)
    _, outputs = sample(hmm, 2000, 100, np.random.default_rng(0))
    np.testing.assert_allclose(empirical_marginals(outputs, 3), output_marginals(hmm), atol=0.02)
    assert empirical_lability(outputs) == pytest.approx(lability(hmm), abs=0.005)
    exact = output_transition_matrix(hmm)
    empirical = empirical_transition_matrix(outputs, 3)
    frequent = output_marginals(hmm) >= 0.05
    np.testing.assert_allclose(empirical[frequent], exact[frequent], atol=0.01)
    np.testing.assert_allclose(empirical, exact, atol=0.04)  # the rare row rests on ~2000 outputs


# --------------------------------------------------------------------------- matched distance

def _numpy_entropic_plan(cost: np.ndarray, eps: float, iterations: int = 20000) -> np.ndarray:
    """Plain (not log-domain) Sinkhorn in float64: an independent reference for moderate eps."""
    n, m = cost.shape
    kernel = np.exp(-cost / eps)
    u, v = np.ones(n), np.ones(m)
    for _ in range(iterations):
        u = (1.0 / n) / (kernel @ v)
        v = (1.0 / m) / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


def test_cost_is_euclidean_distance_of_one_hot_sequences():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 3, (7, 9)), rng.integers(0, 3, (5, 9))
    reference = cdist(one_hot(a, 3).reshape(7, -1), one_hot(b, 3).reshape(5, -1))
    np.testing.assert_allclose(euclidean_cost_onehot(a, b, 3, dtype=torch.float64).numpy(), reference, atol=1e-12)
    with pytest.raises(ValueError, match="same length"):
        euclidean_cost_onehot(a, b[:, :4], 3)


def test_matched_distance_against_numpy_sinkhorn():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3, (30, 8)), rng.integers(0, 3, (24, 8))
    eps = 1.0
    cost = cdist(one_hot(a, 3).reshape(30, -1), one_hot(b, 3).reshape(24, -1))
    plan = _numpy_entropic_plan(cost, eps)
    expected_plan = float((plan * cost).sum() / plan.sum())
    expected_argmax = float(cost[np.arange(30), plan.argmax(axis=1)].mean())
    result = matched_euclidean_distances(a, b, 3, eps=eps, tol=1e-10, dtype=torch.float64)
    assert result.plan == pytest.approx(expected_plan, rel=1e-7)
    assert result.argmax == pytest.approx(expected_argmax, rel=1e-12)
    assert result.violation < 1e-9
    assert matched_euclidean_distance(a, b, 3, eps=eps, tol=1e-10, dtype=torch.float64) == pytest.approx(result.plan)
    # float32 (the default) agrees to float rounding
    assert matched_euclidean_distance(a, b, 3, eps=eps, tol=1e-6) == pytest.approx(expected_plan, rel=1e-4)


def test_small_eps_approaches_the_optimal_assignment():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 3, (40, 10)), rng.integers(0, 3, (40, 10))
    cost = cdist(one_hot(a, 3).reshape(40, -1), one_hot(b, 3).reshape(40, -1))
    rows, cols = linear_sum_assignment(cost)
    optimum = float(cost[rows, cols].mean())
    value = matched_euclidean_distance(a, b, 3, eps=0.01, tol=1e-6, max_iter=20000, dtype=torch.float64)
    assert optimum <= value + 1e-9  # the entropic plan cannot beat the optimal transport cost
    assert value == pytest.approx(optimum, abs=0.02)
    # at the paper's eps 0.1 the entropic value is still close (it blurs between near-ties)
    assert matched_euclidean_distance(a, b, 3, eps=0.1) == pytest.approx(optimum, abs=0.15)


def test_identical_clouds_give_a_small_distance():
    _, outputs = sample(get_hmm("linear3"), 300, 30, np.random.default_rng(5))
    assert matched_euclidean_distance(outputs, outputs, 3) < 0.05
    assert matched_euclidean_distance(outputs, outputs, 3, matching="argmax") < 0.05
    with pytest.raises(ValueError, match="matching"):
        matched_euclidean_distance(outputs, outputs, 3, matching="nearest")


def test_entropic_solver_meets_its_marginals():
    rng = np.random.default_rng(6)
    cost = torch.from_numpy(rng.random((50, 70)) * 5)
    sol = entropic_plan_potentials(cost, 0.1, tol=1e-6, max_iter=5000)
    plan = torch.exp((sol.f[:, None] + sol.g[None, :] - cost) / 0.1) / (50 * 70)
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(70, 1 / 70), rtol=1e-8)
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(50, 1 / 50), atol=1e-6)
    # over-relaxation changes the path, not the solution (the potentials are unique up to f + c, g - c)
    plain = entropic_plan_potentials(cost, 0.1, tol=1e-6, max_iter=5000, omega=1.0)
    plain_plan = torch.exp((plain.f[:, None] + plain.g[None, :] - cost) / 0.1) / (50 * 70)
    np.testing.assert_allclose(plan.numpy(), plain_plan.numpy(), atol=1e-7)


def test_hmm_sample_is_closer_to_its_hmm_than_a_flickering_sample():
    hmm = get_hmm("linear2")
    rng = np.random.default_rng(7)
    ref, other = sample(hmm, 400, 50, rng)[1], sample(hmm, 400, 50, rng)[1]
    flicker = rng.choice(3, size=(400, 50), p=output_marginals(hmm))
    baseline = matched_euclidean_distance(other, ref, 3)
    assert baseline < matched_euclidean_distance(flicker, ref, 3) - 1.0


# --------------------------------------------------------------------------- the fit bar

def test_fit_checks_logic():
    exact = np.array([0.495, 0.01, 0.495])
    zero = np.zeros((3, 3))
    assert fit_checks(zero, exact, exact) == {"transition_error": True, "frequent_marginals": True}
    at_bar = zero.copy()
    at_bar[1, 2] = paper.TRANSITION_ERROR_MAX
    assert fit_checks(at_bar, exact, exact)["transition_error"]
    over = zero.copy()
    over[1, 2] = 0.0201
    assert not fit_checks(over, exact, exact)["transition_error"]
    undefined = zero.copy()
    undefined[1] = np.nan
    assert not fit_checks(undefined, exact, exact)["transition_error"]
    assert fit_checks(zero, exact + [0.029, 0.0, -0.029], exact)["frequent_marginals"]
    assert not fit_checks(zero, exact + [0.031, 0.0, -0.031], exact)["frequent_marginals"]
    # the rare output is not a frequent one: its marginal is not part of the bar
    assert fit_checks(zero, np.array([0.475, 0.05, 0.475]), exact)["frequent_marginals"]
    assert set(CHECK_DESCRIPTIONS) == {"transition_error", "frequent_marginals"}


def test_fit_report_passes_for_hmm_samples_and_fails_for_constant_output():
    hmm = get_hmm("linear2")
    rng = np.random.default_rng(8)
    a, b = sample(hmm, 3000, 40, rng)[1], sample(hmm, 3000, 40, rng)[1]
    good = fit_report(hmm, a, b)
    assert good.passes and good.rare_output == 1 and good.frequent_outputs == (0, 2)
    assert good.max_transition_error < 0.005
    assert math.isnan(good.matched_distance)  # no baseline sample given: not computed
    constant = fit_report(hmm, np.zeros((3000, 40), dtype=np.int64), b)
    assert not constant.passes
    assert constant.checks == {"transition_error": False, "frequent_marginals": False}
    assert math.isnan(constant.max_transition_error)  # rows 1 and 2 are undefined
    empty = FitReport(**{**good.__dict__, "checks": {}})
    assert not empty.passes


def test_report_to_dict_is_strict_json():
    hmm = get_hmm("linear2")
    rng = np.random.default_rng(9)
    a, b, c = (sample(hmm, 200, 20, rng)[1] for _ in range(3))
    report = fit_report(hmm, np.zeros_like(a), b, c)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["passes"] is False and d["checks"]["transition_error"] is False
    assert d["rnn"]["transition"][1] == [None, None, None]
    assert d["matched_distance"] > d["matched_distance_baseline"] > 0
    assert "matched_distance_baseline" not in d["paper"]  # only comparable at n = 5000, L = 100
    assert d["paper"]["lability"] == paper.LABILITY["linear2"]
    table = format_fit_table(report)
    assert "FAIL  transition_error" in table and "overall: FAIL" in table and "nan" in table


def test_fit_tables_hold_the_strings_of_the_text_table():
    """fit_table and transition_table: the cells of format_fit_table, as Tables for a page."""
    hmm = get_hmm("linear2")
    rng = np.random.default_rng(9)
    a, b, c = (sample(hmm, 200, 20, rng)[1] for _ in range(3))
    report = fit_report(hmm, np.zeros_like(a), b, c)
    text = format_fit_table(report).splitlines()
    table = fit_table(report)
    assert isinstance(table, Table) and table.title == text[0]
    assert list(table.columns) == ["quantity", "RNN", "HMM exact", "HMM sampled", "paper"]
    body = text[3:3 + len(table.rows)]
    assert [r[0] for r in table.rows] == [line[:28].rstrip() for line in body]
    columns = [(28, 38), (38, 49), (49, 62), (62, 72)]  # the text table's fixed widths
    assert [list(r[1:]) for r in table.rows] == [[line[i:j].strip() for i, j in columns] for line in body]
    assert table.rows[4] == ("lability (P change/step)", "0.0000", "0.0688", f"{report.hmm_sampled.lability:.4f}", "0.0688")
    assert "eps 0.1" in table.notes[0]
    matrices = transition_table(report)
    assert matrices.columns[:2] == ("from", "RNN -> 0") and matrices.columns[-1] == "sq. error -> 2"
    assert len(matrices.columns) == 1 + 3 * 3 and [r[0] for r in matrices.rows] == ["from 0", "from 1", "from 2"]
    assert matrices.rows[1][1:4] == ("nan", "nan", "nan")  # the RNN never emits output 1
    assert matrices.rows[0][1:4] == ("1.0000", "0.0000", "0.0000") and matrices.rows[0][4] == "0.9405"
    assert matrices.rows[0][9] == f"{report.transition_error[0, 2]:.6f}"
    assert list(matrices.notes) == text[-3:] and matrices.notes[-1] == "overall: FAIL"
    assert "<table" in matrices._repr_html_()


# --------------------------------------------------------------------------- evaluate and the CLI

def _latch_weights(a: float = 0.99, beta: float = 7.5) -> RNNWeights:
    """A hand-built 2-unit ReLU network that emulates linear2 well enough to pass the bar.

    p = relu(z), q = relu(-z) carry z_t = a z_{t-1} + x_t exactly (an AR(1) process driven by
    1-D noise); the readout ``beta z, 0, -beta z`` emits 0 or 2 by the sign of z (switching
    about 5 % of steps for a = 0.99) and the rare output 1 only near z = 0.
    """
    return RNNWeights(
        W_in=np.array([[1.0], [-1.0]], dtype=np.float32),
        W_rec=np.array([[a, -a], [-a, a]], dtype=np.float32),
        W_out=np.array([[beta, -beta], [0.0, 0.0], [-beta, beta]], dtype=np.float32),
    )


def _random_checkpoint() -> Checkpoint:
    model = NoiseRNN(input_size=4, hidden_size=8, generator=torch.Generator().manual_seed(0))
    return Checkpoint(model.weights(), get_hmm("linear2"), {"input_size": 4, "hidden_size": 8, "h0": "zeros"})


def test_evaluate_random_network(tmp_path):
    folder = save(_random_checkpoint(), tmp_path / "random")
    report = evaluate(folder, n=300, length=30, seed=1)
    assert (report.n, report.length, report.seed, report.name) == (300, 30, 1, "linear2")
    assert not report.passes  # random weights flicker
    assert report.matched_distance > report.matched_distance_baseline
    again = evaluate(folder, n=300, length=30, seed=1).to_dict()
    first = report.to_dict()
    first.pop("seconds"), again.pop("seconds")
    assert first == again  # seeded
    assert evaluate(folder, n=20, matched=False).length == 100  # the default length


def test_evaluate_hand_built_latch_passes():
    checkpoint = Checkpoint(_latch_weights(), get_hmm("linear2"), {"input_size": 1, "hidden_size": 2, "h0": "zeros"})
    report = evaluate(checkpoint, n=2000, seed=0, matched=False)
    assert report.passes, format_fit_table(report)


def test_sample_rnn_outputs_is_seeded_and_chunked():
    model = _random_checkpoint().model()
    first = sample_rnn_outputs(model, 50, 12, torch.Generator().manual_seed(3), chunk=16)
    second = sample_rnn_outputs(model, 50, 12, torch.Generator().manual_seed(3), chunk=16)
    assert first.shape == (50, 12) and first.dtype == np.int64
    np.testing.assert_array_equal(first, second)


def test_heldout_sinkhorn_batches_and_is_seeded():
    model = _random_checkpoint().model()
    hmm = get_hmm("linear2")
    _, outputs = sample(hmm, 150, 10, np.random.default_rng(0))
    whole = heldout_sinkhorn(model, outputs, torch.Generator().manual_seed(0))
    assert whole == heldout_sinkhorn(model, outputs, torch.Generator().manual_seed(0))
    batched = heldout_sinkhorn(model, outputs, torch.Generator().manual_seed(0), batch=64)
    assert whole > 0 and batched > 0
    assert batched == pytest.approx(whole, rel=0.5)  # smaller clouds, similar value
    latch = NoiseRNN.from_weights(_latch_weights(), h0="zeros")
    assert heldout_sinkhorn(latch, outputs, torch.Generator().manual_seed(0)) < whole


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HMMRNN_NO_TCMALLOC": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hmmrnn", "evaluate", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


@pytest.mark.parametrize("kind", ["random", "latch"])
def test_cli_evaluate_json_and_exit_code(tmp_path, kind):
    if kind == "random":
        checkpoint = _random_checkpoint()
    else:
        checkpoint = Checkpoint(_latch_weights(), get_hmm("linear2"), {"input_size": 1, "hidden_size": 2, "h0": "zeros"})
    folder = save(checkpoint, tmp_path / kind)
    result = _run_cli(str(folder), "--json", "--n", "2000", "--length", "100")
    report = json.loads(result.stdout)
    assert report["n"] == 2000 and report["length"] == 100
    assert result.returncode == (0 if report["passes"] else 1), result.stderr
    assert report["passes"] is (kind == "latch")
    text = _run_cli(str(folder), "--n", "300", "--length", "20")
    assert "Emission fit: linear2" in text.stdout and "overall:" in text.stdout


def test_cli_evaluate_missing_checkpoint(tmp_path):
    result = _run_cli(str(tmp_path / "nothing"))
    assert result.returncode == 2 and "error" in result.stderr


def test_secondary_drop_epoch_finds_the_midpoint_crossing():
    from hmmrnn.metrics import secondary_drop_epoch

    epochs = np.arange(1, 201)
    # fast initial fall to a plateau of 36, a drop between epochs 60 and 80 to 10
    loss = np.where(epochs < 6, 55.0 - 4 * epochs, 36.0)
    loss = np.where(epochs >= 60, 36.0 - 26.0 * np.clip((epochs - 60) / 20, 0, 1), loss)
    # the midpoint 23 is crossed at epoch 70 (36 - 26 * 10/20 = 23 -> strictly below after 70)
    assert secondary_drop_epoch(epochs, loss) == 71
    assert secondary_drop_epoch(epochs, np.full(200, 10.0)) is None


# --------------------------------------------------------------------------- the worst entry and its evidence

def _binomial_two_sided(k: int, n: int, p: float) -> float:
    """Independent two-sided exact binomial p-value: the total probability of outcomes no more
    likely than k (the 'minlike' convention), by direct summation."""
    pmf = [math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7)))


def test_worst_transition_entry_of_a_rarely_visited_row():
    from hmmrnn.metrics import worst_transition_entry

    exact = output_transition_matrix(get_hmm("linear3"))
    # the grid's linear3-h50-d100-s2: 5 visits of the rare output, 4 followed by output 0
    counts = np.rint(exact * 1e5).astype(np.int64)
    counts[1] = [4, 0, 1]
    e = worst_transition_entry(counts, exact)
    assert (e.origin, e.destination, e.visits, e.count) == (1, 0, 5, 4)
    assert e.empirical == 0.8 and e.squared_error == pytest.approx((0.8 - 0.495) ** 2, abs=1e-12)
    assert e.p_value == pytest.approx(_binomial_two_sided(4, 5, exact[1, 0]), rel=1e-9)
    assert 0.2 < e.p_value < 0.25  # an exact sampler prints this from 5 visits about one time in five
    # the same error from 5,000 visits is no accident
    counts[1] = [4000, 0, 1000]
    assert worst_transition_entry(counts, exact).p_value < 1e-100
    with pytest.raises(ValueError, match=r"output\(s\) \[1\] never visited"):
        counts[1] = 0
        worst_transition_entry(counts, exact)
    with pytest.raises(ValueError, match="equal"):
        worst_transition_entry(np.ones((3, 2)), exact)


def test_rollout_transition_counts_are_those_evaluate_judges():
    from hmmrnn.metrics import evaluate, rollout_transition_counts, worst_transition_entry

    checkpoint = _random_checkpoint()
    counts = rollout_transition_counts(checkpoint, 200, 20, seed=3)
    assert counts.sum() == 200 * 19
    report = evaluate(checkpoint, n=200, length=20, seed=3, matched=False)
    assert (counts.sum(axis=1) > 0).all()  # this random network emits every output
    np.testing.assert_array_equal(counts / counts.sum(axis=1, keepdims=True), report.rnn.transition)
    assert worst_transition_entry(counts, output_transition_matrix(checkpoint.hmm)).squared_error == report.max_transition_error
