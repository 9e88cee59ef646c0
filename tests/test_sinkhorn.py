"""Tests of hmmrnn.sinkhorn: the re-implemented Sinkhorn divergence against geomloss itself,
and against exact properties of the debiased divergence (zero on identical clouds, exact
value |t|^2 / 2 between a cloud and its translate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmmrnn.hmm import get_hmm, one_hot, sample
from hmmrnn.sinkhorn import (
    binary_sinkhorn,
    epsilon_schedule,
    geomloss_divergence,
    max_diameter,
    onehot_diameter,
    self_transport_term,
    sinkhorn_divergence,
    squared_cost,
)


def value_and_grad(fn, x, y, **kwargs):
    x = x.clone().requires_grad_(True)
    value = fn(x, y, **kwargs)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def assert_matches_geomloss(x, y, blur=0.2, rtol=1e-3):
    v_ours, g_ours = value_and_grad(sinkhorn_divergence, x, y, blur=blur)
    v_ref, g_ref = value_and_grad(geomloss_divergence, x, y, blur=blur)
    assert abs(float(v_ours - v_ref)) <= rtol * abs(float(v_ref)), (float(v_ours), float(v_ref))
    rel = float((g_ours - g_ref).norm() / g_ref.norm())
    assert rel <= rtol, rel
    assert float(v_ref) > 0 and float(g_ref.norm()) > 0  # a non-trivial comparison
    return v_ours, g_ours


def gaussian_clouds(n, m, d, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64) * 1.3 + 0.5
    return x.to(dtype), y.to(dtype)


def onehot_clouds(n, m, name="linear3", length=10, seed=0, dtype=torch.float32):
    """x: one-hot sequences of a mismatched (uniform i.i.d.) source; y: HMM sequences."""
    rng = np.random.default_rng(seed)
    _, y = sample(get_hmm(name), m, length, rng)
    x = rng.integers(0, 3, size=(n, length))
    to = lambda o: torch.from_numpy(one_hot(o, 3).reshape(o.shape[0], -1)).to(dtype)  # noqa: E731
    return to(x), to(y)


# --------------------------------------------------------------------------- against geomloss


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_clouds_match_geomloss(seed):
    # ~1e-7 (value) and ~1e-6 (gradient) in float32; the bound is the brief's 1e-3
    assert_matches_geomloss(*gaussian_clouds(200, 200, 5, seed))


def test_gaussian_clouds_different_sizes_match_geomloss():
    assert_matches_geomloss(*gaussian_clouds(150, 310, 4, 2))
    assert_matches_geomloss(*gaussian_clouds(300, 90, 4, 3))


@pytest.mark.parametrize("blur", [0.05, 0.5, 1.0])
def test_other_blur_match_geomloss(blur):
    assert_matches_geomloss(*gaussian_clouds(160, 200, 3, 4), blur=blur)


def test_float64_agrees_to_rounding():
    # same algorithm, same operations: in float64 the two agree to ~1e-15
    x, y = gaussian_clouds(128, 192, 6, 5, dtype=torch.float64)
    assert_matches_geomloss(x, y, rtol=1e-10)
    x, y = onehot_clouds(128, 192, dtype=torch.float64)
    assert_matches_geomloss(x, y, rtol=1e-10)


@pytest.mark.parametrize("name, n, m", [("linear3", 256, 384), ("linear2", 200, 200), ("cyclic4", 300, 128)])
def test_onehot_sequence_clouds_match_geomloss(name, n, m):
    # noise-free one-hot x, as the forward value of the straight-through samples in training
    x, y = onehot_clouds(n, m, name=name, length=10, seed=n)
    assert torch.all((x == 0) | (x == 1))
    assert_matches_geomloss(x, y)


def test_onehot_clouds_from_same_hmm_match_geomloss():
    rng = np.random.default_rng(9)
    hmm = get_hmm("fully3")
    _, a = sample(hmm, 256, 12, rng)
    _, b = sample(hmm, 256, 12, rng)
    x = torch.from_numpy(one_hot(a, 3).reshape(256, -1))
    y = torch.from_numpy(one_hot(b, 3).reshape(256, -1))
    assert_matches_geomloss(x, y)


# --------------------------------------------------------------------------- precomputed pieces


def test_precomputed_self_term_and_schedule_give_the_same_value_and_gradient():
    x, y = onehot_clouds(200, 256, seed=3)
    schedule = epsilon_schedule(max_diameter(x, y), 0.2)
    y_self = self_transport_term(y, schedule)
    assert y_self.ndim == 0
    v_default, g_default = value_and_grad(sinkhorn_divergence, x, y)
    v_sched, g_sched = value_and_grad(sinkhorn_divergence, x, y, eps_list=schedule)
    v_both, g_both = value_and_grad(sinkhorn_divergence, x, y, eps_list=schedule, y_self_term=y_self)
    assert torch.equal(v_default, v_sched)
    assert float(v_both) == pytest.approx(float(v_default), rel=1e-6, abs=1e-6)
    torch.testing.assert_close(g_both, g_default, rtol=0, atol=0)  # the data term carries no gradient


def test_onehot_diameter_equals_geomloss_estimate_for_onehot_clouds():
    x, y = onehot_clouds(100, 150, seed=4)
    assert onehot_diameter(y) == pytest.approx(max_diameter(x, y), rel=1e-7)
    # and therefore the training schedule equals geomloss's
    assert epsilon_schedule(onehot_diameter(y), 0.2) == pytest.approx(epsilon_schedule(max_diameter(x, y), 0.2))


def test_epsilon_schedule_matches_geomloss():
    legacy = pytest.importorskip("geomloss._legacy.sinkhorn_divergence")
    for diameter, blur, scaling in [(5.477, 0.2, 0.5), (1.0, 0.05, 0.7), (20.0, 1.0, 0.9)]:
        ours = epsilon_schedule(diameter, blur, scaling)
        ref = legacy.epsilon_schedule(2, diameter, blur, scaling)
        assert ours == pytest.approx([float(e) for e in ref], rel=1e-12)
    sched = epsilon_schedule(5.477, 0.2)
    assert sched[0] == pytest.approx(5.477**2) and sched[-1] == pytest.approx(0.04)
    assert all(a >= b for a, b in zip(sched, sched[1:]))


def test_squared_cost():
    x, y = gaussian_clouds(7, 9, 3, 6, dtype=torch.float64)
    brute = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
    torch.testing.assert_close(squared_cost(x, y), brute, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- exact properties


def test_divergence_of_a_cloud_with_itself_is_zero():
    x, _ = gaussian_clouds(200, 1, 5, 7, dtype=torch.float64)
    assert abs(float(sinkhorn_divergence(x, x.clone()))) < 1e-10
    xo, _ = onehot_clouds(256, 1, seed=8)
    assert abs(float(sinkhorn_divergence(xo, xo.clone()))) < 1e-4  # float32 rounding
    # the gradient at x = y vanishes too (S has a minimum there)
    _, grad = value_and_grad(sinkhorn_divergence, x, x.clone())
    assert float(grad.abs().max()) < 1e-8


def test_divergence_is_symmetric():
    x, y = gaussian_clouds(150, 220, 4, 9, dtype=torch.float64)
    assert float(sinkhorn_divergence(x, y)) == pytest.approx(float(sinkhorn_divergence(y, x)), rel=1e-6)


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_translated_cloud_costs_half_squared_shift(scale):
    """For the cost |x-y|^2/2 the debiased divergence between a cloud and its translate by t
    is exactly |t|^2/2 (the linear terms integrate out); and moving every x by the same v
    changes S by -<t, v> to first order, so the gradients sum to -t."""
    x, _ = gaussian_clouds(200, 1, 5, 10, dtype=torch.float64)
    t = torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0], dtype=torch.float64) * scale
    value, grad = value_and_grad(sinkhorn_divergence, x, x + t)
    assert float(value) == pytest.approx(float(t @ t) / 2, rel=1e-6)
    # (to the convergence of the annealed Sinkhorn loop: ~1e-6 of |t| observed)
    torch.testing.assert_close(grad.sum(0), -t, rtol=0, atol=1e-4 * float(t.norm()))


def test_divergence_grows_with_mismatch():
    x, y = gaussian_clouds(128, 128, 3, 11, dtype=torch.float64)
    # y is centred at 0.5: the shifts move x's centre 0, 0.5, 1.5, 2.5 away from it
    values = [float(sinkhorn_divergence(x + s, y)) for s in (0.5, 1.0, 2.0, 3.0)]
    assert all(v > 0 for v in values)
    assert values == sorted(values)


def test_no_gradient_flows_to_y():
    x, y = gaussian_clouds(64, 80, 3, 12)
    x.requires_grad_(True)
    y.requires_grad_(True)
    value = sinkhorn_divergence(x, y)
    value.backward()
    assert x.grad is not None and y.grad is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "x_shape, y_shape",
    [((10, 3), (12, 4)), ((10,), (12, 3)), ((10, 3), (12,)), ((2, 10, 3), (2, 12, 3))],
)
def test_bad_shapes_raise(x_shape, y_shape):
    with pytest.raises(ValueError, match="same D"):
        sinkhorn_divergence(torch.zeros(x_shape), torch.zeros(y_shape))


def test_epsilon_schedule_errors():
    with pytest.raises(ValueError, match="scaling"):
        epsilon_schedule(1.0, 0.2, scaling=1.0)
    with pytest.raises(ValueError, match="scaling"):
        epsilon_schedule(1.0, 0.2, scaling=0.0)
    with pytest.raises(ValueError, match="blur"):
        epsilon_schedule(1.0, 0.0)
    with pytest.raises(ValueError, match="diameter"):
        epsilon_schedule(-1.0, 0.2)


# --------------------------------------------------------------------------- binary clouds (the training path)


def binary_value_and_grad(x, y, compiled=False, **kwargs):
    schedule = epsilon_schedule(max_diameter(x, y), 0.2)
    result = binary_sinkhorn(x, y, schedule, with_grad=True, compiled=compiled, **kwargs)
    return result.value, result.grad


@pytest.mark.parametrize("name, n, m, length", [("linear3", 256, 384, 10), ("linear2", 200, 200, 30), ("cyclic4", 300, 128, 8)])
def test_binary_sinkhorn_equals_geomloss_and_autograd_float64(name, n, m, length):
    # same algorithm, closed-form gradient: in float64 value and gradient agree to rounding
    x, y = onehot_clouds(n, m, name=name, length=length, seed=n, dtype=torch.float64)
    v_ref, g_ref = value_and_grad(geomloss_divergence, x, y)
    v, g = binary_value_and_grad(x, y)
    assert float(v) == pytest.approx(float(v_ref), rel=1e-12)
    assert float((g - g_ref).norm() / g_ref.norm()) < 1e-10
    assert float(v_ref) > 0 and float(g_ref.norm()) > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_sinkhorn_float32_agrees_with_geomloss(seed):
    # float32: the two differ only by rounding (observed: value ~1e-7, gradient ~3e-6)
    x, y = onehot_clouds(256, 256, name="linear3", length=12, seed=seed)
    v_ref, g_ref = value_and_grad(geomloss_divergence, x, y)
    v, g = binary_value_and_grad(x, y)
    assert float(v) == pytest.approx(float(v_ref), rel=1e-5)
    assert float((g - g_ref).norm() / g_ref.norm()) < 3e-5


def test_binary_sinkhorn_compiled_passes_equal_eager_passes():
    # the passes train() runs under torch.compile: the same numbers as the eager row blocks
    x, y = onehot_clouds(300, 200, name="linear2", length=15, seed=5)
    v_eager, g_eager = binary_value_and_grad(x, y, compiled=False)
    v_comp, g_comp = binary_value_and_grad(x, y, compiled=True)
    assert float(v_comp) == pytest.approx(float(v_eager), rel=1e-6)
    assert float((g_comp - g_eager).norm() / g_eager.norm()) < 1e-5
    x64, y64 = x.double(), y.double()
    v_ref, g_ref = value_and_grad(geomloss_divergence, x64, y64)
    v64, g64 = binary_value_and_grad(x64, y64, compiled=True)
    assert float(v64) == pytest.approx(float(v_ref), rel=1e-12)
    assert float((g64 - g_ref).norm() / g_ref.norm()) < 1e-10


def test_binary_sinkhorn_precomputed_self_term_and_no_grad():
    x, y = onehot_clouds(128, 160, seed=6, dtype=torch.float64)
    schedule = epsilon_schedule(max_diameter(x, y), 0.2)
    y_self = self_transport_term(y, schedule)
    full = binary_sinkhorn(x, y, schedule, with_grad=True)
    given = binary_sinkhorn(x, y, schedule, y_self_term=y_self, with_grad=True)
    value_only = binary_sinkhorn(x, y, schedule)
    assert value_only.grad is None
    assert float(given.value) == pytest.approx(float(full.value), rel=1e-12)
    assert float(value_only.value) == pytest.approx(float(full.value), rel=1e-12)
    torch.testing.assert_close(given.grad, full.grad, rtol=0, atol=0)


def test_binary_sinkhorn_general_binary_and_wide_clouds():
    # not one-hot (rows with different numbers of ones), and rows with > 255 ones (no byte counts)
    gen = torch.Generator().manual_seed(7)
    for d, p in ((40, 0.3), (600, 0.5)):
        x = (torch.rand(90, d, generator=gen) < p).double()
        y = (torch.rand(110, d, generator=gen) < p * 0.8).double()
        v_ref, g_ref = value_and_grad(geomloss_divergence, x, y)
        v, g = binary_value_and_grad(x, y)
        assert float(v) == pytest.approx(float(v_ref), rel=1e-10)
        assert float((g - g_ref).norm() / g_ref.norm()) < 1e-9


def test_binary_sinkhorn_of_identical_clouds_is_zero():
    x, _ = onehot_clouds(200, 1, seed=8, dtype=torch.float64)
    value, grad = binary_value_and_grad(x, x.clone())
    assert abs(float(value)) < 1e-10
    assert float(grad.abs().max()) < 1e-8


def test_binary_sinkhorn_rejects_non_binary_points():
    x, y = onehot_clouds(20, 20, seed=9)
    schedule = epsilon_schedule(max_diameter(x, y), 0.2)
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_sinkhorn(x * 0.5, y, schedule)
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_sinkhorn(x, y + 1e-3, schedule)
    with pytest.raises(ValueError, match="same D"):
        binary_sinkhorn(x, y[:, :-1], schedule)
    with pytest.raises(ValueError, match="at least one temperature"):
        binary_sinkhorn(x, y, ())
