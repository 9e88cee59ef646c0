"""hmmrnn: noise-driven RNNs that emulate HMMs, and the tools to reverse-engineer them.

A companion package of the book re-deriving Torre et al. (NeurIPS 2025),
*Mechanistic Interpretability of RNNs emulating Hidden Markov Models*.
"""

__version__ = "0.1.0"

from .checkpoints import Checkpoint, CheckpointError, load, shipped_names
from .hmm import HMM, HMMError, TARGET_NAMES, get_hmm
from .model import NoiseRNN, RNNWeights

__all__ = [
    "__version__",
    "Checkpoint",
    "CheckpointError",
    "HMM",
    "HMMError",
    "NoiseRNN",
    "RNNWeights",
    "TARGET_NAMES",
    "get_hmm",
    "load",
    "shipped_names",
]
