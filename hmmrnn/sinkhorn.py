"""The training loss: debiased Sinkhorn divergence between two point clouds.

The paper uses ``geomloss.SamplesLoss("sinkhorn", p=2, blur=0.2)`` on sequences flattened to
points of R^(L K) (one-hot outputs), cost ``C(x, y) = |x - y|^2 / 2``:

    S(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2,    eps = blur^2.

:func:`geomloss_divergence` calls geomloss itself (the reference). :func:`sinkhorn_divergence`
is a re-implementation of the *same algorithm* (geomloss 0.3.1, "tensorized" backend:
epsilon-scaling from ``diameter^2`` down to ``blur^2`` by factors ``scaling^2``, symmetric
averaged updates, a final extrapolation step that carries the gradient) with two changes
that make a training step cheaper and change no number:

* the data cloud ``y`` is treated as a constant (no gradient flows to it), and
* the data-data term ``OT_eps(b, b)``, which does not depend on the model, can be passed in
  precomputed (:func:`self_transport_term`) for fixed data batches, instead of being
  re-solved at every step (a quarter of the soft-min work).

Written as plain tensor code, it compiles with ``torch.compile`` (fusing the cost matrix
into the log-sum-exp so the 4096 x 4096 temporaries are not materialised). The tests check
value and gradient against geomloss to 1e-3 relative (in practice ~1e-6).

Shapes: ``x`` (N, D) generated points (carries the gradient), ``y`` (M, D) data points.

**Binary clouds** (:func:`binary_sinkhorn`, used by training): when every coordinate of both
clouds is 0 or 1 (flattened one-hot sequences), the cost is
``C_ij = |x_i|^2/2 + |y_j|^2/2 - <x_i, y_j>``, and ``<x_i, y_j>`` counts the steps where the
two sequences agree: a small integer, computed exactly by one matrix product and stored in
one byte. Each soft-min pass then reads 1 byte per pair instead of 4 and is bound by the
exponentials; the gradient is written in closed form (the envelope theorem, as geomloss's
last extrapolation step: ``dS/dx_i = (sum_j Q_ij x_j - sum_j P_ij y_j) / N`` with ``P``, ``Q``
the row-normalised transport plans of the last x-y and x-x soft-min steps), so no autograd
graph of 4096 x 4096 temporaries is built. Same algorithm, same schedule, same number as
:func:`sinkhorn_divergence` to float rounding (tested). Exponentials of arguments below
``-80`` (relative to a row's largest term) are taken at ``-80``: those terms are < 2e-35 of the
row's sum, far below float32 resolution, and on x86 an ``exp`` that would return a subnormal
number takes a slow path (5-50x slower); geomloss's eager passes at eps = 0.04 spend most of
their time there.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from .workspace import Workspace

__all__ = [
    "epsilon_schedule",
    "max_diameter",
    "onehot_diameter",
    "squared_cost",
    "sinkhorn_divergence",
    "self_transport_term",
    "geomloss_divergence",
    "binary_sinkhorn",
    "BinarySinkhornResult",
]


def epsilon_schedule(diameter: float, blur: float, scaling: float = 0.5, p: int = 2) -> tuple[float, ...]:
    """Temperatures of the epsilon-scaling loop, exactly as geomloss builds them."""
    if not (0 < scaling < 1):
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}")
    if blur <= 0 or diameter <= 0:
        raise ValueError(f"blur and diameter must be positive, got blur={blur}, diameter={diameter}")
    steps = np.arange(p * np.log(diameter), p * np.log(blur), p * np.log(scaling))
    return tuple([float(diameter**p)] + [float(np.exp(e)) for e in steps] + [float(blur**p)])


def max_diameter(x: torch.Tensor, y: torch.Tensor) -> float:
    """geomloss's diameter estimate: norm of the joint bounding box of both clouds."""
    mins = torch.minimum(x.min(dim=0).values, y.min(dim=0).values)
    maxs = torch.maximum(x.max(dim=0).values, y.max(dim=0).values)
    return float((maxs - mins).norm().item())


