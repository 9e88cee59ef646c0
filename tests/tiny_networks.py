"""Small random networks shared by the unit tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import math

import numpy as np

from hmmrnn.model import RNNWeights


def tiny_weights(seed: int = 0, hidden: int = 12, inputs: int = 5, outputs: int = 3, gain: float = 1.2) -> RNNWeights:
    """A random bias-free ReLU network: W_in (hidden, inputs) ~ N(0, 1/inputs),
    W_rec (hidden, hidden) ~ N(0, gain^2/hidden), W_out (outputs, hidden) ~ N(0, 1); float32."""
    rng = np.random.default_rng(seed)
    return RNNWeights(
        rng.normal(0, 1 / math.sqrt(inputs), (hidden, inputs)).astype(np.float32),
        rng.normal(0, gain / math.sqrt(hidden), (hidden, hidden)).astype(np.float32),
        rng.normal(0, 1, (outputs, hidden)).astype(np.float32),
    ).validate()
