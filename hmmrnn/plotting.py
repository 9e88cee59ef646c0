"""One plotting style for the whole book, and plot functions that take arrays and an ``ax``.

Every function here has the form ``plot_*(ax, arrays..., **options) -> ax``: it draws on the
given axes, returns them, and knows nothing about models, checkpoints or HMM objects (pass
``hmm.transition``, not ``hmm``). Chapters call :func:`use_style` once and use the sizes in
:data:`FIGSIZE`, so every figure of the book has the same look.

Colours (all from the Okabe-Ito palette, which stays distinguishable for the common forms of
colour blindness):

* :data:`OUTPUT_COLORS` -- one fixed colour per output, the same in every chapter: output 0
  blue, output 1 vermillion (the rare middle output of the linear chains, so that it stands
  out wherever it appears), output 2 bluish green;
* :data:`REGION_COLORS` -- the regions of state space of the later chapters: cluster,
  kick-zone, transition;
* :data:`SOURCE_COLORS` -- where a number comes from in comparisons: the paper, the exact
  (analytic) value, a sample of the HMM, a trained network.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Circle, FancyArrowPatch, Patch, Wedge

__all__ = [
    "OKABE_ITO",
    "OUTPUT_COLORS",
    "REGION_COLORS",
    "SOURCE_COLORS",
    "FIGSIZE",
    "STYLE",
    "use_style",
    "output_color",
    "output_legend_handles",
    "plot_transition_graph",
    "plot_matrix",
    "plot_output_raster",
    "plot_grouped_bars",
    "plot_loss_curve",
]

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
}
"""The Okabe-Ito colour-blind-safe palette (plus a neutral grey)."""

OUTPUT_COLORS: tuple[str, ...] = (OKABE_ITO["blue"], OKABE_ITO["vermillion"], OKABE_ITO["bluish_green"])
"""Colour of output 0, 1, 2 in every chapter (output 1 = the rare middle output of the linear chains)."""

REGION_COLORS: dict[str, str] = {
    "cluster": OKABE_ITO["sky_blue"],
    "kick_zone": OKABE_ITO["orange"],
    "transition": OKABE_ITO["reddish_purple"],
}
"""Colour of each class of state (later chapters): slow cluster, kick-zone, fast transition."""

SOURCE_COLORS: dict[str, str] = {
    "paper": "#BBBBBB",
    "analytic": "#4D4D4D",
    "sampled": OKABE_ITO["sky_blue"],
    "rnn": OKABE_ITO["reddish_purple"],
}
"""Colour of each source of a number in comparison plots."""

FIGSIZE: dict[str, tuple[float, float]] = {
    "single": (4.5, 3.2),
    "wide": (9.0, 3.2),
    "grid": (9.0, 5.6),
    "tall": (9.0, 7.5),
}
"""Fixed figure sizes in inches: one panel, a row of panels, a 2-row grid, a 3-row grid."""

STYLE: dict[str, object] = {
    "figure.figsize": FIGSIZE["single"],
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "lines.linewidth": 1.5,
    "image.cmap": "viridis",
    "axes.prop_cycle": mpl.cycler(
        color=[OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue", "black")]
    ),
}
"""The rcParams that :func:`use_style` sets."""


def use_style() -> None:
    """Apply the book's style (:data:`STYLE`) to matplotlib's global rcParams."""
    mpl.rcParams.update(STYLE)


def output_color(k: int) -> str:
    """The fixed colour of output ``k`` (:data:`OUTPUT_COLORS`, grey beyond them)."""
    return OUTPUT_COLORS[k] if 0 <= k < len(OUTPUT_COLORS) else OKABE_ITO["grey"]


def output_legend_handles(n_outputs: int = 3, labels: Sequence[str] | None = None) -> list[Patch]:
    """Legend patches "output 0", "output 1", ... in the fixed output colours."""
    labels = labels or [f"output {k}" for k in range(n_outputs)]
    return [Patch(facecolor=output_color(k), label=labels[k]) for k in range(n_outputs)]


# --------------------------------------------------------------------------- transition graph

def _is_chain(transition: np.ndarray, min_prob: float) -> bool:
    idx = np.argwhere(transition > min_prob)
    return bool(np.all(np.abs(idx[:, 0] - idx[:, 1]) <= 1))


def _node_positions(n: int, layout: str) -> np.ndarray:
    if layout == "line":
        return np.stack([np.arange(n, dtype=float) * 1.6, np.zeros(n)], axis=1)
    angles = np.pi / 2 - 2 * np.pi * np.arange(n) / n  # first node on top, clockwise
    radius = 1.35 if n <= 3 else 1.5
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def plot_transition_graph(
    ax: plt.Axes,
    transition: np.ndarray,
    emission: np.ndarray | None = None,
    *,
    layout: str = "auto",
    state_labels: Sequence[str] | None = None,
    min_prob: float = 1e-9,
    node_radius: float = 0.32,
    fmt: str = "{:.3g}",
    max_width: float = 4.0,
    label_size: float = 8.0,
) -> plt.Axes:
    """Draw a Markov chain: states as nodes, arrows ``i -> j`` with width and label ``T[i, j]``.

    Args:
        ax: axes to draw on (its aspect is set equal and its frame hidden).
        transition: (M, M) row-stochastic matrix, ``transition[i, j] = P(j | i)``.
        emission: optional (M, K) emission matrix: each node is then a ring divided in the
            proportions of its emission probabilities, in :data:`OUTPUT_COLORS`.
        layout: ``"line"`` (states in a row), ``"circle"``, or ``"auto"`` (a line when only
            neighbours are connected, a circle otherwise).
        state_labels: text inside the nodes (default ``"0"``, ``"1"``, ...).
        min_prob: arrows of smaller probability are not drawn.
        node_radius: node radius in data units (nodes are 1.6 apart on a line).
        fmt: format of the probability labels.
        max_width: line width (points) of an arrow of probability 1.
        label_size: font size of the probability labels.

    Returns:
        ax
    """
    transition = np.asarray(transition, dtype=float)
    n = transition.shape[0]
    if transition.shape != (n, n):
        raise ValueError(f"transition must be square, got shape {transition.shape}")
    if emission is not None:
        emission = np.asarray(emission, dtype=float)
        if emission.ndim != 2 or emission.shape[0] != n:
            raise ValueError(f"emission must have shape ({n}, K), got {emission.shape}")
    if layout == "auto":
        layout = "line" if _is_chain(transition, min_prob) else "circle"
    if layout not in ("line", "circle"):
        raise ValueError(f"layout must be 'line', 'circle' or 'auto', got {layout!r}")
    pos = _node_positions(n, layout)
    center = pos.mean(axis=0)
    labels = list(state_labels) if state_labels is not None else [str(i) for i in range(n)]
    r = node_radius

    def width(p: float) -> float:
        return 0.4 + max_width * p

    # arrows between states
    for i in range(n):
        for j in range(n):
            p = transition[i, j]
            if i == j or p <= min_prob:
                continue
            a, b = pos[i], pos[j]
            d = b - a
            dist = float(np.hypot(*d))
            u = d / dist
            rad = 0.25 if layout == "circle" else 0.25 + 0.15 * (abs(i - j) - 1)
            # start/end on the node rims, rotated toward the side the arc bends to
            normal = np.array([u[1], -u[0]])
            start = a + r * (0.87 * u + 0.5 * normal)
            end = b + r * (-0.87 * u + 0.5 * normal)
            arrow = FancyArrowPatch(
                start, end, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                mutation_scale=8 + 2 * width(p), lw=width(p), color="#333333", shrinkA=0, shrinkB=0, zorder=1,
            )
            ax.add_patch(arrow)
            # a point of the quadratic Bezier curve that arc3 draws (control point as matplotlib's)
            seg = end - start
            control = (start + end) / 2 + rad * np.array([seg[1], -seg[0]])
            t = 0.5 if layout == "line" else 0.35
            point = (1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end
            if layout == "line":  # beside the arc, away from the row of nodes
                ax.text(*(point + 0.17 * normal), fmt.format(p), ha="center", va="center", fontsize=label_size, zorder=3)
            else:  # on the arc
                ax.text(*point, fmt.format(p), ha="center", va="center", fontsize=label_size, zorder=3,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))

    # self-loops, drawn away from the layout's centre (above the nodes on a line)
    for i in range(n):
        p = transition[i, i]
        if p <= min_prob:
            continue
        out = pos[i] - center
        out = np.array([0.0, 1.0]) if layout == "line" or np.hypot(*out) < 1e-9 else out / np.hypot(*out)
        side = np.array([-out[1], out[0]])
        start = pos[i] + r * (0.7 * out + 0.71 * side)
        end = pos[i] + r * (0.7 * out - 0.71 * side)
        loop = FancyArrowPatch(
            start, end, connectionstyle="arc3,rad=-1.9", arrowstyle="-|>",
            mutation_scale=8 + 2 * width(p), lw=width(p), color="#333333", shrinkA=0, shrinkB=0, zorder=1,
        )
        ax.add_patch(loop)
        ax.text(*(pos[i] + out * (r + 0.62)), fmt.format(p), ha="center", va="center", fontsize=label_size, zorder=3)

    # nodes: white disc, emission ring, label
    for i in range(n):
        ax.add_patch(Circle(pos[i], r, fc="white", ec="#333333", lw=1.0, zorder=4))
        if emission is not None:
            theta = 90.0
            for k, e in enumerate(emission[i]):
                if e <= 0:
                    continue
                span = 360.0 * e / emission[i].sum()
                ax.add_patch(Wedge(pos[i], r, theta - span, theta, width=0.38 * r, fc=output_color(k), ec="none", zorder=5))
                theta -= span
        ax.text(*pos[i], labels[i], ha="center", va="center", fontsize=9, fontweight="bold", zorder=6)

    pad = r + 0.95
    ax.set_xlim(pos[:, 0].min() - pad, pos[:, 0].max() + pad)
    low = pos[:, 1].min() - (0.75 if layout == "line" else pad)
    ax.set_ylim(low, pos[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


# --------------------------------------------------------------------------- matrices and rasters

def plot_matrix(
    ax: plt.Axes,
    matrix: np.ndarray,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    fmt: str = "{:.3f}",
    cmap: str = "Blues",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    annotate: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    fontsize: float = 8.0,
) -> plt.Axes:
    """Heatmap of a matrix with each cell's value written in it.

    Args:
        ax: axes to draw on.
        matrix: (R, C) values; NaN cells are left blank.
        row_labels, col_labels: tick labels (default the indices).
        fmt: format of the annotations.
        cmap, vmin, vmax: colour map and its range (default 0..1, for probabilities;
            None takes the data's range).
        annotate: write the values into the cells.
        xlabel, ylabel, title: axis texts.
        fontsize: size of the annotations.

    Returns:
        ax
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {matrix.shape}")
    lo = np.nanmin(matrix) if vmin is None else vmin
    hi = np.nanmax(matrix) if vmax is None else vmax
    ax.imshow(matrix, cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    n_rows, n_cols = matrix.shape
    ax.set_xticks(range(n_cols), col_labels if col_labels is not None else [str(c) for c in range(n_cols)])
    ax.set_yticks(range(n_rows), row_labels if row_labels is not None else [str(r) for r in range(n_rows)])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if annotate:
        span = (hi - lo) if hi > lo else 1.0
        for r in range(n_rows):
            for c in range(n_cols):
                v = matrix[r, c]
                if np.isnan(v):
                    continue
                dark = (v - lo) / span > 0.6
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                        color="white" if dark else "black")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def plot_output_raster(
    ax: plt.Axes,
    outputs: np.ndarray,
    *,
    n_outputs: int = 3,
    xlabel: str = "time step",
    ylabel: str = "sequence",
    title: str | None = None,
    legend: bool = False,
) -> plt.Axes:
    """Raster of output sequences: one row per sequence, one column per step, coloured by output.

    Args:
        ax: axes to draw on.
        outputs: (n, L) integer outputs in ``[0, n_outputs)``.
        n_outputs: number of outputs K (fixes the colour map: output k is always
            ``OUTPUT_COLORS[k]``).
        xlabel, ylabel, title: axis texts.
        legend: add an "output k" legend to the right.

    Returns:
        ax
    """
    outputs = np.asarray(outputs)
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be (n, L), got shape {outputs.shape}")
    if outputs.size and (outputs.min() < 0 or outputs.max() >= n_outputs):
        raise ValueError(f"outputs must lie in [0, {n_outputs})")
    cmap = ListedColormap([output_color(k) for k in range(n_outputs)])
    ax.imshow(outputs, cmap=cmap, vmin=-0.5, vmax=n_outputs - 0.5, aspect="auto", interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(handles=output_legend_handles(n_outputs), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


# --------------------------------------------------------------------------- comparisons and curves

def plot_grouped_bars(
    ax: plt.Axes,
    values: Mapping[str, Sequence[float]],
    group_labels: Sequence[str],
    *,
    errors: Mapping[str, Sequence[float]] | None = None,
    colors: Mapping[str, str] | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    width: float = 0.8,
    legend: bool = True,
    log: bool = False,
) -> plt.Axes:
    """Bars side by side: one group per label, one bar per series (e.g. paper / analytic / sampled).

    Args:
        ax: axes to draw on.
        values: series name -> one value per group (NaN: no bar, e.g. the paper is silent).
        group_labels: names of the groups (x tick labels).
        errors: optional series name -> error bar half-lengths.
        colors: series name -> colour (default :data:`SOURCE_COLORS` for known names, then
            the style's cycle).
        ylabel, title: axis texts.
        width: total width of a group.
        legend: draw a legend of the series.
        log: logarithmic y axis.

    Returns:
        ax
    """
    names = list(values)
    n_groups = len(group_labels)
    for name in names:
        if len(values[name]) != n_groups:
            raise ValueError(f"series {name!r} has {len(values[name])} values for {n_groups} groups")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bar = width / max(len(names), 1)
    x = np.arange(n_groups)
    for s, name in enumerate(names):
        color = (colors or {}).get(name) or SOURCE_COLORS.get(name) or cycle[s % len(cycle)]
        v = np.asarray(values[name], dtype=float)
        err = None if errors is None or name not in errors else np.asarray(errors[name], dtype=float)
        keep = ~np.isnan(v)
        ax.bar(x[keep] - width / 2 + bar * (s + 0.5), v[keep], bar * 0.92, color=color, label=name,
               yerr=None if err is None else err[keep], capsize=2 if err is not None else 0,
               error_kw=dict(lw=0.8), edgecolor="#333333", linewidth=0.4)
    ax.set_xticks(x, list(group_labels))
    if log:
        ax.set_yscale("log")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and names:
        ax.legend()
    return ax


def plot_loss_curve(
    ax: plt.Axes,
    epochs: Sequence[float],
    losses: Sequence[float],
    *,
    label: str | None = None,
    color: str | None = None,
    mark_epoch: float | None = None,
    mark_label: str | None = None,
    band: tuple[float, float] | None = None,
    band_label: str | None = None,
    xlabel: str = "epoch",
    ylabel: str = "loss",
    logy: bool = False,
) -> plt.Axes:
    """A loss curve with an optional marked epoch (dashed line) and a horizontal band.

    Call it again on the same ``ax`` for a second curve (e.g. validation).

    Args:
        ax: axes to draw on.
        epochs, losses: the curve (same length).
        label, color: legend entry and colour of the curve.
        mark_epoch: draw a vertical dashed line there (e.g. the bifurcation, the best epoch).
        mark_label: its legend entry.
        band: ``(low, high)`` shaded horizontally (e.g. the paper's best-loss range).
        band_label: its legend entry.
        xlabel, ylabel: axis texts.
        logy: logarithmic y axis.

    Returns:
        ax
    """
    epochs = np.asarray(epochs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if epochs.shape != losses.shape or epochs.ndim != 1:
        raise ValueError(f"epochs and losses must be 1-D of the same length, got {epochs.shape} and {losses.shape}")
    ax.plot(epochs, losses, label=label, color=color)
    if band is not None:
        ax.axhspan(band[0], band[1], color=SOURCE_COLORS["paper"], alpha=0.5, lw=0, label=band_label, zorder=0)
    if mark_epoch is not None:
        ax.axvline(mark_epoch, color="#333333", ls="--", lw=1.0, label=mark_label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if label or mark_label or band_label:
        ax.legend()
    return ax



# =========================================================================== global dynamics
# Companion plots of hmmrnn.dynamics and the chapter "Global dynamics" (book/global_dynamics.ipynb).


def plot_orbit(
    ax: plt.Axes,
    coords: np.ndarray,
    labels: np.ndarray,
    *,
    n_outputs: int = 3,
    size: float = 2.0,
    alpha: float = 0.35,
    traces: Mapping[str, np.ndarray] | None = None,
    points: Mapping[str, np.ndarray] | None = None,
    xlabel: str = "PC1",
    ylabel: str = "PC2",
    legend: bool = True,
) -> plt.Axes:
    """States in a plane (e.g. PC1-PC2) coloured by their output, with an optional trace.

    Args:
        ax: axes to draw on.
        coords: (N, 2) plane coordinates.
        labels: (N,) output of each state (fixed colours, :data:`OUTPUT_COLORS`).
        n_outputs: number of outputs K.
        size, alpha: marker size and opacity of the states.
        traces: optional label -> (T, 2) path (e.g. a switch-triggered average), each drawn
            as a line with an arrowhead at its end (shows the sense of rotation).
        points: optional name -> (P, 2) special points (e.g. fixed points), drawn as large
            markers with a legend entry each.
        xlabel, ylabel: axis texts.
        legend: add the output legend.

    Returns:
        ax
    """
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != coords.shape[:1]:
        raise ValueError(f"coords must be (N, 2) and labels (N,), got {coords.shape} and {labels.shape}")
    for k in range(n_outputs):
        sel = labels == k
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=size, color=output_color(k), alpha=alpha, lw=0, rasterized=True)
    handles = output_legend_handles(n_outputs) if legend else []
    styles = ("-", "--", ":", "-.")
    for i, (name, path) in enumerate((traces or {}).items()):
        path = np.asarray(path, dtype=float)
        (line,) = ax.plot(path[:, 0], path[:, 1], color="black", ls=styles[i % len(styles)], lw=1.2, label=name)
        ax.annotate("", xy=path[-1], xytext=path[-2], arrowprops=dict(arrowstyle="-|>", color="black", lw=1.2))
        handles.append(line)
    markers = ("*", "X", "P", "D")
    for i, (name, pts) in enumerate((points or {}).items()):
        pts = np.atleast_2d(np.asarray(pts, dtype=float))
        handles.append(ax.scatter(pts[:, 0], pts[:, 1], s=110, marker=markers[i % len(markers)], color="black",
                                  edgecolor="white", lw=0.8, zorder=5, label=name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if handles:
        ax.legend(handles=handles, loc="best", markerscale=1.0)
    return ax


def plot_drift_field(
    ax: plt.Axes,
    x_centers: np.ndarray,
    y_centers: np.ndarray,
    speed: np.ndarray,
    u: np.ndarray | None = None,
    v: np.ndarray | None = None,
    *,
    cmap: str = "viridis",
    log: bool = True,
    vcenter: float | None = None,
    colorbar_label: str = "drift speed",
    xlabel: str = "PC1",
    ylabel: str = "PC2",
) -> plt.Axes:
    """A map of a positive quantity on a grid of bins (NaN = not visited) with optional arrows.

    Args:
        ax: axes to draw on.
        x_centers, y_centers: (nx,), (ny,) bin centres.
        speed: (ny, nx) speed per bin.
        u, v: optional (ny, nx) drift components, drawn as arrows (same scale for all).
        cmap: colour map of the speed.
        log: logarithmic colour scale.
        vcenter: with ``log``, centre the colour scale on this value (symmetric in log
            scale; use a diverging ``cmap``), e.g. 1 for a ratio.
        colorbar_label: text of the colour bar.
        xlabel, ylabel: axis texts.

    Returns:
        ax
    """
    speed = np.asarray(speed, dtype=float)
    x_centers, y_centers = np.asarray(x_centers, dtype=float), np.asarray(y_centers, dtype=float)
    if speed.shape != (y_centers.size, x_centers.size):
        raise ValueError(f"speed must be (ny, nx) = {(y_centers.size, x_centers.size)}, got {speed.shape}")
    finite = speed[np.isfinite(speed)]
    norm = None
    if log and finite.size and finite.min() > 0:
        lo, hi = finite.min(), finite.max()
        if vcenter is not None:
            span = max(hi / vcenter, vcenter / lo)
            lo, hi = vcenter / span, vcenter * span
        norm = mpl.colors.LogNorm(vmin=lo, vmax=hi)
    mesh = ax.pcolormesh(x_centers, y_centers, np.ma.masked_invalid(speed), cmap=cmap, norm=norm, shading="nearest")
    ax.figure.colorbar(mesh, ax=ax, label=colorbar_label)
    if u is not None and v is not None:
        xx, yy = np.meshgrid(x_centers, y_centers)
        ok = np.isfinite(u) & np.isfinite(v)
        ax.quiver(xx[ok], yy[ok], np.asarray(u)[ok], np.asarray(v)[ok], color="white", angles="xy", pivot="mid",
                  width=0.004, headwidth=4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


def plot_scaling_fits(
    ax: plt.Axes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    yerr: np.ndarray | None = None,
    fits: Mapping[str, tuple[float, float, float]] | None = None,
    xlabel: str = "input noise std s",
    ylabel: str = "orbit radius",
) -> plt.Axes:
    """Measured points with fitted laws ``y = intercept + slope * x**power``.

    Args:
        ax: axes to draw on.
        x, y: (S,) the measurements.
        yerr: optional (S,) error bars.
        fits: label -> ``(slope, intercept, power)``; each drawn as a curve against ``x``.
        xlabel, ylabel: axis texts.

    Returns:
        ax
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {x.shape} and {y.shape}")
    ax.errorbar(x, y, yerr=yerr, fmt="o", color="black", ms=4, capsize=2, label="measured", zorder=3)
    grid = np.linspace(0.0, x.max() * 1.05, 200)
    styles = ("-", "--", ":", "-.")
    for i, (label, (slope, intercept, power)) in enumerate((fits or {}).items()):
        ax.plot(grid, intercept + slope * grid**power, ls=styles[i % len(styles)], label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0)
    ax.legend()
    return ax


def plot_decay(
    ax: plt.Axes,
    values: np.ndarray,
    *,
    tol: float | None = None,
    color: str = "#333333",
    alpha: float = 0.3,
    xlabel: str = "step",
    ylabel: str = "distance to the fixed point",
) -> plt.Axes:
    """Curves (one per row of ``values``, (N, T)) on a log axis, with an optional tolerance line.

    Zeros (a trajectory that landed exactly on the point) are not drawn.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be (N, T), got {values.shape}")
    shown = np.where(values > 0, values, np.nan)
    ax.plot(np.arange(values.shape[1]), shown.T, color=color, alpha=alpha, lw=0.7)
    if tol is not None:
        ax.axhline(tol, color=OKABE_ITO["vermillion"], ls="--", lw=1.0, label=f"tolerance {tol:g}")
        ax.legend()
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


__all__ += ["plot_orbit", "plot_drift_field", "plot_scaling_fits", "plot_decay"]


# =========================================================================== local regions
# Companion plots of hmmrnn.regions and the chapter "Local regions" (book/local_regions.ipynb):
# states coloured by region (cluster / kick-zone / transition, REGION_COLORS; the extra label
# "uncertain" -- slow but not confident -- in grey), histograms per region, curves with bands.


def region_color(name: str) -> str:
    """The fixed colour of a region (:data:`REGION_COLORS`; grey for any other label)."""
    return REGION_COLORS.get(name, OKABE_ITO["grey"])


def _region_label(name: str) -> str:
    return name.replace("_", "-")


def plot_region_scatter(
    ax: plt.Axes,
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    size: float = 3.0,
    alpha: float = 0.6,
    xlabel: str = "PC1",
    ylabel: str = "PC2",
    legend: bool = True,
) -> plt.Axes:
    """Points coloured by region: the orbit in PC1-PC2, or a readout against time.

    Args:
        ax: axes to draw on.
        x, y: (N,) coordinates.
        labels: (N,) integer region codes, indices into ``names``.
        names: region names (e.g. ``hmmrnn.regions.REGION_NAMES``); colours by :func:`region_color`.
        size, alpha: marker size and opacity.
        xlabel, ylabel: axis texts.
        legend: add a legend with the share of points in each region.

    Returns:
        ax (the most populated region is drawn first, so rare regions stay visible on top)
    """
    x, y, labels = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(labels)
    if not (x.shape == y.shape == labels.shape) or x.ndim != 1:
        raise ValueError(f"x, y and labels must be 1-D of the same length, got {x.shape}, {y.shape}, {labels.shape}")
    counts = np.array([(labels == code).sum() for code in range(len(names))])
    for code in np.argsort(-counts, kind="stable"):
        sel = labels == code
        if sel.any():
            ax.scatter(x[sel], y[sel], s=size, color=region_color(names[code]), alpha=alpha, lw=0, rasterized=True,
                       label=f"{_region_label(names[code])} ({sel.mean():.1%})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(markerscale=3.0, loc="best")
    return ax


def plot_residency_histogram(
    ax: plt.Axes,
    rt: np.ndarray,
    *,
    transition_below: float,
    kick_zone_max: float,
    max_steps: int,
    bins: int = 60,
    log: bool = True,
    xlabel: str = "residency time RT (steps)",
    ylabel: str = "states",
) -> plt.Axes:
    """Histogram of residency times with the transition / kick-zone / slow bands shaded.

    Args:
        ax: axes to draw on.
        rt: (N,) residency times.
        transition_below, kick_zone_max: the class thresholds (drawn as band edges).
        max_steps: the censoring time (the right end of the axis).
        bins: number of bins between 1 and ``max_steps``.
        log: logarithmic count axis.
        xlabel, ylabel: axis texts.

    Returns:
        ax
    """
    rt = np.asarray(rt, dtype=float)
    ax.axvspan(0, transition_below, color=region_color("transition"), alpha=0.25, lw=0, label="transition")
    ax.axvspan(transition_below, kick_zone_max, color=region_color("kick_zone"), alpha=0.25, lw=0, label="kick-zone")
    ax.axvspan(kick_zone_max, max_steps, color=region_color("cluster"), alpha=0.15, lw=0, label="slow (cluster if confident)")
    ax.hist(rt, bins=np.linspace(1, max_steps, bins + 1), color="#4D4D4D", histtype="stepfilled", alpha=0.85)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(top=ax.get_ylim()[1] * 8)  # room for the legend above the bars
    ax.set_xlim(0, max_steps)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left")
    return ax


def plot_region_histograms(
    ax: plt.Axes,
    values: Mapping[str, np.ndarray],
    *,
    bins: np.ndarray | int = 30,
    density: bool = True,
    log: bool = False,
    xlabel: str | None = None,
    ylabel: str = "fraction of states",
) -> plt.Axes:
    """One step histogram per region, in the region colours.

    Args:
        ax: axes to draw on.
        values: region name -> (n,) values (an empty array draws nothing).
        bins: bin edges or a number of bins (shared by all regions).
        density: normalise each histogram to a total of 1 (regions differ in size).
        log: logarithmic y axis.
        xlabel, ylabel: axis texts.

    Returns:
        ax
    """
    arrays = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in arrays.values()] or [np.zeros(0)])
    if isinstance(bins, int):
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, v in arrays.items():
        v = v[np.isfinite(v)]
        if v.size:
            weights = np.full(v.size, 1.0 / v.size) if density else None
            ax.hist(v, bins=bins, weights=weights, histtype="step", lw=1.8, color=region_color(name),
                    label=f"{_region_label(name)} (n = {v.size})")
    if log:
        ax.set_yscale("log")
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def plot_band_curves(
    ax: plt.Axes,
    x: np.ndarray,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    colors: Mapping[str, str] | None = None,
    styles: Mapping[str, str] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    legend: bool = True,
) -> plt.Axes:
    """Curves with shaded confidence bands.

    Args:
        ax: axes to draw on.
        x: (S,) abscissa shared by all curves.
        curves: label -> ``(mean, low, high)``, each (S,).
        colors: label -> colour (default the style's cycle).
        styles: label -> line style (default solid).
        xlabel, ylabel: axis texts.
        legend: draw a legend.

    Returns:
        ax
    """
    x = np.asarray(x, dtype=float)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, (mean, low, high)) in enumerate(curves.items()):
        mean, low, high = (np.asarray(a, dtype=float) for a in (mean, low, high))
        if not (mean.shape == low.shape == high.shape == x.shape):
            raise ValueError(f"curve {label!r}: mean, low and high must have the shape of x {x.shape}")
        color = (colors or {}).get(label) or cycle[i % len(cycle)]
        ax.plot(x, mean, color=color, ls=(styles or {}).get(label, "-"), marker="o", ms=3, label=label)
        ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
    if x.size <= 20 and np.all(x == np.round(x)):
        ax.set_xticks(x)  # integer abscissa (steps): one tick each
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if legend:
        ax.legend()
    return ax


__all__ += ["region_color", "plot_region_scatter", "plot_residency_histogram", "plot_region_histograms", "plot_band_curves"]


# =========================================================================== kick neurons
# Companion plots of hmmrnn.circuits and the chapter "Kick neurons" (book/kick_neurons.ipynb).


def plot_neuron_ranking(
    ax: plt.Axes,
    scores: np.ndarray,
    *,
    highlight: Mapping[str, Sequence[int]] | None = None,
    colors: Mapping[str, str] | None = None,
    xlabel: str = "neurons, ranked",
    ylabel: str = "score",
    label: str | None = None,
    color: str = "#999999",
) -> plt.Axes:
    """Scores of all neurons sorted in decreasing order, chosen neurons coloured at their rank.

    Args:
        ax: axes to draw on.
        scores: (H,) one score per neuron.
        highlight: label -> neuron indices drawn in that label's colour (e.g. the kick groups).
        colors: label -> colour (default the style's cycle).
        xlabel, ylabel: axis texts.
        label: legend label of the other neurons.
        color: colour of the other neurons.

    Returns:
        ax
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    ax.plot(np.arange(order.size), scores[order], ".", color=color, ms=4, label=label)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, idx) in enumerate((highlight or {}).items()):
        idx = np.asarray(idx, dtype=int)
        c = (colors or {}).get(name) or cycle[i % len(cycle)]
        ax.plot(rank[idx], scores[idx], "o", color=c, ms=6, mec="black", mew=0.5, label=name, ls="none")
    ax.axhline(0, color="#333333", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if highlight or label:
        ax.legend()
    return ax


def plot_profiles(
    ax: plt.Axes,
    categories: Sequence[str],
    mean: np.ndarray,
    *,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    colors: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    ylabel: str = "pre-activation",
    threshold: float | None = 0.0,
) -> plt.Axes:
    """One line per unit across categories (e.g. regions), with an optional band per unit.

    Args:
        ax: axes to draw on.
        categories: (C,) category names (x axis).
        mean: (n, C) one profile per unit.
        low, high: (n, C) band limits (e.g. 10th and 90th percentiles), drawn as error bars.
        colors: (n,) colours (default the style's cycle).
        labels: (n,) legend labels.
        ylabel: axis text.
        threshold: a horizontal line (the ReLU threshold 0), None for none.

    Returns:
        ax
    """
    mean = np.atleast_2d(np.asarray(mean, dtype=float))
    n, c = mean.shape
    if c != len(categories):
        raise ValueError(f"mean has {c} columns for {len(categories)} categories")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(c)
    jitter = (np.arange(n) - (n - 1) / 2) * min(0.06, 0.5 / max(n, 1))
    for i in range(n):
        col = colors[i] if colors is not None else cycle[i % len(cycle)]
        kw = dict(color=col, marker="o", ms=3, lw=1.0, label=labels[i] if labels is not None else None)
        if low is not None and high is not None:
            err = np.stack([mean[i] - np.asarray(low)[i], np.asarray(high)[i] - mean[i]])
            ax.errorbar(x + jitter[i], mean[i], yerr=err, capsize=0, elinewidth=0.6, **kw)
        else:
            ax.plot(x + jitter[i], mean[i], **kw)
    if threshold is not None:
        ax.axhline(threshold, color="#333333", lw=0.6, ls=":")
    ax.set_xticks(x, list(categories))
    ax.set_ylabel(ylabel)
    if labels is not None:
        ax.legend(ncol=2, fontsize=8)
    return ax


def plot_null_distribution(
    ax: plt.Axes,
    null: np.ndarray,
    observed: float,
    *,
    bins: int = 40,
    xlabel: str | None = None,
    observed_label: str = "observed",
    null_label: str = "random sets",
    color: str = OKABE_ITO["vermillion"],
) -> plt.Axes:
    """Histogram of a null distribution with the observed value as a vertical line.

    Args:
        ax: axes to draw on.
        null: (n,) statistic of random draws.
        observed: the statistic of the real set.
        bins: number of bins (the range always includes ``observed``).
        xlabel: axis text.
        observed_label, null_label: legend labels.
        color: colour of the observed line.

    Returns:
        ax
    """
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    lo, hi = min(null.min(initial=observed), observed), max(null.max(initial=observed), observed)
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    ax.hist(null, bins=np.linspace(lo - pad, hi + pad, bins + 1), color="#999999", alpha=0.8, label=f"{null_label} (n = {null.size})")
    ax.axvline(observed, color=color, lw=2, label=observed_label)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(loc="upper left")
    return ax


__all__ += ["plot_neuron_ranking", "plot_profiles", "plot_null_distribution"]


# =========================================================================== is the output an HMM?
# Companion plot of hmmrnn.emulation and the chapter "Is the output an HMM?" (book/hmm_emulation.ipynb).


def plot_dwell_distributions(
    ax: plt.Axes,
    edges: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    colors: Mapping[str, str] | None = None,
    styles: Mapping[str, str] | None = None,
    xlabel: str = "dwell time (steps)",
    ylabel: str = "probability per step of duration",
    ymin: float | None = None,
    legend: bool = True,
) -> plt.Axes:
    """Binned dwell-time distributions as step curves on log-log axes.

    Each bin's probability is divided by its width (a density over durations), so that
    bins of growing width (:func:`hmmrnn.emulation.dwell_bins`) stay comparable.

    Args:
        ax: axes to draw on.
        edges: (B + 1,) bin edges; bin j holds durations ``edges[j] <= d < edges[j + 1]``.
        curves: label -> (B,) probabilities of the bins (NaN or 0 bins are not drawn).
        colors, styles: label -> colour / line style (default the style's cycle, solid).
        xlabel, ylabel: axis texts.
        ymin: lower limit of the density axis (exact tails reach far below any sample).
        legend: draw a legend.

    Returns:
        ax
    """
    edges = np.asarray(edges, dtype=float)
    widths = np.diff(edges)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, probs) in enumerate(curves.items()):
        probs = np.asarray(probs, dtype=float)
        if probs.shape != widths.shape:
            raise ValueError(f"curve {label!r} has {probs.size} bins, the edges define {widths.size}")
        density = np.where(probs > 0, probs / widths, np.nan)
        color = (colors or {}).get(label) or cycle[i % len(cycle)]
        ax.stairs(density, edges, color=color, ls=(styles or {}).get(label, "-"), label=label, lw=1.5, baseline=None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ymin is not None:
        ax.set_ylim(bottom=ymin)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend()
    return ax


__all__ += ["plot_dwell_distributions"]


def plot_grid_cells(
    ax: plt.Axes,
    values: np.ndarray,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    fmt: str = "{:.3f}",
    cmap: str = "Blues",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    fontsize: float = 8.0,
) -> plt.Axes:
    """Heatmap of one statistic over a grid of cells, cells without a value marked "not run".

    Args:
        ax: axes to draw on.
        values: (R, C) one value per cell (e.g. rows |h|, columns d); NaN = no finished run.
        row_labels, col_labels: tick labels, (R,) and (C,).
        fmt, cmap, vmin, vmax, xlabel, ylabel, title, fontsize: as :func:`plot_matrix` (vmax
            None takes the data's largest value; an all-NaN array is drawn empty).

    Returns:
        ax
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values must have shape ({len(row_labels)}, {len(col_labels)}), got {values.shape}")
    finite = values[np.isfinite(values)]
    lo = (float(finite.min()) if finite.size else 0.0) if vmin is None else vmin
    hi = (float(finite.max()) if finite.size else 1.0) if vmax is None else vmax
    if hi <= lo:
        hi = lo + 1.0
    plot_matrix(ax, values, row_labels=row_labels, col_labels=col_labels, fmt=fmt, cmap=cmap, vmin=lo, vmax=hi,
                xlabel=xlabel, ylabel=ylabel, title=title, fontsize=fontsize)
    for r, c in zip(*np.nonzero(np.isnan(values))):
        ax.add_patch(mpl.patches.Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="#f2f2f2", edgecolor="white", hatch="///"))
        ax.text(c, r, "not run", ha="center", va="center", fontsize=fontsize - 1, color=OKABE_ITO["grey"])
    return ax


__all__ += ["plot_grid_cells"]
