"""One motif per pair of outputs: sub-orbits of networks with more than two frequent outputs (Torre et al., NeurIPS 2025: its results on compositionality).

The fully connected (``fully3``) and cyclic (``cyclic4``) targets switch between three
frequent outputs. The paper's claim is compositional: each pair of outputs between which the
network switches gets its own slow-accumulation / fast-kick loop, the same motif as the
two-output network. This module cuts a long driven run into those loops and measures each.

Definitions (used throughout and in the book):

Heading
    For a step t of a trajectory with dominant (argmax) outputs d_0, d_1, ..., the heading is
    the next *different* dominant output along the trajectory: d_s for the first s > t with
    d_s != d_t (-1 if the trajectory ends first). A dwell in output a followed by a switch to
    b is "heading to b" throughout.

Pair of a step
    The unordered pair {d_t, heading_t}: a step belongs to the loop between the output it is
    in and the output it will switch to next. This partitions the steps (except the last dwell
    of each trajectory, whose heading is unknown): every dwell, kick-zone and transition
    belongs to exactly one pair. For a two-output chain every step belongs to the one pair.
    (The paper's text says "the steps in that pair"; this is our precise reading of it. The
    simpler reading, d_t in the pair, assigns a dwell to both pairs it borders.)

Motif pairs
    The pairs that carry at least ``min_share`` of all switches of the dominant output
    (direct changes d_t -> d_{t+1}); for cyclic4 the switch 0 <-> 2 is essentially absent.

Two-stage PCA
    A global PCA (4 components, as the paper) of all states; then, for each pair, a second PCA
    of the pair's steps in the global 4-D coordinates. ``explained`` of the second stage is
    the fraction of the pair's variance *within the 4-D space* (the paper: PC1 64-86 %).

Shapes: B trajectories of T steps, H hidden units, K outputs.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .dynamics import PCA, Rotation, pca, rotation
from .metrics import output_transition_counts


def _as_dominant(dominant: np.ndarray) -> np.ndarray:
    d = np.asarray(dominant)
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.integer):
        raise ValueError(f"dominant must be a (B, T) integer array, got shape {d.shape} and dtype {d.dtype}")
    if d.size and d.min() < 0:
        raise ValueError("dominant outputs must be >= 0")
    return d


def _check_pair(pair: Sequence[int]) -> tuple[int, int]:
    if len(pair) != 2 or int(pair[0]) == int(pair[1]):
        raise ValueError(f"a pair is two different outputs, got {pair!r}")
    a, b = sorted(int(p) for p in pair)
    return a, b


def switch_counts(dominant: np.ndarray, n_outputs: int) -> np.ndarray:
    """(K, K) number of direct switches a -> b of the dominant output (zero diagonal).

    Args:
        dominant: (B, T) dominant output per step.
        n_outputs: K.
    """
    counts = output_transition_counts(_as_dominant(dominant), n_outputs)
    np.fill_diagonal(counts, 0)
    return counts


def motif_pairs(dominant: np.ndarray, n_outputs: int, min_share: float = 0.05,
                min_switches: int = 20) -> list[tuple[int, int]]:
    """Unordered pairs (a < b) carrying at least ``min_share`` of all direct switches (and at
    least ``min_switches`` of them, both directions together), busiest first."""
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    counts = switch_counts(dominant, n_outputs)
    both = counts + counts.T
    total = max(int(counts.sum()), 1)
    pairs = [(a, b) for a in range(n_outputs) for b in range(a + 1, n_outputs)
             if both[a, b] / total >= min_share and both[a, b] >= min_switches]
    return sorted(pairs, key=lambda p: -both[p])


def heading(dominant: np.ndarray) -> np.ndarray:
    """(B, T) the next different dominant output after each step (-1 if none; see module docstring)."""
    d = _as_dominant(dominant)
    b, t = d.shape
    change = np.zeros((b, t), dtype=bool)
    change[:, :-1] = d[:, 1:] != d[:, :-1]
    # index of the first step of the next dwell: t + 1 where the output changes after t, else T
    start_next = np.where(change, np.arange(1, t + 1), t)
    nxt = np.minimum.accumulate(start_next[:, ::-1], axis=1)[:, ::-1]
    return np.where(nxt < t, np.take_along_axis(d, np.minimum(nxt, t - 1), axis=1), -1)


def pair_index(dominant: np.ndarray, pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """(B, T) index into ``pairs`` of each step's pair {d_t, heading_t}; -1 if none of them.

    Steps of the last dwell of a trajectory (no heading) and steps whose pair is not listed
    get -1.
    """
    d = _as_dominant(dominant)
    head = heading(d)
    low, high = np.minimum(d, head), np.maximum(d, head)
    out = np.full(d.shape, -1, dtype=np.int64)
    for i, pair in enumerate(pairs):
        a, b = _check_pair(pair)
        out[(head >= 0) & (low == a) & (high == b)] = i
    return out


class PairOrbit(NamedTuple):
    """The sub-orbit of one pair of outputs (second stage of :func:`two_stage_pca`).

    Fields:
        pair: (a, b), a < b.
        n_steps: number of steps of the pair.
        share: fraction of all steps (of those with a pair) that belong to it.
        sub_pca: PCA of the pair's steps in the global coordinates: ``components`` are
            (n_sub, n_global) directions in the global PC space; ``explained`` is the fraction
            of the pair's variance within that space.
        plane: (B, T, 2) every step projected on the pair's first two sub-PCs.
        rotation: sense of rotation of the a <-> b round trips in that plane.
    """

    pair: tuple[int, int]
    n_steps: int
    share: float
    sub_pca: PCA
    plane: np.ndarray
    rotation: Rotation


class TwoStagePCA(NamedTuple):
    """Global PCA of a run and one :class:`PairOrbit` per pair.

    Fields:
        global_pca: PCA of all states (``n_global`` components).
        coords: (B, T, n_global) every state in the global PC coordinates.
        pair_index: (B, T) index of each step's pair (-1: none), see :func:`pair_index`.
        pairs: one :class:`PairOrbit` per requested pair, in order.
    """

    global_pca: PCA
    coords: np.ndarray
    pair_index: np.ndarray
    pairs: list[PairOrbit]


def two_stage_pca(hidden: np.ndarray, dominant: np.ndarray, pairs: Sequence[Sequence[int]],
                  n_global: int = 4, n_sub: int = 2) -> TwoStagePCA:
    """The paper's two-stage PCA (global, then per pair of outputs; see module docstring).

    Args:
        hidden: (B, T, H) states of B driven trajectories.
        dominant: (B, T) dominant output of each state.
        pairs: the pairs of outputs to analyse (e.g. :func:`motif_pairs`).
        n_global: components of the global PCA (paper: 4).
        n_sub: components of each pair's PCA (at least 2).
    """
    h = np.asarray(hidden, dtype=np.float64)
    d = _as_dominant(dominant)
    if h.ndim != 3 or h.shape[:2] != d.shape:
        raise ValueError(f"hidden must be (B, T, H) matching dominant (B, T); got {h.shape} and {d.shape}")
    if not 2 <= n_sub <= n_global:
        raise ValueError(f"need 2 <= n_sub <= n_global, got n_sub={n_sub}, n_global={n_global}")
    glob = pca(h.reshape(-1, h.shape[-1]), n_global)
    coords = glob.project(h)
    index = pair_index(d, pairs)
    total = max(int((index >= 0).sum()), 1)
    out = []
    for i, pair in enumerate(pairs):
        a, b = _check_pair(pair)
        mask = index == i
        if mask.sum() < max(n_sub + 1, 10):
            raise ValueError(f"pair {pair} has only {int(mask.sum())} steps (need 10); run longer or drop it")
        sub = pca(coords[mask], n_sub)
        plane = sub.project(coords)[..., :2]
        out.append(PairOrbit((a, b), int(mask.sum()), float(mask.sum()) / total, sub, plane,
                             rotation(plane, d, (a, b))))
    return TwoStagePCA(glob, coords, index, out)


def fractions_by_pair(labels: np.ndarray, state_pair: np.ndarray, n_pairs: int, n_labels: int) -> np.ndarray:
    """(n_pairs, n_labels) fraction of each pair's states carrying each label code.

    Args:
        labels: (N,) integer label codes in 0..n_labels-1 (e.g. region codes).
        state_pair: (N,) pair index of each state (-1: none, ignored).
        n_pairs, n_labels: table size. Rows of pairs without states are NaN.
    """
    labels = np.asarray(labels)
    state_pair = np.asarray(state_pair)
    if labels.shape != state_pair.shape or labels.ndim != 1:
        raise ValueError(f"labels and state_pair must be 1-D of equal length, got {labels.shape} and {state_pair.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}")
    table = np.full((n_pairs, n_labels), np.nan)
    for i in range(n_pairs):
        sel = labels[state_pair == i]
        if sel.size:
            table[i] = np.bincount(sel, minlength=n_labels) / sel.size
    return table


def overlap(groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(G, G) Jaccard index |A & B| / |A | B| between neuron groups (1 on the diagonal)."""
    sets = [set(int(i) for i in g) for g in groups]
    n = len(sets)
    out = np.ones((n, n))
    for i in range(n):
        for j in range(n):
            union = sets[i] | sets[j]
            out[i, j] = len(sets[i] & sets[j]) / len(union) if union else 1.0
    return out
