"""Global dynamics of the noise-driven ReLU RNN (Torre et al., NeurIPS 2025: its results on global dynamics and the training bifurcation), measured rather than assumed.

Everything here takes a *one-step map* ``F: (B, H) -> (B, H)`` (a torch function applied
row by row) or plain weights, so the same analysis runs on a trained network, an ablated
copy or a hand-built test network.

Contents, in the order of the chapter *Global dynamics*:

1. Fixed and slow points of any map: :func:`find_fixed_points` minimises the speed
   ``q(h) = ||F(h) - h||^2 / 2`` from many initial states at once (Adam, then Newton
   polishing), merges duplicates, and returns the Jacobian, its eigenvalues and stability
   (:class:`FixedPoints`). :func:`iterate_map` / :func:`converge` follow trajectories of the
   input-free map and time their convergence.
2. Exact analysis of the bias-free ReLU network. The map ``h -> relu(W_rec h + W_in x)`` is
   *positively homogeneous*: scaling state and input by ``c > 0`` scales the next state by
   ``c``. Consequences used throughout:

   * without input, ``F(c h) = c F(h)``: a fixed point other than the origin comes with its
     whole ray, and the speed obeys ``q(c h) = c^2 q(h)``, so every minimiser of ``q`` is a
     true fixed point (there are no isolated slow points away from the origin);
   * in the linear region of an activation pattern ``m`` the map is ``D_m W_rec``
     (:func:`relu_jacobian`); a fixed point there solves ``(I - D_m W_rec) h = 0``, so it is
     the origin unless ``D_m W_rec`` has an eigenvalue exactly 1 (:func:`region_analysis`);
   * with noise of standard deviation ``s``, the whole process started at 0 is ``s`` times
     the process at ``s = 1`` driven by the same draws: orbit sizes are *exactly*
     proportional to the noise standard deviation, and ``argmax`` outputs do not depend
     on ``s`` at all (:func:`scaled_copy_check`).

   The noise-averaged drift ``E[h_{t+1} | h_t]`` is a rectified Gaussian mean in closed form
   (:func:`averaged_map`, :func:`conditional_moments`); it is a smooth one-step map, so
   the same fixed-point finder applies.
   :func:`drift_field` maps that drift, and the actual noise residual of a run, over the
   states the network visits.
3. Orbits: batched driven runs (:func:`driven_run`), PCA (:func:`pca`), the sense of
   rotation from the signed areas of round trips (:func:`rotation`,
   :func:`switch_triggered_average`), the orbit radius against the noise scale
   (:func:`radius_sweep`) and the alignment of the readout with the orbit plane
   (:func:`readout_alignment`).
4. The training bifurcation from weight snapshots (:func:`snapshot_dynamics`, local
   spectra on the active block (:func:`local_eigvals`, :func:`eigen_counts`), and the
   midpoint rule :func:`detect_transition`).

Heavy linear algebra goes through torch (one thread is fastest for these small problems);
randomness always comes from an explicit ``torch.Generator``.

Shapes: ``H`` hidden units, ``D`` input dimensions, ``K`` outputs, ``B`` trajectories,
``T`` time steps, ``P`` points, ``S`` snapshots or noise scales.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .model import NONFINITE_OUTPUT, NonFiniteStates, RNNWeights, mark_nonfinite

__all__ = [
    "StepMap",
    "FixedPoints",
    "Convergence",
    "ActivationPatterns",
    "RegionAnalysis",
    "DrivenRun",
    "PCA",
    "Rotation",
    "LinearFit",
    "RadiusSweep",
    "TrainingDynamics",
    "Transition",
    "DriftField",
    "autonomous_map",
    "averaged_map",
    "conditional_moments",
    "monte_carlo_moments",
    "jacobian",
    "relu_jacobian",
    "averaged_jacobian",
    "map_jacobian",
    "local_eigvals",
    "find_fixed_points",
    "iterate_map",
    "converge",
    "activation_patterns",
    "region_analysis",
    "driven_run",
    "scaled_copy_check",
    "pca",
    "orient_pcs",
    "rotation",
    "switch_times",
    "switch_triggered_average",
    "orbit_radius",
    "linear_fit",
    "radius_sweep",
    "readout_alignment",
    "drift_field",
    "eigen_counts",
    "snapshot_dynamics",
    "detect_transition",
]

StepMap = Callable[[torch.Tensor], torch.Tensor]
"""A one-step map applied row by row: (B, H) tensor -> (B, H) tensor (row b depends on row b only)."""

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _as_weights(weights: RNNWeights) -> RNNWeights:
    if not isinstance(weights, RNNWeights):
        raise TypeError(f"expected RNNWeights, got {type(weights).__name__}")
    return weights.validate()


def _tensor(a, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def _check_states(states: torch.Tensor | np.ndarray, name: str = "states") -> None:
    if states.ndim != 2:
        raise ValueError(f"{name} must be (N, H), got shape {tuple(states.shape)}")
    if states.shape[0] == 0:
        raise ValueError(f"{name} is empty")


@contextlib.contextmanager
def _no_subnormals() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block (then switch flushing off again).

    Input-free trajectories and fixed-point searches of a bias-free ReLU network shrink
    geometrically towards the origin; subnormal arithmetic would make them ~100x slower
    without changing any result at the precision that matters.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


# =============================================================================== maps

def autonomous_map(weights: RNNWeights, dtype: torch.dtype = torch.float64) -> StepMap:
    """The input-free map ``F(h) = relu(W_rec h)`` as a batched torch function (B, H) -> (B, H)."""
    w = _tensor(_as_weights(weights).W_rec, dtype)
    return lambda h: torch.relu(h @ w.T)


def _input_std(weights: RNNWeights, noise_scale: float) -> np.ndarray:
    if not (noise_scale >= 0 and math.isfinite(noise_scale)):
        raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
    return noise_scale * np.linalg.norm(np.asarray(weights.W_in, dtype=np.float64), axis=1)


def averaged_map(weights: RNNWeights, noise_scale: float = 1.0, dtype: torch.dtype = torch.float64) -> StepMap:
    """The noise-averaged drift ``Fbar(h) = E[h_{t+1} | h_t = h]`` with x ~ N(0, s^2 I_D).

    Given ``h``, the pre-activation ``u = W_rec h + W_in x`` is Gaussian with mean
    ``mu = W_rec h`` and per-unit standard deviation ``sigma_i = s ||W_in[i, :]||``, so each
    unit's next state is a rectified Gaussian with mean
    ``mu Phi(mu / sigma) + sigma phi(mu / sigma)`` (``Phi``, ``phi``: standard normal cdf, pdf).
    Units with ``sigma_i = 0`` reduce to ``relu(mu_i)``. Smooth, positively homogeneous
    jointly in ``(h, s)``: ``Fbar_s(h) = s Fbar_1(h / s)``.
    """
    weights = _as_weights(weights)
    w = _tensor(weights.W_rec, dtype)
    sigma = _tensor(_input_std(weights, noise_scale), dtype)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    has_noise = sigma > 0

    def step(h: torch.Tensor) -> torch.Tensor:
        mu = h @ w.T
        z = mu / safe
        mean = mu * torch.special.ndtr(z) + safe * torch.exp(-0.5 * z * z) / _SQRT_2PI
        return torch.where(has_noise, mean, torch.relu(mu))

    return step


def conditional_moments(weights: RNNWeights, h: np.ndarray | torch.Tensor, noise_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form mean and per-unit variance of ``h_{t+1}`` given ``h_t = h`` (float64).

    Args:
        weights: the network.
        h: (N, H) states.
        noise_scale: standard deviation s of the input noise.

    Returns:
        ``(mean, var)``, both (N, H). With ``z = mu / sigma``:
        ``E[relu(u)] = mu Phi(z) + sigma phi(z)``,
        ``E[relu(u)^2] = (mu^2 + sigma^2) Phi(z) + mu sigma phi(z)``.
    """
    weights = _as_weights(weights)
    x = _tensor(h, torch.float64)
    _check_states(x, "h")
    mu = x @ torch.tensor(weights.W_rec, dtype=torch.float64).T  # torch: one thread, no BLAS contention
    sigma = torch.tensor(_input_std(weights, noise_scale), dtype=torch.float64).expand_as(mu)
    noisy = sigma > 0
    safe = torch.where(noisy, sigma, torch.ones_like(sigma))
    z = mu / safe
    cdf = torch.special.ndtr(z)
    pdf = torch.exp(-0.5 * z * z) / _SQRT_2PI
    mean = torch.where(noisy, mu * cdf + safe * pdf, torch.relu(mu))
    second = (mu * mu + safe * safe) * cdf + mu * safe * pdf
    var = torch.where(noisy, (second - mean * mean).clamp_min(0.0), torch.zeros_like(mu))
    return mean.numpy(), var.numpy()


