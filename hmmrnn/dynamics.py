"""Global dynamics of the noise-driven ReLU RNN (PAPER.md §5-6), measured rather than assumed.

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
3. Orbits: batched driven runs (:func:`driven_run`), PCA (:func:`pca`), the sense of
   rotation (:func:`rotation`), the orbit radius against the noise scale
   (:func:`radius_sweep`) and the alignment of the readout with the orbit plane
   (:func:`readout_alignment`).
4. The training bifurcation from weight snapshots (:func:`snapshot_dynamics`,
   :func:`detect_transition`).

Shapes: ``H`` hidden units, ``D`` input dimensions, ``K`` outputs, ``B`` trajectories,
``T`` time steps, ``P`` points, ``S`` snapshots or noise scales.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .model import RNNWeights

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
    h = np.asarray(h.detach().cpu().numpy() if isinstance(h, torch.Tensor) else h, dtype=np.float64)
    _check_states(h, "h")
    mu = h @ np.asarray(weights.W_rec, dtype=np.float64).T
    sigma = np.broadcast_to(_input_std(weights, noise_scale), mu.shape)
    out_mean = np.maximum(mu, 0.0)
    out_var = np.zeros_like(mu)
    pos = sigma > 0
    if np.any(pos):
        m, s = mu[pos], sigma[pos]
        z = m / s
        cdf = torch.special.ndtr(torch.from_numpy(z)).numpy()
        pdf = np.exp(-0.5 * z * z) / _SQRT_2PI
        mean = m * cdf + s * pdf
        second = (m * m + s * s) * cdf + m * s * pdf
        out_mean[pos] = mean
        out_var[pos] = np.maximum(second - mean * mean, 0.0)
    return out_mean, out_var


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
    dtype: torch.dtype = torch.float64,
) -> FixedPoints:
    """Find fixed and slow points of a one-step map from many initial states at once.

    Minimises ``q(h) = ||F(h) - h||^2 / 2`` for all initial states in one batched problem
    (Adam, learning rate decaying geometrically from ``lr`` to ``final_lr``; states do not
    interact because Adam is elementwise), then polishes each point with up to
    ``newton_steps`` Newton steps ``h <- h - (J - I)^{-1} (F(h) - h)``, each accepted only if it
    lowers that point's ``q``. Points closer than ``merge_tol`` times the median norm of the
    initial states (or ``merge_tol`` itself if that norm is below 1) are merged, keeping the
    slowest.

    Args:
        step_map: (B, H) -> (B, H), applied row by row, differentiable by torch.
        initial_states: (N, H) starting points (e.g. states of a driven run).
        n_iter: Adam iterations (0 skips the gradient stage).
        lr, final_lr: first and last Adam learning rate.
        newton_steps: Newton polishing steps (0 skips).
        merge_tol: relative distance under which two points are duplicates.
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

    eye = torch.eye(x.shape[1], dtype=dtype)
    with torch.no_grad():
        q = _speed(step_map, x)
    for _ in range(newton_steps):
        jac = jacobian(step_map, x, dtype)
        with torch.no_grad():
            residual = step_map(x) - x
            delta = torch.linalg.lstsq(jac - eye, residual.unsqueeze(-1)).solution.squeeze(-1)
            candidate = x - delta
            q_new = _speed(step_map, candidate)
            better = torch.isfinite(q_new) & (q_new < q)
            if not torch.any(better):
                break
            x = torch.where(better[:, None], candidate, x)
            q = torch.where(better, q_new, q)

    points = x.numpy()
    speeds = q.numpy()
    scale = max(float(np.median(np.linalg.norm(x0.numpy(), axis=1))), 1.0)
    keep, sizes = _merge(points, speeds, merge_tol * scale)
    xs = x[keep]
    jac = jacobian(step_map, xs, dtype)
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
    with torch.no_grad():
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

    Fields:
        n_active: (Q,) active units in each pattern.
        spectral_radius: (Q,) largest ``|lambda(A_m)|``.
        n_unstable: (Q,) eigenvalues with ``|lambda| > 1``.
        gap_to_one: (Q,) ``min |lambda - 1|``: distance of the spectrum from the eigenvalue 1 that
            a non-zero fixed point would need.
        sigma_min: (Q,) smallest singular value of ``I - A_m`` (0 iff a fixed ray exists).
        ray_in_region: (Q,) True where ``I - A_m`` is singular (``sigma_min <= tol``) *and* its
            null vector (either sign) satisfies the pattern (``h >= 0``, ``h = 0`` on inactive
            units, ``W_rec h > 0`` exactly on active ones): a genuine ray of fixed points.
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
    is a set of fixed points if it lies inside the region. Batched over patterns (float64).

    Args:
        W_rec: (H, H).
        patterns: (Q, H) bool.
        tol: singular values at or below ``tol`` count as zero.
    """
    pats = np.asarray(patterns, dtype=bool)
    _check_states(pats, "patterns")
    w = torch.tensor(np.asarray(W_rec), dtype=torch.float64)
    if w.shape != (pats.shape[1], pats.shape[1]):
        raise ValueError(f"W_rec {tuple(w.shape)} does not match patterns with {pats.shape[1]} units")
    m = torch.from_numpy(pats)
    a = relu_jacobian(w, m)  # (Q, H, H)
    eig = torch.linalg.eigvals(a)
    mod = eig.abs()
    eye = torch.eye(w.shape[0], dtype=torch.float64)
    u, s, vh = torch.linalg.svd(eye - a)
    sigma_min = s[:, -1]
    v = vh[:, -1, :]  # (Q, H) null (or nearest-null) vector
    in_region = torch.zeros(len(pats), dtype=torch.bool)
    for sign in (1.0, -1.0):
        h = sign * v
        pre = h @ w.T
        scale = h.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
        ok = (
            (h >= -tol * scale).all(1)
            & (m | (h.abs() <= tol * scale)).all(1)  # zero on inactive units
            & torch.where(m, pre > tol * scale, pre <= tol * scale).all(1)  # the pattern's signs
        )
        in_region |= ok
    return RegionAnalysis(
        n_active=pats.sum(axis=1),
        spectral_radius=mod.amax(dim=1).numpy(),
        n_unstable=(mod > 1.0).sum(dim=1).numpy(),
        gap_to_one=(eig - 1.0).abs().amin(dim=1).numpy(),
        sigma_min=sigma_min.numpy(),
        ray_in_region=(in_region & (sigma_min <= tol)).numpy(),
    )


# =============================================================================== driven runs and orbits

class DrivenRun(NamedTuple):
    """Noise-driven trajectories after a burn-in.

    Fields:
        hidden: (B, T, H) float32 hidden states.
        logits: (B, T, K) float32 readout.
        outputs: (B, T) int64 sampled outputs (categorical draws from softmax(logits)).
        noise_scale: (B,) input-noise standard deviation of each trajectory.
    """

    hidden: np.ndarray
    logits: np.ndarray
    outputs: np.ndarray
    noise_scale: np.ndarray

    @property
    def dominant(self) -> np.ndarray:
        """(B, T) argmax of the logits (the most probable output)."""
        return self.logits.argmax(axis=-1)

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
        outputs = (logits - torch.log(exponential)).argmax(-1)  # Gumbel-max: a softmax(logits) draw
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
        return (np.asarray(states, dtype=np.float64) - self.mean) @ self.components.T


def pca(states: np.ndarray, n_components: int = 3) -> PCA:
    """PCA of (N, H) states (float64 eigendecomposition of the covariance).

    Signs are fixed so that each component's largest-magnitude loading is positive
    (see :func:`orient_pcs` for a readout-based orientation).
    """
    x = np.asarray(states, dtype=np.float64)
    _check_states(x)
    if not 1 <= n_components <= x.shape[1]:
        raise ValueError(f"n_components must be in 1..{x.shape[1]}, got {n_components}")
    if x.shape[0] < 2:
        raise ValueError("PCA needs at least 2 states")
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False, bias=True)
    vals, vecs = np.linalg.eigh(cov)
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
    """Sense and regularity of rotation in a plane.

    Fields:
        angular_velocity: mean step-to-step angle change (radians per step, wrapped to
            (-pi, pi]); positive = counter-clockwise in (PC1, PC2).
        sign: +1 (counter-clockwise) or -1 (clockwise), the sign of ``angular_velocity``.
        windings: (B,) net turns per trajectory (unwrapped angle change / 2 pi).
        switches: (B,) changes of the dominant output between the two outputs of interest.
        loop_fraction: ``sum(|windings|) / (sum(switches) / 2)``: 1 if every out-and-back
            trip between the two outputs is one full turn, 0 if it goes back the way it came.
        same_sense: fraction of trajectories whose net winding has the overall sign.
    """

    angular_velocity: float
    sign: int
    windings: np.ndarray
    switches: np.ndarray
    loop_fraction: float
    same_sense: float


def rotation(coords: np.ndarray, dominant: np.ndarray, pair: tuple[int, int] = (0, 2)) -> Rotation:
    """Measure the rotation of trajectories in a plane.

    Args:
        coords: (B, T, 2) plane coordinates (e.g. PC1, PC2), centred on the point to turn around.
        dominant: (B, T) dominant output at each step.
        pair: the two outputs whose alternation defines a round trip.
    """
    c = np.asarray(coords, dtype=np.float64)
    d = np.asarray(dominant)
    if c.ndim != 3 or c.shape[-1] != 2 or d.shape != c.shape[:2]:
        raise ValueError(f"coords must be (B, T, 2) and dominant (B, T); got {c.shape} and {d.shape}")
    theta = np.arctan2(c[..., 1], c[..., 0])
    dtheta = np.angle(np.exp(1j * np.diff(theta, axis=1)))
    windings = dtheta.sum(axis=1) / (2 * np.pi)
    # switches between the pair, ignoring visits to other outputs in between: carry the last
    # pair output seen forward over steps spent at other outputs, then count changes
    in_pair = np.isin(d, pair)
    last = np.maximum.accumulate(np.where(in_pair, np.arange(d.shape[1]), -1), axis=1)
    carried = np.where(last >= 0, np.take_along_axis(d, np.maximum(last, 0), axis=1), -1)
    valid = (carried[:, 1:] >= 0) & (carried[:, :-1] >= 0)
    switches = ((carried[:, 1:] != carried[:, :-1]) & valid).sum(axis=1).astype(np.int64)
    omega = float(dtheta.mean())
    sign = 1 if omega >= 0 else -1
    total_switches = switches.sum()
    loop = float(np.abs(windings).sum() / (total_switches / 2)) if total_switches else float("nan")
    return Rotation(omega, sign, windings, switches, loop, float(np.mean(np.sign(windings) == sign)))


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
    """The averaged drift on the states a run visits, binned in a plane.

    Fields:
        x_edges, y_edges: (nx + 1,), (ny + 1,) bin edges in plane coordinates.
        speed: (ny, nx) mean ``||Fbar(h) - h||`` of the states in each bin (NaN if empty).
        u, v: (ny, nx) mean drift ``Fbar(h) - h`` projected on the plane axes.
        count: (ny, nx) states per bin.
        noise_std: (ny, nx) mean sqrt of the summed conditional variance, ``sqrt(tr Var[h' | h])``.
    """

    x_edges: np.ndarray
    y_edges: np.ndarray
    speed: np.ndarray
    u: np.ndarray
    v: np.ndarray
    count: np.ndarray
    noise_std: np.ndarray

    @property
    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Bin centres (x (nx,), y (ny,))."""
        return 0.5 * (self.x_edges[1:] + self.x_edges[:-1]), 0.5 * (self.y_edges[1:] + self.y_edges[:-1])


def drift_field(
    weights: RNNWeights, states: np.ndarray, plane: PCA, noise_scale: float = 1.0, bins: int = 24, min_count: int = 5
) -> DriftField:
    """Bin visited states in the plane and average the noise-averaged drift in each bin.

    The drift is evaluated at the states the network actually visits (a plane slice through
    the H-dimensional space would mostly lie where the network never goes). Bins with fewer
    than ``min_count`` states are NaN.
    """
    x = np.asarray(states, dtype=np.float64)
    _check_states(x)
    mean, var = conditional_moments(weights, x, noise_scale)
    drift = mean - x
    xy = plane.project(x)[:, :2]
    duv = drift @ plane.components[:2].T
    speed = np.linalg.norm(drift, axis=1)
    noise = np.sqrt(var.sum(axis=1))
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

    return DriftField(xe, ye, avg(speed), avg(duv[:, 0]), avg(duv[:, 1]), count.reshape(bins, bins).astype(np.int64), avg(noise))


# =============================================================================== training bifurcation

def eigen_counts(jacobians: torch.Tensor, re_tol: float = 0.1, im_min: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Per matrix: number of eigenvalues with ``|lambda| > 1`` and of near-critical complex pairs.

    A near-critical complex pair is counted once, through its member whose Mobius image
    ``m = (lambda - 1) / (lambda + 1)`` has ``|Re m| < re_tol`` and ``Im m > im_min``
    (``|lambda| = 1`` maps to ``Re m = 0``; ``Im m > 0`` picks the upper member).

    Args:
        jacobians: (N, H, H).

    Returns:
        ``(n_unstable (N,), n_complex_pairs (N,))`` int arrays.
    """
    eig = torch.linalg.eigvals(jacobians).to(torch.complex128)
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
        hidden_norm: (S,) mean ``||h_t||`` of the run.
    """

    epochs: np.ndarray
    transition_rate: np.ndarray
    unstable_fraction: np.ndarray
    complex_fraction: np.ndarray
    mean_unstable: np.ndarray
    mean_complex_pairs: np.ndarray
    hidden_norm: np.ndarray


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
    runs = 1 + (dom[..., 1:] != dom[..., :-1]).sum(axis=(1, 2)) + (n_traj - 1)
    rate = runs / (n_traj * n_steps)
    flat = hidden.reshape(s_count, n_traj * n_steps, h_dim)
    pick = np.linspace(0, n_traj * n_steps - 1, min(n_eig, n_traj * n_steps)).round().astype(np.int64)
    active = flat[:, pick] > 0  # (S, n, H)
    counts = [eigen_counts(relu_jacobian(w_rec[i], active[i]), re_tol, im_min) for i in range(s_count)]  # per snapshot: bounded memory
    n_unst = np.stack([c[0] for c in counts])
    n_pair = np.stack([c[1] for c in counts])
    return TrainingDynamics(
        epochs=np.asarray(snapshots.epochs),
        transition_rate=rate,
        unstable_fraction=(n_unst > 0).mean(axis=1),
        complex_fraction=(n_pair > 0).mean(axis=1),
        mean_unstable=n_unst.mean(axis=1),
        mean_complex_pairs=n_pair.mean(axis=1),
        hidden_norm=flat.norm(dim=-1).mean(dim=1).numpy(),
    )


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
    early_level = float(np.median(v[in_early]))
    final_level = float(np.median(v[-final_count:]))
    threshold = 0.5 * (early_level + final_level)
    if smooth > 1:
        half = smooth // 2
        padded = np.pad(v, (half, smooth - 1 - half), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, smooth)
        v = np.median(windows, axis=1)
    crossed = v < threshold if final_level <= early_level else v > threshold
    after = (e > early[1]) & crossed
    epoch = float(e[np.argmax(after)]) if after.any() else float("nan")
    return Transition(epoch, early_level, final_level, threshold)
