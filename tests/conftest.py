"""Shared fixtures of the unit tests.

The machine that runs the suite may be busy (a training run in the background): torch is
kept to one thread so the tests neither slow it down nor get slowed down by thread
contention, and every random draw comes from an explicit seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def random_hmm(rng: np.random.Generator, n_states: int, n_outputs: int, zeros: bool = False):
    """A random HMM with Dirichlet rows; ``zeros`` sets some entries to exactly 0."""
    from hmmrnn.hmm import HMM

    start = rng.dirichlet(np.ones(n_states))
    transition = rng.dirichlet(np.ones(n_states), size=n_states)
    emission = rng.dirichlet(np.ones(n_outputs), size=n_states)
    if zeros:
        # forbid some transitions and emissions (each row keeps at least one non-zero entry)
        mask_t = rng.random((n_states, n_states)) < 0.3
        mask_t[np.arange(n_states), rng.integers(0, n_states, n_states)] = False
        transition = np.where(mask_t, 0.0, transition)
        transition /= transition.sum(axis=1, keepdims=True)
        mask_e = rng.random((n_states, n_outputs)) < 0.3
        mask_e[np.arange(n_states), rng.integers(0, n_outputs, n_states)] = False
        emission = np.where(mask_e, 0.0, emission)
        emission /= emission.sum(axis=1, keepdims=True)
    return HMM(start, transition, emission)


@pytest.fixture
def make_random_hmm():
    """Factory fixture: ``make_random_hmm(rng, n_states, n_outputs, zeros=False)``."""
    return random_hmm


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