def monte_carlo_moments(
    weights: RNNWeights, h: np.ndarray, noise_scale: float, n_samples: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample estimate of the mean and per-unit variance of ``h_{t+1}`` given ``h`` (N, H).

    Draws ``n_samples`` inputs per state in one batched op (an independent check of
    :func:`conditional_moments`). Returns ``(mean, var)``, both (N, H), float64.
    """
    weights = _as_weights(weights)
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    h = np.asarray(h, dtype=np.float64)
    _check_states(h, "h")
    w_rec = torch.tensor(weights.W_rec, dtype=torch.float64)
    w_in = torch.tensor(weights.W_in, dtype=torch.float64)
    x = torch.randn(n_samples, h.shape[0], weights.input_size, generator=generator, dtype=torch.float64) * noise_scale
    nxt = torch.relu(torch.from_numpy(h) @ w_rec.T + x @ w_in.T)  # (n, N, H)
    return nxt.mean(0).numpy(), nxt.var(0).numpy()


# =============================================================================== Jacobians

def jacobian(step_map: StepMap, states: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Jacobians ``dF/dh`` of a row-wise map at each state, by autograd.

    Args:
        step_map: (B, H) -> (B, H), row b depending on row b only.
        states: (P, H).

    Returns:
        (P, H, H) with ``J[p, i, j] = dF_i / dh_j`` at ``states[p]``.
    """
    x = _tensor(states, dtype)
    _check_states(x)
    full = torch.autograd.functional.jacobian(lambda z: step_map(z).sum(0), x, vectorize=True)  # (H, P, H)
    return full.permute(1, 0, 2).contiguous()


def relu_jacobian(W_rec: np.ndarray | torch.Tensor, active: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Local Jacobians ``J_t = diag(1[pre-activation > 0]) W_rec`` of the ReLU network.

    Args:
        W_rec: (H, H).
        active: (..., H) boolean mask of units with positive pre-activation (equivalently
            ``h_t > 0``).

    Returns:
        (..., H, H) float tensor (dtype of ``W_rec``; float32 for NumPy float32 input).
    """
    w = W_rec if isinstance(W_rec, torch.Tensor) else torch.from_numpy(np.asarray(W_rec))
    m = active if isinstance(active, torch.Tensor) else torch.from_numpy(np.asarray(active))
    if m.shape[-1] != w.shape[0]:
        raise ValueError(f"mask has {m.shape[-1]} units, W_rec {w.shape[0]}")
    return m.to(w.dtype)[..., :, None] * w


def averaged_jacobian(weights: RNNWeights, h: np.ndarray | torch.Tensor, noise_scale: float = 1.0) -> torch.Tensor:
    """Closed-form Jacobian of :func:`averaged_map`: ``diag(Phi(mu / sigma)) W_rec`` (P, H, H), float64.

    The derivative of the rectified-Gaussian mean with respect to ``mu`` is ``Phi(mu/sigma)``:
    the averaged map is the ReLU map with its 0/1 mask softened into a probability.
    """
    weights = _as_weights(weights)
    x = _tensor(h, torch.float64)
    _check_states(x, "h")
    w = torch.tensor(weights.W_rec, dtype=torch.float64)
    sigma = torch.tensor(_input_std(weights, noise_scale), dtype=torch.float64)
    mu = x @ w.T
    gain = torch.where(sigma > 0, torch.special.ndtr(mu / torch.where(sigma > 0, sigma, 1.0)), (mu > 0).to(mu.dtype))
    return gain[:, :, None] * w


def map_jacobian(weights: RNNWeights, noise_scale: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Closed-form Jacobian function of :func:`autonomous_map` (``noise_scale=None``) or of
    :func:`averaged_map` (``noise_scale=s``): (P, H) float64 states -> (P, H, H).

    Much faster than autograd; pass it as ``jacobian_fn`` to :func:`find_fixed_points`.
    For the ReLU map the mask is ``1[W_rec h > 0]`` (torch's convention ``relu'(0) = 0``).
    """
    weights = _as_weights(weights)
    if noise_scale is None:
        w = torch.tensor(weights.W_rec, dtype=torch.float64)
        return lambda h: relu_jacobian(w, _tensor(h, torch.float64) @ w.T > 0)
    _input_std(weights, noise_scale)  # validates
    return lambda h: averaged_jacobian(weights, h, noise_scale)


def local_eigvals(W_rec: np.ndarray | torch.Tensor, active: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the local ReLU maps ``diag(active) W_rec``, computed on the active block only.

    With the units permuted active-first, ``diag(m) W_rec = [[W_aa, W_ai], [0, 0]]``, so its
    spectrum is that of ``W_aa`` (k x k, k active units) plus H - k zeros. The blocks are
    gathered into one zero-padded (N, k_max, k_max) batch (padding adds more zeros), which is
    much cheaper than N full H x H eigenproblems.

    Args:
        W_rec: (H, H).
        active: (N, H) bool.

    Returns:
        (N, k_max) complex eigenvalues (k_max = most active units in any row; the remaining
        ``H - k_max`` eigenvalues of each local map are 0).
    """
    w = W_rec if isinstance(W_rec, torch.Tensor) else torch.from_numpy(np.asarray(W_rec))
    m = active if isinstance(active, torch.Tensor) else torch.from_numpy(np.asarray(active, dtype=bool))
    if m.ndim != 2 or m.shape[1] != w.shape[0]:
        raise ValueError(f"active must be (N, {w.shape[0]}), got {tuple(m.shape)}")
    counts = m.sum(1)
    k = max(int(counts.max()), 1)
    order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)[:, :k]  # active units first
    keep = torch.arange(k)[None, :] < counts[:, None]  # (N, k) real (not padding) entries
    block = w[order[:, :, None], order[:, None, :]] * (keep[:, :, None] & keep[:, None, :]).to(w.dtype)
    return torch.linalg.eigvals(block)


# =============================================================================== fixed points

class FixedPoints(NamedTuple):
    """Fixed and slow points of a one-step map, sorted slowest first.

    Fields:
        xstar: (P, H) the points (duplicates merged).
        speed: (P,) ``q = ||F(x) - x||^2 / 2`` at each point (0 for an exact fixed point).
        jacobian: (P, H, H) ``dF/dh`` at each point.
        eigvals: (P, H) complex eigenvalues of the Jacobian, sorted by decreasing modulus.
        is_stable: (P,) True where every ``|lambda| < 1`` (discrete-time stability).
        n_merged: (P,) how many optimised initial states ended at each point.
    """

    xstar: np.ndarray
    speed: np.ndarray
    jacobian: np.ndarray
    eigvals: np.ndarray
    is_stable: np.ndarray
    n_merged: np.ndarray

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.xstar.shape[0])

    @property
    def spectral_radius(self) -> np.ndarray:
        """(P,) largest eigenvalue modulus at each point."""
        return np.abs(self.eigvals[:, 0]) if self.eigvals.shape[1] else np.zeros(len(self))


def _speed(step_map: StepMap, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((step_map(x) - x) ** 2).sum(-1)


def _merge(points: np.ndarray, speeds: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy merge, slowest first: returns (kept indices, cluster sizes)."""
    order = np.argsort(speeds, kind="stable")
    kept: list[int] = []
    sizes: list[int] = []
    assigned = np.zeros(len(points), dtype=bool)
    for i in order:
        if assigned[i]:
            continue
        close = (np.linalg.norm(points - points[i], axis=1) <= tol) & ~assigned
        assigned |= close
        kept.append(int(i))
        sizes.append(int(close.sum()))
    return np.asarray(kept, dtype=np.int64), np.asarray(sizes, dtype=np.int64)


def find_fixed_points(
    step_map: StepMap,
    initial_states: np.ndarray | torch.Tensor,
    *,
    n_iter: int = 2000,
    lr: float = 0.05,
    final_lr: float = 1e-4,
    newton_steps: int = 10,
    merge_tol: float = 1e-3,
    jacobian_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    converged_speed: float = 1e-24,
    dtype: torch.dtype = torch.float64,
) -> FixedPoints:
    """Find fixed and slow points of a one-step map from many initial states at once.

    Minimises ``q(h) = ||F(h) - h||^2 / 2`` for all initial states in one batched problem
    (Adam, learning rate decaying geometrically from ``lr`` to ``final_lr``; states do not
    interact because Adam is elementwise), then polishes each point with up to
    ``newton_steps`` Newton steps ``h <- h - (J - I)^{-1} (F(h) - h)`` (least squares), each
    accepted only if it lowers that point's ``q``. Points closer than ``merge_tol`` times the median norm of the
    initial states (or ``merge_tol`` itself if that norm is below 1) are merged, keeping the
    slowest.

    Args:
        step_map: (B, H) -> (B, H), applied row by row, differentiable by torch.
        initial_states: (N, H) starting points (e.g. states of a driven run).
        n_iter: Adam iterations (0 skips the gradient stage).
        lr, final_lr: first and last Adam learning rate.
        newton_steps: Newton polishing steps (0 skips).
        merge_tol: relative distance under which two points are duplicates.
        jacobian_fn: (P, H) -> (P, H, H) closed-form Jacobian (e.g. :func:`map_jacobian`);
            default: autograd through ``step_map`` (:func:`jacobian`).
        converged_speed: points with ``q`` at or below this are not polished further.
        dtype: float64 by default (speeds down to ~1e-25 are meaningful).

    Returns:
        :class:`FixedPoints`, slowest first.
    """
    x0 = _tensor(initial_states, dtype)
    _check_states(x0, "initial_states")
    if not torch.all(torch.isfinite(x0)):
        raise ValueError("initial_states has non-finite entries")
    if n_iter < 0 or newton_steps < 0:
        raise ValueError("n_iter and newton_steps must be >= 0")
    if not (lr > 0 and final_lr > 0):
        raise ValueError("learning rates must be > 0")
    probe = step_map(x0[:1])
    if tuple(probe.shape) != (1, x0.shape[1]):
        raise ValueError(f"step_map must map (B, H) to (B, H); (1, {x0.shape[1]}) gave {tuple(probe.shape)}")

    with _no_subnormals():
        return _find_fixed_points(step_map, x0, n_iter, lr, final_lr, newton_steps, merge_tol, jacobian_fn, converged_speed, dtype)


def _find_fixed_points(step_map, x0, n_iter, lr, final_lr, newton_steps, merge_tol, jacobian_fn, converged_speed, dtype) -> FixedPoints:
    x = x0.clone().requires_grad_(True)
    if n_iter > 0:
        opt = torch.optim.Adam([x], lr=lr)
        gamma = (final_lr / lr) ** (1.0 / max(n_iter - 1, 1))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
        for _ in range(n_iter):
            opt.zero_grad(set_to_none=True)
            _speed(step_map, x).sum().backward()
            opt.step()
            sched.step()
    x = x.detach()

    jac_of = (lambda z: jacobian_fn(z).to(dtype)) if jacobian_fn is not None else (lambda z: jacobian(step_map, z, dtype))
    eye = torch.eye(x.shape[1], dtype=dtype)
    with torch.no_grad():
        q = _speed(step_map, x)
    for _ in range(newton_steps):
        todo = torch.nonzero(q > converged_speed).squeeze(1)  # polish only unconverged points
        if todo.numel() == 0:
            break
        xt = x[todo]
        jac = jac_of(xt)
        with torch.no_grad():
            residual = step_map(xt) - xt
            delta = torch.linalg.lstsq(jac - eye, residual.unsqueeze(-1)).solution.squeeze(-1)
            candidate = xt - delta
            q_new = _speed(step_map, candidate)
            better = torch.isfinite(q_new) & (q_new < q[todo])
            if not torch.any(better):
                break
            x[todo[better]] = candidate[better]
            q[todo[better]] = q_new[better]

    points = x.numpy()
    speeds = q.numpy()
    scale = max(float(np.median(np.linalg.norm(x0.numpy(), axis=1))), 1.0)
    keep, sizes = _merge(points, speeds, merge_tol * scale)
    xs = x[keep]
    jac = jac_of(xs)
    eig = torch.linalg.eigvals(jac).numpy()
    order = np.argsort(-np.abs(eig), axis=1, kind="stable")
    eig = np.take_along_axis(eig, order, axis=1)
    return FixedPoints(
        xstar=points[keep],
        speed=speeds[keep],
        jacobian=jac.numpy(),
        eigvals=eig,
        is_stable=np.abs(eig).max(axis=1, initial=0.0) < 1.0,
        n_merged=sizes,
    )


class Convergence(NamedTuple):
    """Trajectories of an input-free map and how fast they settle.

    Fields:
        point: (H,) mean of the end states (the common limit, if there is one).
        end: (N, H) the end states.
        spread: largest distance of an end state from ``point`` (0 if all meet).
        distance: (N, n_steps + 1) ``||h_t - point||`` along each trajectory (t = 0..n_steps).
        norm: (N, n_steps + 1) ``||h_t||``.
        time: (N,) first step from which ``distance`` stays below ``tol`` (NaN if never).
        tol: the tolerance used.
    """

    point: np.ndarray
    end: np.ndarray
    spread: float
    distance: np.ndarray
    norm: np.ndarray
    time: np.ndarray
    tol: float


def iterate_map(step_map: StepMap, h0: np.ndarray | torch.Tensor, n_steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Iterate a map from each initial state: (N, H) -> (N, n_steps + 1, H) including ``h0``."""
    h = _tensor(h0, dtype)
    _check_states(h, "h0")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    out = [h]
    with torch.no_grad(), _no_subnormals():
        for _ in range(n_steps):
            h = step_map(h)
            out.append(h)
    return torch.stack(out, dim=1)


def converge(step_map: StepMap, h0: np.ndarray | torch.Tensor, n_steps: int = 500, tol: float = 1e-3) -> Convergence:
    """Run the map ``n_steps`` from each of ``h0`` (N, H) and measure where and when they settle.

    ``time`` counts steps until the distance to the common end point ``point`` falls below
    ``tol`` for good (within the run).
    """
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    traj = iterate_map(step_map, h0, n_steps).numpy()
    end = traj[:, -1]
    point = end.mean(axis=0)
    distance = np.linalg.norm(traj - point, axis=-1)
    spread = float(np.linalg.norm(end - point, axis=1).max())
    above = distance >= tol
    # last step at which the distance is still >= tol, +1; NaN if still above at the end
    last_above = np.where(above.any(axis=1), above.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1), -1)
    time = np.where(above[:, -1], np.nan, last_above + 1).astype(np.float64)
    return Convergence(point, end, spread, distance, np.linalg.norm(traj, axis=-1), time, float(tol))


# =============================================================================== exact ReLU regions

class ActivationPatterns(NamedTuple):
    """Distinct activation patterns (linear regions) visited, most frequent first.

    Fields:
        patterns: (Q, H) bool, unit active (pre-activation > 0).
        counts: (Q,) how many states fell in each pattern.
        index: (N,) pattern number of each state (row of ``patterns``).
        unit_rate: (H,) fraction of states in which each unit is active.
        flips: (N - 1,) Hamming distance between consecutive patterns (meaningful when the
            states are one trajectory in time order).
    """

    patterns: np.ndarray
    counts: np.ndarray
    index: np.ndarray
    unit_rate: np.ndarray
    flips: np.ndarray

    @property
    def n_patterns(self) -> int:
        return int(self.patterns.shape[0])


def activation_patterns(active: np.ndarray | torch.Tensor) -> ActivationPatterns:
    """Count the distinct activation patterns in (N, H) masks (or states: ``> 0`` is taken)."""
    a = active.detach().cpu().numpy() if isinstance(active, torch.Tensor) else np.asarray(active)
    _check_states(a, "active")
    mask = a if a.dtype == bool else a > 0
    packed = np.packbits(mask, axis=1)
    uniq, first, inverse, counts = np.unique(packed, axis=0, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.lexsort((first, -counts))  # most frequent first, ties by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    patterns = mask[first[order]]
    flips = (mask[1:] != mask[:-1]).sum(axis=1)
    return ActivationPatterns(patterns, counts[order], rank[inverse], mask.mean(axis=0), flips)


class RegionAnalysis(NamedTuple):
    """Exact linear algebra of the local maps ``A_m = D_m W_rec`` of given activation patterns.

    With the units permuted active-first, ``A_m = [[W_aa, W_ai], [0, 0]]`` (``a``: the k active
    units): its spectrum is that of ``W_aa`` plus zeros, and ``I - A_m`` is singular exactly
    when ``I - W_aa`` is. Everything is computed on the k x k active block.

    Fields:
        n_active: (Q,) active units k in each pattern.
        spectral_radius: (Q,) largest ``|lambda(A_m)|``.
        n_unstable: (Q,) eigenvalues with ``|lambda| > 1``.
        gap_to_one: (Q,) ``min |lambda - 1|`` over the spectrum of ``A_m``: how far it is from the
            eigenvalue 1 that a non-zero fixed point needs.
        sigma_min: (Q,) smallest singular value of ``I - W_aa`` (0 iff a fixed ray exists in the
            linear extension of the region; 1 for the all-inactive pattern).
        ray_in_region: (Q,) True where ``sigma_min <= tol`` *and* the null vector (either sign)
            satisfies the pattern (positive on active units, ``W_rec h <= 0`` on inactive ones):
            a genuine ray of fixed points of the ReLU map.
    """

    n_active: np.ndarray
    spectral_radius: np.ndarray
    n_unstable: np.ndarray
    gap_to_one: np.ndarray
    sigma_min: np.ndarray
    ray_in_region: np.ndarray


def region_analysis(W_rec: np.ndarray, patterns: np.ndarray, tol: float = 1e-6) -> RegionAnalysis:
    """Fixed-point candidates of the noise-free map in each activation pattern, exactly.

    Inside the region of pattern ``m`` the map is linear, ``F(h) = D_m W_rec h`` (no biases),
    so its fixed points solve ``(I - D_m W_rec) h = 0``: only the origin, unless ``D_m W_rec``
    has the eigenvalue 1, in which case the null space (a ray, by positive homogeneity)
    is a set of fixed points if it lies inside the region. Patterns with the same number of
    active units are batched together (float64).

    Args:
        W_rec: (H, H).
        patterns: (Q, H) bool.
        tol: singular values at or below ``tol`` count as zero; also the slack of the sign
            checks, relative to the largest entry.
    """
    pats = np.asarray(patterns, dtype=bool)
    _check_states(pats, "patterns")
    w = torch.tensor(np.asarray(W_rec), dtype=torch.float64)
    h_dim = pats.shape[1]
    if tuple(w.shape) != (h_dim, h_dim):
        raise ValueError(f"W_rec {tuple(w.shape)} does not match patterns with {h_dim} units")
    q = len(pats)
    n_active = pats.sum(axis=1)
    radius = np.zeros(q)
    unstable = np.zeros(q, dtype=np.int64)
    gap = np.ones(q)
    sigma_min = np.ones(q)
    in_region = np.zeros(q, dtype=bool)
    for k in np.unique(n_active):
        rows = np.flatnonzero(n_active == k)
        if k == 0:
            continue  # A_m = 0: only the origin; defaults above
        idx = torch.from_numpy(np.stack([np.flatnonzero(p) for p in pats[rows]]))  # (n, k)
        block = w[idx[:, :, None], idx[:, None, :]]  # (n, k, k) = W_aa
        eig = torch.linalg.eigvals(block)
        radius[rows] = eig.abs().amax(1).numpy()
        unstable[rows] = (eig.abs() > 1.0).sum(1).numpy()
        g = (eig - 1.0).abs().amin(1).numpy()
        gap[rows] = g if k == h_dim else np.minimum(g, 1.0)  # the zero eigenvalues are 1 away
        _, sv, vh = torch.linalg.svd(torch.eye(int(k), dtype=torch.float64) - block)
        sigma_min[rows] = sv[:, -1].numpy()
        v = torch.zeros(len(rows), h_dim, dtype=torch.float64)
        v.scatter_(1, idx, vh[:, -1, :])  # null (or nearest-null) vector, zero on inactive units
        m = torch.from_numpy(pats[rows])
        for sign in (1.0, -1.0):
            h = sign * v
            pre = h @ w.T
            scale = h.abs().amax(dim=1, keepdim=True)
            ok = torch.where(m, (h > tol * scale) & (pre > tol * scale), pre <= tol * scale).all(1)
            in_region[rows] |= ok.numpy()
    return RegionAnalysis(n_active, radius, unstable, gap, sigma_min, in_region & (sigma_min <= tol))


# =============================================================================== driven runs and orbits

class DrivenRun(NamedTuple):
    """Noise-driven trajectories after a burn-in.

    Fields:
        hidden: (B, T, H) float32 hidden states.
        logits: (B, T, K) float32 readout.
        outputs: (B, T) int64 sampled outputs (categorical draws from softmax(logits));
            :data:`~hmmrnn.model.NONFINITE_OUTPUT` (-1) where the state is not finite.
        noise_scale: (B,) input-noise standard deviation of each trajectory.
    """

    hidden: np.ndarray
    logits: np.ndarray
    outputs: np.ndarray
    noise_scale: np.ndarray

    @property
    def dominant(self) -> np.ndarray:
        """(B, T) argmax of the logits (the most probable output); -1 where the state is not finite."""
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(self.logits).all(axis=-1)
        return np.where(finite, self.logits.argmax(axis=-1), NONFINITE_OUTPUT)

    @property
    def nonfinite(self) -> NonFiniteStates:
        """The steps without an output (non-finite states): how many, from which step; falsy if none."""
        return NonFiniteStates.from_mask(~np.isfinite(self.logits).all(axis=-1))

    @property
    def states(self) -> np.ndarray:
        """(B * T, H) all hidden states, trajectory by trajectory."""
        return self.hidden.reshape(-1, self.hidden.shape[-1])


def _simulate(w_in: torch.Tensor, w_rec: torch.Tensor, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Batched recurrence for one or many weight sets.

    ``w_in`` (..., H, D), ``w_rec`` (..., H, H), ``x`` (..., B, T, D), ``h0`` (..., B, H)
    -> (..., B, T, H). Leading dims (e.g. snapshots) broadcast over the weights.
    """
    drive = x @ w_in.transpose(-1, -2).unsqueeze(-3)  # (..., B, T, H)
    w_t = w_rec.transpose(-1, -2)
    h = h0
    out = torch.empty(drive.shape, dtype=drive.dtype)
    for t in range(x.shape[-2]):
        h = torch.relu(h @ w_t + drive[..., t, :])
        out[..., t, :] = h
    return out


def driven_run(
    weights: RNNWeights,
    n_steps: int,
    generator: torch.Generator,
    *,
    n_traj: int = 1,
    burn_in: int = 500,
    noise_scale: float | Sequence[float] = 1.0,
    h0: np.ndarray | None = None,
) -> DrivenRun:
    """Simulate noise-driven trajectories, all in one batched recurrence (float32).

    Args:
        weights: the network.
        n_steps: T, steps kept per trajectory (after the burn-in).
        generator: torch generator for the input noise and the output samples.
        n_traj: trajectories per noise scale.
        burn_in: steps run and discarded first (from ``h0``, default 0).
        noise_scale: one standard deviation, or a sequence of S of them (then B = S * n_traj,
            trajectory ``b`` has scale ``noise_scale[b // n_traj]``).
        h0: (B, H) initial states; zeros by default.
    """
    weights = _as_weights(weights)
    if n_steps < 1 or n_traj < 1 or burn_in < 0:
        raise ValueError(f"need n_steps >= 1, n_traj >= 1, burn_in >= 0; got {n_steps}, {n_traj}, {burn_in}")
    scales = np.atleast_1d(np.asarray(noise_scale, dtype=np.float64))
    if scales.ndim != 1 or not np.all(np.isfinite(scales)) or np.any(scales < 0):
        raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale!r}")
    per_traj = np.repeat(scales, n_traj)
    b, h_dim = per_traj.size, weights.hidden_size
    w_in = torch.from_numpy(np.asarray(weights.W_in, dtype=np.float32))
    w_rec = torch.from_numpy(np.asarray(weights.W_rec, dtype=np.float32))
    w_out = torch.from_numpy(np.asarray(weights.W_out, dtype=np.float32))
    if h0 is None:
        h = torch.zeros(b, h_dim)
    else:
        h = torch.as_tensor(np.asarray(h0, dtype=np.float32))
        if tuple(h.shape) != (b, h_dim):
            raise ValueError(f"h0 must be ({b}, {h_dim}), got {tuple(h.shape)}")
    s = torch.from_numpy(per_traj.astype(np.float32))[:, None, None]
    with torch.no_grad():
        if burn_in:
            x = torch.randn(b, burn_in, weights.input_size, generator=generator) * s
            h = _simulate(w_in, w_rec, x, h)[:, -1]
        x = torch.randn(b, n_steps, weights.input_size, generator=generator) * s
        hidden = _simulate(w_in, w_rec, x, h)
        logits = hidden @ w_out.T
        tiny = torch.finfo(torch.float32).tiny
        exponential = (-torch.log(torch.rand(logits.shape, generator=generator).clamp_min(tiny))).clamp_min(tiny)
        outputs = mark_nonfinite((logits - torch.log(exponential)).argmax(-1), logits)  # Gumbel-max: a softmax(logits) draw
    return DrivenRun(hidden.numpy(), logits.numpy(), outputs.numpy(), per_traj)


def scaled_copy_check(weights: RNNWeights, factor: float, n_steps: int, generator: torch.Generator, n_traj: int = 4) -> float:
    """Positive homogeneity, checked: runs at noise ``factor`` vs ``factor`` x the run at noise 1.

    Both runs use the same noise draws (start at 0, no burn-in). Returns the largest
    absolute difference relative to the largest state; 0 up to rounding (exactly 0 when
    ``factor`` is a power of two, since scaling by it is exact in floating point).
    """
    weights = _as_weights(weights)
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    w_in = torch.from_numpy(np.asarray(weights.W_in, dtype=np.float32))
    w_rec = torch.from_numpy(np.asarray(weights.W_rec, dtype=np.float32))
    x = torch.randn(n_traj, n_steps, weights.input_size, generator=generator)
    h0 = torch.zeros(n_traj, weights.hidden_size)
    with torch.no_grad():
        base = _simulate(w_in, w_rec, x, h0)
        scaled = _simulate(w_in, w_rec, x * factor, h0)
    top = float((factor * base).abs().max())
    return float((scaled - factor * base).abs().max()) / max(top, 1e-30)


class PCA(NamedTuple):
    """Principal components of a cloud of states.

    Fields:
        mean: (H,) centroid.
        components: (k, H) orthonormal directions, by decreasing variance.
        explained: (k,) fraction of the total variance along each.
    """

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def project(self, states: np.ndarray) -> np.ndarray:
        """(..., H) -> (..., k) coordinates (centred on ``mean``)."""
        x = _tensor(states, torch.float64) - torch.from_numpy(self.mean)
        return (x @ torch.from_numpy(self.components).T).numpy()


def pca(states: np.ndarray, n_components: int = 3) -> PCA:
    """PCA of (N, H) states (float64 eigendecomposition of the covariance).

    Signs are fixed so that each component's largest-magnitude loading is positive
    (see :func:`orient_pcs` for a readout-based orientation).
    """
    x = _tensor(states, torch.float64)
    _check_states(x)
    if not 1 <= n_components <= x.shape[1]:
        raise ValueError(f"n_components must be in 1..{x.shape[1]}, got {n_components}")
    if x.shape[0] < 2:
        raise ValueError("PCA needs at least 2 states")
    mean_t = x.mean(dim=0)
    centred = x - mean_t
    evals, evecs = torch.linalg.eigh(centred.T @ centred / x.shape[0])
    mean, vals, vecs = mean_t.numpy(), evals.numpy(), evecs.numpy()
    order = np.argsort(vals)[::-1][:n_components]
    comps = vecs[:, order].T
    signs = np.sign(comps[np.arange(n_components), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    total = max(float(vals.sum()), 1e-300)
    return PCA(mean, comps, np.clip(vals[order], 0.0, None) / total)


def orient_pcs(p: PCA, W_out: np.ndarray, first: int = 0, second: int = 2) -> PCA:
    """Flip PC1 so that it points from output ``second`` towards output ``first`` of the readout.

    (``(W_out[first] - W_out[second]) . PC1 >= 0``.) Other components are left as they are.
    """
    w = np.asarray(W_out, dtype=np.float64)
    comps = p.components.copy()
    if float(comps[0] @ (w[first] - w[second])) < 0:
        comps[0] = -comps[0]
    return PCA(p.mean, comps, p.explained)


class Rotation(NamedTuple):
    """Sense and regularity of the rotation of trajectories in a plane.

    A *round trip* is the stretch of a trajectory from one switch ``a -> b`` of the dominant
    output to the next ``a -> b`` switch (so it contains one ``b -> a`` switch); closed by the
    chord between its end points, it is a polygon with a signed area (shoelace formula;
    positive = counter-clockwise in the plane's axes). A closed orbit traversed one way gives
    round trips of one sign; going out and back along the same path gives areas near 0 of
    either sign. Signed areas do not depend on the origin of the plane.

    Fields:
        sign: +1 (counter-clockwise) or -1 (clockwise): the sign of the summed round-trip areas.
        cycle_areas: (C,) signed area of each complete round trip, all trajectories.
        same_sense: fraction of round trips whose area has the overall sign.
        area_per_step: total signed area swept (all steps, about the plane's origin) per step.
        switch_out: (n_ab, 2) plane coordinates at the ``a -> b`` switches (first step at ``b``).
        switch_back: (n_ba, 2) plane coordinates at the ``b -> a`` switches.
    """

    sign: int
    cycle_areas: np.ndarray
    same_sense: float
    area_per_step: float
    switch_out: np.ndarray
    switch_back: np.ndarray

    @property
    def n_cycles(self) -> int:
        return int(self.cycle_areas.size)


def _carried(dominant: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """(B, T) the last output of ``pair`` seen up to each step (-1 before the first)."""
    in_pair = np.isin(dominant, pair)
    last = np.maximum.accumulate(np.where(in_pair, np.arange(dominant.shape[1]), -1), axis=1)
    return np.where(last >= 0, np.take_along_axis(dominant, np.maximum(last, 0), axis=1), -1)


def switch_times(dominant: np.ndarray, pair: tuple[int, int] = (0, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Switches ``a -> b`` between the two outputs of ``pair`` (visits to other outputs ignored).

    Args:
        dominant: (B, T) dominant output per step.

    Returns:
        ``(traj, step)`` int arrays: the trajectory and the first step at ``b`` of every switch.
    """
    a, b = pair
    c = _carried(np.asarray(dominant), pair)
    hit = (c[:, :-1] == a) & (c[:, 1:] == b)
    traj, step = np.nonzero(hit)
    return traj, step + 1


def rotation(coords: np.ndarray, dominant: np.ndarray, pair: tuple[int, int] = (0, 2)) -> Rotation:
    """Measure the sense of rotation of trajectories in a plane (see :class:`Rotation`).

    Args:
        coords: (B, T, 2) plane coordinates (e.g. PC1, PC2).
        dominant: (B, T) dominant output at each step.
        pair: the two outputs ``(a, b)`` whose alternation defines a round trip.
    """
    c = np.asarray(coords, dtype=np.float64)
    d = np.asarray(dominant)
    if c.ndim != 3 or c.shape[-1] != 2 or d.shape != c.shape[:2]:
        raise ValueError(f"coords must be (B, T, 2) and dominant (B, T); got {c.shape} and {d.shape}")
    x, y = c[..., 0], c[..., 1]
    terms = 0.5 * (x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1])  # (B, T-1) shoelace terms about 0
    cum = np.concatenate([np.zeros((c.shape[0], 1)), np.cumsum(terms, axis=1)], axis=1)  # (B, T)
    out_traj, out_step = switch_times(d, pair)
    back_traj, back_step = switch_times(d, pair[::-1])
    # consecutive a -> b switches of the same trajectory bound a round trip
    same = out_traj[1:] == out_traj[:-1]
    tr, t0, t1 = out_traj[1:][same], out_step[:-1][same], out_step[1:][same]
    chord = 0.5 * (x[tr, t1] * y[tr, t0] - x[tr, t0] * y[tr, t1])  # closing the polygon t1 -> t0
    areas = cum[tr, t1] - cum[tr, t0] + chord
    total = float(areas.sum())
    sign = 1 if total >= 0 else -1
    same_sense = float(np.mean(np.sign(areas) == sign)) if areas.size else float("nan")
    return Rotation(sign, areas, same_sense, float(terms.sum() / terms.size),
                    c[out_traj, out_step], c[back_traj, back_step])


def switch_triggered_average(coords: np.ndarray, dominant: np.ndarray, pair: tuple[int, int], window: int = 15) -> np.ndarray:
    """Mean path around the switches ``a -> b``: (2 * window, 2), switch at index ``window``.

    Args:
        coords: (B, T, k) coordinates.
        dominant: (B, T) dominant outputs.
        pair: ``(a, b)``.
        window: steps kept before and after each switch (switches too close to an end are skipped).
    """
    c = np.asarray(coords, dtype=np.float64)
    traj, step = switch_times(dominant, pair)
    ok = (step >= window) & (step + window <= c.shape[1])
    if not ok.any():
        raise ValueError(f"no switch {pair[0]} -> {pair[1]} at least {window} steps from both ends")
    offsets = np.arange(-window, window)
    return c[traj[ok, None], step[ok, None] + offsets].mean(axis=0)


def orbit_radius(coords: np.ndarray) -> float:
    """RMS distance of (N, 2) plane coordinates from their own centroid."""
    c = np.asarray(coords, dtype=np.float64).reshape(-1, coords.shape[-1])
    return float(np.sqrt(((c - c.mean(axis=0)) ** 2).sum(axis=1).mean()))


class LinearFit(NamedTuple):
    """Least-squares line ``y = intercept + slope * x`` and its coefficient of determination."""

    slope: float
    intercept: float
    r2: float


def linear_fit(x: np.ndarray, y: np.ndarray) -> LinearFit:
    """Ordinary least squares of y on x (with intercept)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(f"need two 1-D arrays of equal length >= 3, got {x.shape} and {y.shape}")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return LinearFit(float(slope), float(intercept), r2)


class RadiusSweep(NamedTuple):
    """Orbit radius against the input-noise standard deviation.

    Fields:
        noise_scales: (S,) standard deviations s.
        radius: (S,) RMS distance from the run's own centroid in the nominal PC1-PC2 plane.
        radius_sem: (S,) standard error of ``radius`` across trajectories.
        fit_std: line fitted to radius against s.
        fit_var: line fitted to radius against s^2.
    """

    noise_scales: np.ndarray
    radius: np.ndarray
    radius_sem: np.ndarray
    fit_std: LinearFit
    fit_var: LinearFit


def radius_sweep(
    weights: RNNWeights,
    plane: PCA,
    noise_scales: Sequence[float],
    generator: torch.Generator,
    *,
    n_traj: int = 4,
    n_steps: int = 2000,
    burn_in: int = 500,
) -> RadiusSweep:
    """Orbit size for several noise scales, all in one batched run.

    Every trajectory is projected on the first two components of ``plane`` (the nominal
    run's PCA); the radius of a scale is the RMS distance from that scale's own centroid,
    per trajectory, then averaged over trajectories.
    """
    scales = np.asarray(noise_scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size < 3:
        raise ValueError("give at least 3 noise scales")
    run = driven_run(weights, n_steps, generator, n_traj=n_traj, burn_in=burn_in, noise_scale=scales)
    coords = plane.project(run.hidden)[..., :2].reshape(scales.size, n_traj, n_steps, 2)
    centred = coords - coords.mean(axis=2, keepdims=True)
    per_traj = np.sqrt((centred**2).sum(-1).mean(-1))  # (S, n_traj)
    radius = per_traj.mean(axis=1)
    sem = per_traj.std(axis=1, ddof=1) / math.sqrt(n_traj) if n_traj > 1 else np.zeros_like(radius)
    return RadiusSweep(scales, radius, sem, linear_fit(scales, radius), linear_fit(scales**2, radius))


def readout_alignment(W_out: np.ndarray, components: np.ndarray, outputs: Sequence[int] = (0, 2)) -> np.ndarray:
    """Norm of the projection of each unit readout vector ``W_out[k] / ||W_out[k]||`` on a plane.

    Args:
        W_out: (K, H).
        components: (2, H) orthonormal basis of the plane (e.g. PC1, PC2).
        outputs: which readout rows.

    Returns:
        (len(outputs),) values in [0, 1] (1: the readout lies in the plane).
    """
    w = np.asarray(W_out, dtype=np.float64)[list(outputs)]
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a readout vector is zero")
    return np.linalg.norm((w / norms) @ np.asarray(components, dtype=np.float64).T, axis=1)


class DriftField(NamedTuple):
    """The noise-averaged drift along driven trajectories, binned in a plane.

    For each visited state ``h_t`` (all but the last step of each trajectory), the drift is
    ``Fbar(h_t) - h_t`` (:func:`averaged_map`) and the noise is the residual
    ``h_{t+1} - Fbar(h_t)`` of the actual run (zero mean given ``h_t``, exactly). Both are
    projected on the plane's two axes and averaged per bin of the plane.

    Fields:
        x_edges, y_edges: (nx + 1,), (ny + 1,) bin edges in plane coordinates.
        count: (ny, nx) states per bin.
        u, v: (ny, nx) mean in-plane drift per bin (NaN where ``count < min_count``).
        drift: (ny, nx) length of the mean in-plane drift ``sqrt(u^2 + v^2)``.
        noise: (ny, nx) RMS length of the in-plane residual (the noise's step size in the plane).
        speed: (ny, nx) mean full-space drift length ``||Fbar(h) - h||`` (all H dimensions).
        residual_mean: (2,) mean in-plane residual over all states (should be ~0).
        residual_sem: (2,) its standard error (from the per-state residual spread).
    """

    x_edges: np.ndarray
    y_edges: np.ndarray
    count: np.ndarray
    u: np.ndarray
    v: np.ndarray
    drift: np.ndarray
    noise: np.ndarray
    speed: np.ndarray
    residual_mean: np.ndarray
    residual_sem: np.ndarray

    @property
    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Bin centres (x (nx,), y (ny,))."""
        return 0.5 * (self.x_edges[1:] + self.x_edges[:-1]), 0.5 * (self.y_edges[1:] + self.y_edges[:-1])

    @property
    def ratio(self) -> np.ndarray:
        """(ny, nx) in-plane drift / in-plane noise: < 1 noise-dominated, > 1 drift-dominated."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.drift / self.noise


def drift_field(
    weights: RNNWeights,
    hidden: np.ndarray,
    plane: PCA,
    noise_scale: float = 1.0,
    bins: int = 20,
    min_count: int = 10,
) -> DriftField:
    """Bin the states of driven trajectories in a plane; average drift and noise in each bin.

    The drift is evaluated at the states the network actually visits (a plane slice through
    the H-dimensional space would mostly lie where the network never goes).

    Args:
        weights: the network.
        hidden: (B, T, H) trajectories run at ``noise_scale``.
        plane: its first two components define the plane.
        noise_scale: input-noise standard deviation of the run.
        bins: bins per axis.
        min_count: bins with fewer states are NaN.
    """
    hid = _tensor(hidden, torch.float32)
    if hid.ndim != 3 or hid.shape[1] < 2:
        raise ValueError(f"hidden must be (B, T >= 2, H), got {tuple(hid.shape)}")
    x, nxt = hid[:, :-1].reshape(-1, hid.shape[-1]), hid[:, 1:].reshape(-1, hid.shape[-1])
    step = averaged_map(weights, noise_scale, dtype=torch.float32)
    with torch.no_grad():
        mean = step(x)
    axes = torch.from_numpy(plane.components[:2]).to(torch.float32)
    drift_xy = ((mean - x) @ axes.T).double().numpy()
    resid_xy = ((nxt - mean) @ axes.T).double().numpy()
    speed = (mean - x).norm(dim=1).double().numpy()
    xy = plane.project(x)[:, :2]
    xe = np.linspace(xy[:, 0].min(), xy[:, 0].max(), bins + 1)
    ye = np.linspace(xy[:, 1].min(), xy[:, 1].max(), bins + 1)
    ix = np.clip(np.searchsorted(xe, xy[:, 0], side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ye, xy[:, 1], side="right") - 1, 0, bins - 1)
    flat = iy * bins + ix
    count = np.bincount(flat, minlength=bins * bins).astype(np.float64)

    def avg(values: np.ndarray) -> np.ndarray:
        total = np.bincount(flat, weights=values, minlength=bins * bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(count >= min_count, total / count, np.nan)
        return out.reshape(bins, bins)

    u, v = avg(drift_xy[:, 0]), avg(drift_xy[:, 1])
    noise = np.sqrt(avg((resid_xy**2).sum(axis=1)))
    sem = resid_xy.std(axis=0, ddof=1) / math.sqrt(len(resid_xy))
    return DriftField(xe, ye, count.reshape(bins, bins).astype(np.int64), u, v, np.hypot(u, v), noise, avg(speed),
                      resid_xy.mean(axis=0), sem)


# =============================================================================== training bifurcation

def eigen_counts(eigvals: torch.Tensor | np.ndarray, re_tol: float = 0.1, im_min: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Per spectrum: number of eigenvalues with ``|lambda| > 1`` and of near-critical complex pairs.

    A near-critical complex pair is counted once, through its member whose Mobius image
    ``m = (lambda - 1) / (lambda + 1)`` has ``|Re m| < re_tol`` and ``Im m > im_min``
    (``|lambda| = 1`` maps to ``Re m = 0``; ``Im m > 0`` picks the upper member).

    Args:
        eigvals: (N, k) complex eigenvalues (e.g. from :func:`local_eigvals`).

    Returns:
        ``(n_unstable (N,), n_complex_pairs (N,))`` int arrays.
    """
    eig = torch.as_tensor(eigvals).to(torch.complex128)
    n_unstable = (eig.abs() > 1.0).sum(-1)
    denom = eig + 1.0
    ok = denom.abs() > 1e-12
    m = (eig - 1.0) / torch.where(ok, denom, torch.ones_like(denom))
    pair = ok & (m.real.abs() < re_tol) & (m.imag > im_min)
    return n_unstable.numpy(), pair.sum(-1).numpy()


class TrainingDynamics(NamedTuple):
    """Dynamics of each training snapshot under its own noisy run.

    Fields:
        epochs: (S,) snapshot epochs.
        transition_rate: (S,) 1 / mean dwell time of the dominant (argmax) output, i.e. the
            number of runs of equal dominant output divided by the number of steps.
        unstable_fraction: (S,) fraction of sampled steps whose local Jacobian
            ``diag(1[pre > 0]) W_rec`` has an eigenvalue with ``|lambda| > 1``.
        complex_fraction: (S,) fraction of sampled steps with at least one near-critical
            complex pair (see :func:`eigen_counts`).
        mean_unstable: (S,) mean number of unstable eigenvalues per sampled step.
        mean_complex_pairs: (S,) mean number of near-critical complex pairs per sampled step.
        hidden_norm: (S,) mean ``||h_t||`` of the run (inf if it diverged).
        growth: (S,) mean ``||h_t||`` over the last tenth of the steps divided by that over the
            first tenth (~1 for bounded activity; huge when the activity explodes).
        diverged: (S,) True where the activity overflowed (non-finite states): the snapshot's
            noisy dynamics is unstable; its ``transition_rate`` is then NaN.
    """

    epochs: np.ndarray
    transition_rate: np.ndarray
    unstable_fraction: np.ndarray
    complex_fraction: np.ndarray
    mean_unstable: np.ndarray
    mean_complex_pairs: np.ndarray
    hidden_norm: np.ndarray
    growth: np.ndarray
    diverged: np.ndarray


def snapshot_dynamics(
    snapshots,
    generator: torch.Generator,
    *,
    n_traj: int = 10,
    n_steps: int = 500,
    burn_in: int = 100,
    n_eig: int = 100,
    noise_scale: float = 1.0,
    re_tol: float = 0.1,
    im_min: float = 0.05,
) -> TrainingDynamics:
    """Run every snapshot in one batched recurrence and measure its dynamics.

    Each snapshot gets ``n_traj`` trajectories of ``n_steps`` steps after a burn-in from 0
    (``n_traj * n_steps`` steps in all; the paper used one 5,000-step run). Eigenvalues are
    computed at ``n_eig`` steps per snapshot, evenly spaced over all its steps.

    Args:
        snapshots: a :class:`hmmrnn.checkpoints.Snapshots` (epochs, W_in, W_rec, W_out stacked).
        generator: torch generator for the noise.
    """
    if n_traj < 1 or n_steps < 2 or n_eig < 1 or burn_in < 0:
        raise ValueError("need n_traj >= 1, n_steps >= 2, n_eig >= 1, burn_in >= 0")
    w_in = torch.from_numpy(np.asarray(snapshots.W_in, dtype=np.float32))
    w_rec = torch.from_numpy(np.asarray(snapshots.W_rec, dtype=np.float32))
    w_out = torch.from_numpy(np.asarray(snapshots.W_out, dtype=np.float32))
    s_count, h_dim, d_dim = w_in.shape
    with torch.no_grad():
        x = torch.randn(s_count, n_traj, burn_in + n_steps, d_dim, generator=generator) * noise_scale
        hidden = _simulate(w_in, w_rec, x, torch.zeros(s_count, n_traj, h_dim))[:, :, burn_in:]  # (S, B, T, H)
        logits = hidden @ w_out.transpose(-1, -2).unsqueeze(1)
    dom = logits.argmax(-1).numpy()  # (S, B, T)
    diverged = (~torch.isfinite(hidden)).flatten(1).any(1).numpy()
    runs = n_traj + (dom[..., 1:] != dom[..., :-1]).sum(axis=(1, 2))  # runs of equal dominant output
    rate = np.where(diverged, np.nan, runs / (n_traj * n_steps))
    flat = hidden.reshape(s_count, n_traj * n_steps, h_dim)
    norms = hidden.double().norm(dim=-1)  # (S, B, T); float64: float32 squares overflow first
    tenth = max(n_steps // 10, 1)
    pick = np.linspace(0, n_traj * n_steps - 1, min(n_eig, n_traj * n_steps)).round().astype(np.int64)
    active = flat[:, pick] > 0  # (S, n, H)
    counts = [eigen_counts(local_eigvals(w_rec[i], active[i]), re_tol, im_min) for i in range(s_count)]
    n_unst = np.stack([c[0] for c in counts])
    n_pair = np.stack([c[1] for c in counts])
    return TrainingDynamics(
        epochs=np.asarray(snapshots.epochs),
        transition_rate=rate,
        unstable_fraction=(n_unst > 0).mean(axis=1),
        complex_fraction=(n_pair > 0).mean(axis=1),
        mean_unstable=n_unst.mean(axis=1),
        mean_complex_pairs=n_pair.mean(axis=1),
        hidden_norm=norms.mean(dim=(1, 2)).numpy(),
        growth=(norms[..., -tenth:].mean(dim=(1, 2)) / norms[..., :tenth].mean(dim=(1, 2)).clamp_min(1e-300)).numpy(),
        diverged=diverged,
    )


def _nanmedian_rows(windows: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (NaN for an all-NaN row), without numpy's all-NaN warning."""
    x = np.where(np.isfinite(windows), windows, np.nan)
    srt = np.sort(x, axis=1)  # NaN sorts last
    n = np.isfinite(x).sum(axis=1)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, np.maximum(n // 2, 0)[:, None], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


class Transition(NamedTuple):
    """A drop detected in a curve by the midpoint rule (see :func:`detect_transition`).

    Fields:
        epoch: first epoch after the early window where the (smoothed) curve has crossed
            ``threshold`` towards the final level (NaN if never).
        early_level: median of the curve over the early window.
        final_level: median over the last ``final_count`` points.
        threshold: midpoint of the two levels.
    """

    epoch: float
    early_level: float
    final_level: float
    threshold: float


def detect_transition(
    epochs: Sequence[float],
    values: Sequence[float],
    early: tuple[float, float] = (10, 30),
    final_count: int = 5,
    smooth: int = 1,
) -> Transition:
    """Locate a drop by the midpoint rule.

    Rule: the early level is the median of ``values`` over epochs in ``early`` (inclusive),
    the final level the median of the last ``final_count`` values, the threshold their
    midpoint; the transition epoch is the first epoch after the early window at which the
    running median of ``smooth`` consecutive values (centred; 1 = none) has crossed the
    threshold (fallen below it if the final level is lower, risen above it otherwise).
    NaN values (e.g. a snapshot whose activity diverged) are skipped.
    """
    e = np.asarray(epochs, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if e.shape != v.shape or e.ndim != 1:
        raise ValueError(f"epochs and values must be 1-D and equal length, got {e.shape}, {v.shape}")
    if smooth < 1 or final_count < 1:
        raise ValueError("smooth and final_count must be >= 1")
    in_early = (e >= early[0]) & (e <= early[1])
    if not in_early.any():
        raise ValueError(f"no epochs in the early window {early}")
    if len(v) < final_count:
        raise ValueError(f"only {len(v)} values for final_count={final_count}")
    finite = np.isfinite(v)
    if not finite[in_early].any() or not finite[-final_count:].any():
        raise ValueError("the early window or the last values are all NaN")
    early_level = float(np.nanmedian(v[in_early]))
    final_level = float(np.nanmedian(v[-final_count:]))
    threshold = 0.5 * (early_level + final_level)
    if smooth > 1:
        half = smooth // 2
        padded = np.pad(v, (half, smooth - 1 - half), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, smooth)
        v = _nanmedian_rows(windows)
    with np.errstate(invalid="ignore"):
        crossed = v < threshold if final_level <= early_level else v > threshold  # NaN: never
    after = (e > early[1]) & crossed
    epoch = float(e[np.argmax(after)]) if after.any() else float("nan")
    return Transition(epoch, early_level, final_level, threshold)
