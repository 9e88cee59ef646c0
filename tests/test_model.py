"""Tests of hmmrnn.model: torch model vs NumPy reference, sampling, straight-through gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmmrnn.model import (
    H0_MODES,
    NoiseRNN,
    RNNWeights,
    hard_gumbel_softmax,
    numpy_rollout_hidden,
    numpy_step,
    sample_gumbel,
)


def make_model(h=12, d=5, k=3, seed=0, h0="zeros"):
    return NoiseRNN(d, h, k, h0=h0, generator=torch.Generator().manual_seed(seed))


def random_weights(rng, h=10, d=4, k=3, scale=0.4):
    return RNNWeights(
        (rng.standard_normal((h, d)) * scale).astype(np.float32),
        (rng.standard_normal((h, h)) * scale).astype(np.float32),
        (rng.standard_normal((k, h)) * scale).astype(np.float32),
    )


# --------------------------------------------------------------------------- construction


def test_shapes_and_properties():
    model = make_model(h=12, d=5, k=3)
    assert tuple(model.W_in.shape) == (12, 5)
    assert tuple(model.W_rec.shape) == (12, 12)
    assert tuple(model.W_out.shape) == (3, 12)
    assert (model.input_size, model.hidden_size, model.output_size) == (5, 12, 3)
    # no biases anywhere: the three matrices are the only parameters
    assert sorted(n for n, _ in model.named_parameters()) == ["W_in", "W_out", "W_rec"]


def test_initialisation_bound_and_spread():
    h = 64
    model = make_model(h=h, d=20, k=3, seed=1)
    bound = 1 / math.sqrt(h)
    for p in model.parameters():
        values = p.detach().numpy().ravel()
        assert np.all(np.abs(values) < bound)
        # uniform on (-b, b): covers the interval, mean ~0, variance b^2/3
        assert values.max() > 0.8 * bound and values.min() < -0.8 * bound
    w = model.W_rec.detach().numpy().ravel()  # 4096 draws
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * w.size)
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.1)


def test_initialisation_is_seeded():
    a, b, c = make_model(seed=3), make_model(seed=3), make_model(seed=4)
    for x, y, z in zip(a.weights(), b.weights(), c.weights()):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_size": 0}, "input_size"),
        ({"hidden_size": -2}, "hidden_size"),
        ({"output_size": 1.5}, "output_size"),
        ({"h0": "ones"}, "h0"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    args = {"input_size": 4, "hidden_size": 8, "output_size": 3, "generator": torch.Generator().manual_seed(0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        NoiseRNN(**args)


def test_generator_is_required():
    with pytest.raises(ValueError, match="Generator"):
        NoiseRNN(4, 8, 3)


def test_weights_round_trip_is_exact():
    rng = np.random.default_rng(0)
    w = random_weights(rng)
    model = NoiseRNN.from_weights(w)
    back = model.weights()
    for name in RNNWeights._fields:
        a, b = getattr(w, name), getattr(back, name)
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    # from_weights copies: changing the model does not change the caller's arrays
    with torch.no_grad():
        model.W_rec.zero_()
    assert np.any(w.W_rec != 0)
    # weights() copies: changing the returned arrays does not change the model
    model2 = NoiseRNN.from_weights(w)
    out = model2.weights()
    out.W_in[:] = 0
    assert torch.any(model2.W_in != 0)
    assert (model2.input_size, model2.hidden_size, model2.output_size) == (4, 10, 3)


def test_weights_copy_is_deep():
    w = random_weights(np.random.default_rng(1))
    c = w.copy()
    c.W_out[:] = 0
    assert np.any(w.W_out != 0)


def test_from_weights_bad_h0():
    with pytest.raises(ValueError, match="h0"):
        NoiseRNN.from_weights(random_weights(np.random.default_rng(0)), h0="bad")


def test_validate_catches_wrong_shapes_and_non_finite():
    rng = np.random.default_rng(2)
    good = random_weights(rng, h=6, d=3, k=3)
    assert good.validate() is good
    assert (good.hidden_size, good.input_size, good.output_size) == (6, 3, 3)
    with pytest.raises(ValueError, match="W_rec must be square"):
        good._replace(W_rec=np.zeros((6, 5), np.float32)).validate()
    with pytest.raises(ValueError, match="W_in must have shape"):
        good._replace(W_in=np.zeros((5, 3), np.float32)).validate()
    with pytest.raises(ValueError, match="W_out must have shape"):
        good._replace(W_out=np.zeros((3, 7), np.float32)).validate()
    with pytest.raises(ValueError, match="W_in must be a 2-D array"):
        good._replace(W_in=np.zeros(6, np.float32)).validate()
    with pytest.raises(ValueError, match="W_out must be a 2-D array"):
        good._replace(W_out=[[0.0] * 6] * 3).validate()
    nan = good.W_rec.copy()
    nan[1, 2] = np.nan
    nan[0, 0] = np.inf
    with pytest.raises(ValueError, match="W_rec has 2 non-finite entries"):
        good._replace(W_rec=nan).validate()
    with pytest.raises(ValueError):
        NoiseRNN.from_weights(good._replace(W_rec=nan))


# --------------------------------------------------------------------------- dynamics vs NumPy reference


def test_numpy_step_equals_torch_step_float64():
    rng = np.random.default_rng(3)
    w = random_weights(rng, h=16, d=6)
    model = NoiseRNN.from_weights(w).double()
    h = rng.standard_normal((7, 16))
    x = rng.standard_normal((7, 6))
    ref = numpy_step(w, h, x)
    out = model.step(torch.from_numpy(h), torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    # independent check of the formula on one row: relu(W_rec h + W_in x)
    row = np.maximum(w.W_rec.astype(np.float64) @ h[0] + w.W_in.astype(np.float64) @ x[0], 0)
    np.testing.assert_allclose(ref[0], row, rtol=1e-12, atol=1e-12)
    assert np.any(ref == 0) and np.any(ref > 0)  # both sides of the ReLU are exercised


def test_numpy_rollout_equals_torch_hidden_states_float64():
    rng = np.random.default_rng(4)
    w = random_weights(rng, h=16, d=6, scale=0.3)
    model = NoiseRNN.from_weights(w).double()
    inputs = rng.standard_normal((5, 25, 6))
    h0 = rng.standard_normal((5, 16))
    ref = numpy_rollout_hidden(w, inputs, h0)
    assert ref.shape == (5, 25, 16) and ref.dtype == np.float64
    out = model.hidden_states(torch.from_numpy(inputs), torch.from_numpy(h0)).detach().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    # hidden[:, 0] is h_1 = step(h0, x_1): h0 itself is not part of the trajectory
    np.testing.assert_allclose(ref[:, 0], numpy_step(w, h0, inputs[:, 0]), rtol=0, atol=0)
    # logits are W_out h
    logits = model.logits(torch.from_numpy(ref)).detach().numpy()
    np.testing.assert_allclose(logits, ref @ w.W_out.T.astype(np.float64), rtol=1e-12, atol=1e-12)


def test_float32_model_close_to_reference():
    rng = np.random.default_rng(5)
    w = random_weights(rng, h=16, d=6, scale=0.3)
    model = NoiseRNN.from_weights(w)
    inputs = rng.standard_normal((3, 20, 6)).astype(np.float32)
    h0 = np.zeros((3, 16), np.float32)
    out = model.hidden_states(torch.from_numpy(inputs), torch.from_numpy(h0)).detach().numpy()
    ref = numpy_rollout_hidden(w, inputs.astype(np.float64), h0.astype(np.float64))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- initial state and rollout


def test_h0_modes():
    assert H0_MODES == ("zeros", "normal")
    zeros = make_model(h0="zeros")
    assert torch.equal(zeros.initial_state(4), torch.zeros(4, 12))
    normal = make_model(h0="normal")
    with pytest.raises(ValueError, match="generator"):
        normal.initial_state(4)
    a = normal.initial_state(2000, torch.Generator().manual_seed(0))
    b = normal.initial_state(2000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert a.shape == (2000, 12)
    # N(0, I): mean 0 (SE 1/sqrt(24000) ~ 0.0065), variance 1 (SE ~ sqrt(2/24000) ~ 0.009)
    assert abs(a.mean().item()) < 0.035
    assert a.var().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="generator"):
        normal.rollout(2, 3, generator=None)  # type: ignore[arg-type]


def test_rollout_reproducible_and_consistent():
    model = make_model(h=12, d=5, seed=2, h0="normal")
    with torch.no_grad():
        model.W_rec.mul_(3.0)  # make the dynamics non-trivial
    r1 = model.rollout(8, 30, torch.Generator().manual_seed(9), keep_inputs=True)
    r2 = model.rollout(8, 30, torch.Generator().manual_seed(9), keep_inputs=True)
    r3 = model.rollout(8, 30, torch.Generator().manual_seed(10))
    for a, b in zip(r1[:3], r2[:3]):
        assert torch.equal(a, b)
    assert torch.equal(r1.inputs, r2.inputs)
    assert r3.inputs is None
    assert not torch.equal(r1.hidden, r3.hidden)
    assert r1.hidden.shape == (8, 30, 12) and r1.logits.shape == (8, 30, 3) and r1.outputs.shape == (8, 30)
    assert r1.outputs.dtype == torch.int64
    assert r1.inputs.shape == (8, 30, 5)
    # the kept inputs drive the returned trajectory (h0 from the same generator, drawn first)
    h0 = model.initial_state(8, torch.Generator().manual_seed(9))
    hidden = model.hidden_states(r1.inputs, h0)
    torch.testing.assert_close(hidden, r1.hidden, rtol=0, atol=0)
    torch.testing.assert_close(model.logits(hidden), r1.logits, rtol=0, atol=0)
    assert not r1.hidden.requires_grad  # no gradients in rollouts


def test_rollout_noise_scale():
    model = make_model()
    r = model.rollout(4, 50, torch.Generator().manual_seed(0), noise_scale=0.5, keep_inputs=True)
    ref = model.rollout(4, 50, torch.Generator().manual_seed(0), keep_inputs=True)
    torch.testing.assert_close(r.inputs, 0.5 * ref.inputs, rtol=0, atol=0)


def test_rollout_outputs_are_categorical_samples_of_softmax():
    """Outputs are draws from softmax(logits): frequency test given the logits.

    Per step, 1[o_t = k] - p_t(k) has mean 0 and variance p(1-p), independently across
    steps given the logits; the sum over all steps is tested at 5 standard deviations
    (per output, and per bin of predicted probability, which checks calibration).
    """
    rng = np.random.default_rng(6)
    w = random_weights(rng, h=10, d=4, scale=0.8)
    model = NoiseRNN.from_weights(w)
    r = model.rollout(400, 50, torch.Generator().manual_seed(1))
    p = torch.softmax(r.logits.double(), dim=-1).reshape(-1, 3).numpy()
    onehot = np.eye(3)[r.outputs.reshape(-1).numpy()]
    assert p.min() < 0.2 and p.max() > 0.6  # the test covers varied probabilities
    for k in range(3):
        resid = onehot[:, k] - p[:, k]
        sd = np.sqrt((p[:, k] * (1 - p[:, k])).sum())
        assert abs(resid.sum()) < 5 * sd
        bins = np.digitize(p[:, k], [0.2, 0.4, 0.6, 0.8])
        for b in np.unique(bins):
            sel = bins == b
            sd_b = np.sqrt((p[sel, k] * (1 - p[sel, k])).sum())
            assert abs(resid[sel].sum()) < 5 * sd_b + 1e-9


# --------------------------------------------------------------------------- Gumbel sampling


def test_sample_gumbel_distribution():
    g = sample_gumbel((200000,), torch.Generator().manual_seed(0)).double()
    # standard Gumbel: mean = Euler's gamma, variance = pi^2/6 (SEs ~0.003 and ~0.008)
    assert g.mean().item() == pytest.approx(0.5772156649, abs=0.015)
    assert g.var().item() == pytest.approx(math.pi**2 / 6, abs=0.05)
    assert torch.isfinite(g).all()
    g2 = sample_gumbel((200000,), torch.Generator().manual_seed(0)).double()
    assert torch.equal(g, g2)


def test_hard_gumbel_softmax_forward_is_exact_one_hot():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 3, generator=gen) * 3
    gumbel = sample_gumbel((5000, 3), gen)
    for tau in (1.0, 0.5, 2.0):
        y = hard_gumbel_softmax(logits, gumbel, tau)
        expected = torch.nn.functional.one_hot((logits + gumbel).argmax(-1), 3).to(y.dtype)
        assert torch.equal(y, expected)  # bit-exact: every entry is exactly 0.0 or 1.0


def test_hard_gumbel_softmax_gradient_equals_soft_sample_gradient():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    gumbel = sample_gumbel((64, 3), gen).double()
    weights = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    tau = 0.7

    a = base.clone().requires_grad_(True)
    (hard_gumbel_softmax(a, gumbel, tau) * weights).sum().backward()
    b = base.clone().requires_grad_(True)
    (torch.softmax((b + gumbel) / tau, dim=-1) * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14)
    assert a.grad.abs().max() > 0

    # and the analytic softmax Jacobian: d/dl_j sum_k w_k s_k = s_j (w_j - sum_k w_k s_k) / tau
    s = torch.softmax((base + gumbel) / tau, dim=-1)
    analytic = s * (weights - (weights * s).sum(-1, keepdim=True)) / tau
    torch.testing.assert_close(a.grad, analytic, rtol=1e-10, atol=1e-12)


def test_sample_outputs_onehot_frequencies():
    model = make_model()
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(30000, 3)
    y = model.sample_outputs_onehot(logits, torch.Generator().manual_seed(0))
    assert torch.all(y.sum(-1) == 1)
    freq = y.mean(0).numpy()
    p = np.array([0.6, 0.3, 0.1])
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 30000))