def onehot_diameter(y: torch.Tensor) -> float:
    """:func:`max_diameter` of ``y`` and any cloud whose coordinates lie in [0, 1] (one-hot).

    Used during training, where the generated points are one-hot samples: the value equals
    geomloss's estimate but does not depend on rounding noise of the straight-through sample,
    so a compiled step sees the same schedule at every call.
    """
    mins = torch.clamp(y.min(dim=0).values, max=0.0)
    maxs = torch.clamp(y.max(dim=0).values, min=1.0)
    return float((maxs - mins).norm().item())


def squared_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cost ``|x_i - y_j|^2 / 2`` (geomloss's formula and order)."""
    d_xx = (x * x).sum(-1).unsqueeze(1)
    d_yy = (y * y).sum(-1).unsqueeze(0)
    return (d_xx - 2 * (x @ y.T) + d_yy) / 2


def _softmin_rows(eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Soft-C-transform over columns: (N, M), (M,) -> (N,) ``-eps log sum_j exp(h_j - C_ij/eps)``."""
    return -eps * torch.logsumexp(h.unsqueeze(0) - cost / eps, dim=1)


def _softmin_cols(eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Soft-C-transform over rows of ``cost`` (i.e. of its transpose): (N, M), (N,) -> (M,)."""
    return -eps * torch.logsumexp(h.unsqueeze(1) - cost / eps, dim=0)


def _self_potential(cost: torch.Tensor, log_w: torch.Tensor, eps_list: tuple[float, ...]) -> torch.Tensor:
    """Potential of the symmetric problem OT(a, a) after the annealing loop (no gradient)."""
    f = _softmin_rows(eps_list[0], cost, log_w)
    for eps in eps_list:
        f = 0.5 * (f + _softmin_rows(eps, cost, log_w + f / eps))
    return f


def self_transport_term(y: torch.Tensor, eps_list: tuple[float, ...]) -> torch.Tensor:
    """``<b, g_bb>`` = OT_eps(b, b) / 2 ... the data-data term of the divergence (a 0-d tensor).

    It depends only on the data batch ``y`` (M, D) and the temperature schedule, so a
    training loop over fixed batches computes it once per batch.
    """
    with torch.no_grad():
        m = y.shape[0]
        log_b = torch.full((m,), -math.log(m), dtype=y.dtype, device=y.device)
        c_yy = squared_cost(y, y)
        g_bb = _self_potential(c_yy, log_b, eps_list)
        eps = eps_list[-1]
        g_bb = _softmin_rows(eps, c_yy, log_b + g_bb / eps)
        return g_bb.mean()


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    blur: float = 0.2,
    scaling: float = 0.5,
    diameter: float | None = None,
    eps_list: tuple[float, ...] | None = None,
    y_self_term: torch.Tensor | None = None,
) -> torch.Tensor:
    """Debiased Sinkhorn divergence S(x, y) with uniform weights, gradient w.r.t. ``x`` only.

    Args:
        x: (N, D) generated points.
        y: (M, D) data points (treated as constant).
        blur: target blur; eps = blur**2.
        scaling: epsilon-scaling ratio (geomloss default 0.5).
        diameter: starting scale; default geomloss's estimate from both clouds.
        eps_list: the temperature schedule (overrides blur/scaling/diameter when given).
        y_self_term: precomputed :func:`self_transport_term` of ``y`` for this schedule.

    Returns:
        0-d tensor, equal (to float rounding) to ``SamplesLoss("sinkhorn", p=2, blur=blur)(x, y)``.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (N, D) and (M, D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if eps_list is None:
        if diameter is None:
            diameter = max_diameter(x.detach(), y)
        eps_list = epsilon_schedule(diameter, blur, scaling)
    y = y.detach()
    n, m = x.shape[0], y.shape[0]
    log_a = torch.full((n,), -math.log(n), dtype=x.dtype, device=x.device)
    log_b = torch.full((m,), -math.log(m), dtype=x.dtype, device=x.device)

    with torch.no_grad():
        xd = x.detach()
        c_xy = squared_cost(xd, y)
        c_xx = squared_cost(xd, xd)
        eps0 = eps_list[0]
        g_ab = _softmin_cols(eps0, c_xy, log_a)
        f_ba = _softmin_rows(eps0, c_xy, log_b)
        f_aa = _softmin_rows(eps0, c_xx, log_a)
        for eps in eps_list:
            ft_ba = _softmin_rows(eps, c_xy, log_b + g_ab / eps)
            gt_ab = _softmin_cols(eps, c_xy, log_a + f_ba / eps)
            ft_aa = _softmin_rows(eps, c_xx, log_a + f_aa / eps)
            f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
            f_aa = 0.5 * (f_aa + ft_aa)
        eps = eps_list[-1]
        # last extrapolation of the y-side potential: no gradient w.r.t. x (as in geomloss)
        g_last = _softmin_cols(eps, c_xy, log_a + f_ba / eps)
        if y_self_term is None:
            y_self_term = self_transport_term(y, eps_list)

    # last extrapolation with gradient: cost recomputed from x (geomloss: C(x, y.detach()), C(x, x.detach()))
    f_last = _softmin_rows(eps, squared_cost(x, y), log_b + g_ab / eps)
    f_self = _softmin_rows(eps, squared_cost(x, x.detach()), log_a + f_aa / eps)
    return (f_last - f_self).mean() + g_last.mean() - y_self_term


def geomloss_divergence(x: torch.Tensor, y: torch.Tensor, blur: float = 0.2) -> torch.Tensor:
    """Reference: geomloss's ``SamplesLoss("sinkhorn", p=2, blur=blur)`` (tensorized backend).

    Note: geomloss switches gradients back on inside ``torch.no_grad()``; call it under
    ``torch.inference_mode()`` when no gradient is wanted.
    """
    from geomloss import SamplesLoss

    return SamplesLoss("sinkhorn", p=2, blur=blur, backend="tensorized")(x, y)


# --------------------------------------------------------------------------- binary clouds

_EXP_FLOOR = -80.0  # exp(-80) = 1.8e-35 > the smallest normal float32 (1.2e-38)
_ROW_BLOCK = 64  # rows per block in the eager (uncompiled) passes: a (64, 4096) float block is 1 MiB


class BinarySinkhornResult(NamedTuple):
    """Value (and optionally gradient) of the Sinkhorn divergence between binary clouds.

    Fields:
        value: 0-d tensor, S(x, y).
        grad: (N, D) dS/dx (the gradient geomloss's autograd gives), or None if not asked for.
    """

    value: torch.Tensor
    grad: torch.Tensor | None


def _lse_eager(counts: torch.Tensor, h: torch.Tensor, inv_eps: torch.Tensor) -> torch.Tensor:
    """(R, C) counts, (C,) h -> (R,) ``log sum_j exp(h_j + counts_ij * inv_eps)`` in row blocks."""
    rows, cols = counts.shape
    out = torch.empty(rows, dtype=h.dtype, device=h.device)
    buf = torch.empty(min(_ROW_BLOCK, rows), cols, dtype=h.dtype, device=h.device)
    for i in range(0, rows, _ROW_BLOCK):
        block = counts[i : i + _ROW_BLOCK]
        t = buf[: block.shape[0]]
        t.copy_(block)
        t.mul_(inv_eps).add_(h)
        peak = t.amax(dim=1, keepdim=True)
        t.sub_(peak).clamp_(min=_EXP_FLOOR).exp_()
        out[i : i + block.shape[0]] = peak.squeeze(1) + t.sum(dim=1).log()
    return out


def _plan_eager(counts: torch.Tensor, h: torch.Tensor, inv_eps: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """(R, C) transport plan rows ``exp(h_j + counts_ij * inv_eps - lse_i)`` (each row sums to 1)."""
    plan = counts.to(h.dtype)
    plan.mul_(inv_eps).add_(h).sub_(lse.unsqueeze(1)).clamp_(min=_EXP_FLOOR).exp_()
    return plan


def _lse_fused(counts: torch.Tensor, h: torch.Tensor, inv_eps: torch.Tensor) -> torch.Tensor:
    """Same as :func:`_lse_eager`, written for ``torch.compile`` (one fused pass per row)."""
    t = h.unsqueeze(0) + counts.to(h.dtype) * inv_eps
    peak = t.amax(dim=1, keepdim=True)
    return peak.squeeze(1) + torch.exp(torch.clamp(t - peak, min=_EXP_FLOOR)).sum(dim=1).log()


def _plan_fused(counts: torch.Tensor, h: torch.Tensor, inv_eps: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.clamp(h.unsqueeze(0) + counts.to(h.dtype) * inv_eps - lse.unsqueeze(1), min=_EXP_FLOOR))


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def _kernels(compiled: bool) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """The log-sum-exp and transport-plan passes: eager (row blocks) or under ``torch.compile``."""
    if not compiled:
        return _lse_eager, _plan_eager
    if not _COMPILED:
        _COMPILED["lse"] = torch.compile(_lse_fused, dynamic=True)
        _COMPILED["plan"] = torch.compile(_plan_fused, dynamic=True)
    return _COMPILED["lse"], _COMPILED["plan"]


def _check_binary(name: str, cloud: torch.Tensor) -> torch.Tensor:
    """(n, D) 0/1 cloud -> (n,) squared norms (= number of ones). Raises ValueError otherwise."""
    if not torch.all((cloud == 0) | (cloud == 1)):
        raise ValueError(f"{name} must hold only 0 and 1 (a binary / one-hot cloud)")
    return cloud.sum(dim=1)


def _overlaps(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D), (M, D) 0/1 clouds -> (N, M) exact integer overlaps ``<a_i, b_j>``.

    On a CPU an int8 x int8 -> int32 product (``torch._int_mm``, VNNI) is exact and about twice
    as fast as float32, written into ``out`` ((N, M) int32) when given; elsewhere a float32
    product (exact for counts below 2^24).
    """
    if a.device.type == "cpu":
        if out is not None:
            return torch._int_mm(a.to(torch.int8), b.to(torch.int8).T, out=out)
        return torch._int_mm(a.to(torch.int8), b.to(torch.int8).T)
    if a.shape[1] >= 2**24:
        raise ValueError(f"clouds of dimension {a.shape[1]} >= 2^24: overlaps would not be exact in float32")
    return (a.float() @ b.float().T).round_()


def binary_sinkhorn(
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: tuple[float, ...],
    y_self_term: torch.Tensor | None = None,
    with_grad: bool = False,
    compiled: bool = False,
    workspace: Workspace | None = None,
) -> BinarySinkhornResult:
    """:func:`sinkhorn_divergence` for clouds of 0/1 points, with a closed-form gradient.

    The same algorithm and schedule (the value agrees to float rounding), computed on the
    exact integer overlaps ``<x_i, y_j>`` (one byte each while they fit; see the module notes).

    Args:
        x: (N, D) generated points, entries 0 or 1 (e.g. flattened one-hot sequences).
        y: (M, D) data points, entries 0 or 1.
        eps_list: the temperature schedule (:func:`epsilon_schedule`).
        y_self_term: precomputed :func:`self_transport_term` of ``y`` for this schedule.
        with_grad: also return dS/dx (N, D) (no autograd graph is built either way).
        compiled: run the soft-min passes under ``torch.compile`` (fused, ~1.5-2x faster on a
            CPU at 4096 x 4096; a one-off compilation of a few seconds to a minute).
        workspace: buffers to reuse for the (N, M) integer products (:class:`hmmrnn.workspace.Workspace`).

    Returns:
        :class:`BinarySinkhornResult` (value, grad or None).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (N, D) and (M, D) with the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not eps_list:
        raise ValueError("eps_list must hold at least one temperature")
    x, y = x.detach(), y.detach()
    dtype = x.dtype
    with torch.no_grad():
        nx, ny = _check_binary("x", x), _check_binary("y", y)
        n, m = x.shape[0], y.shape[0]
        count_dtype = torch.uint8 if max(float(nx.max()), float(ny.max())) <= 255 else dtype
        products = {}
        if workspace is not None and x.device.type == "cpu":
            products = {k: workspace.take(f"overlaps_{k}", (n, cols), torch.int32, x.device) for k, cols in (("xy", m), ("xx", n))}
        c_xy = _overlaps(x, y, out=products.get("xy")).to(count_dtype)
        c_yx = c_xy.T.contiguous()
        c_xx = _overlaps(x, x, out=products.get("xx")).to(count_dtype)
        half_x, half_y = nx.to(dtype) / 2, ny.to(dtype) / 2
        log_a = torch.full((n,), -math.log(n), dtype=dtype, device=x.device)
        log_b = torch.full((m,), -math.log(m), dtype=dtype, device=x.device)
        lse, plan = _kernels(compiled)

        # soft-min of C_ij = half_i + half'_j - counts_ij over j:
        #   -eps log sum_j exp(h_j - C_ij / eps) = half_i - eps * lse_j(h_j - half'_j / eps + counts_ij / eps)
        def softmin(eps: float, counts: torch.Tensor, half_rows: torch.Tensor, half_cols: torch.Tensor,
                    h: torch.Tensor) -> torch.Tensor:
            inv = torch.tensor(1.0 / eps, dtype=dtype, device=x.device)
            return half_rows - eps * lse(counts, h - half_cols * inv, inv)

        eps0 = eps_list[0]
        g_ab = softmin(eps0, c_yx, half_y, half_x, log_a)
        f_ba = softmin(eps0, c_xy, half_x, half_y, log_b)
        f_aa = softmin(eps0, c_xx, half_x, half_x, log_a)
        for eps in eps_list:
            ft_ba = softmin(eps, c_xy, half_x, half_y, log_b + g_ab / eps)
            gt_ab = softmin(eps, c_yx, half_y, half_x, log_a + f_ba / eps)
            ft_aa = softmin(eps, c_xx, half_x, half_x, log_a + f_aa / eps)
            f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
            f_aa = 0.5 * (f_aa + ft_aa)
        eps = eps_list[-1]
        inv = torch.tensor(1.0 / eps, dtype=dtype, device=x.device)
        g_last = softmin(eps, c_yx, half_y, half_x, log_a + f_ba / eps)
        h_xy = log_b + g_ab / eps - half_y * inv
        h_xx = log_a + f_aa / eps - half_x * inv
        lse_xy = lse(c_xy, h_xy, inv)
        lse_xx = lse(c_xx, h_xx, inv)
        f_last = half_x - eps * lse_xy
        f_self = half_x - eps * lse_xx
        if y_self_term is None:
            y_self_term = self_transport_term(y, eps_list)
        value = (f_last - f_self).mean() + g_last.mean() - y_self_term
        if not with_grad:
            return BinarySinkhornResult(value, None)
        # envelope theorem: d f_last_i / d x_i = x_i - sum_j P_ij y_j, d f_self_i / d x_i = x_i - sum_j Q_ij x_j
        grad = plan(c_xx, h_xx, inv, lse_xx) @ x
        grad -= plan(c_xy, h_xy, inv, lse_xy) @ y
        grad /= n
        return BinarySinkhornResult(value, grad)
