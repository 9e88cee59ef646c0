"""The noise-driven vanilla ReLU RNN of the paper (Torre et al., NeurIPS 2025: its model and training setup, Methods).

    h_t = ReLU(W_rec h_{t-1} + W_in x_t),   x_t ~ N(0, s^2 I_D) i.i.d.,   logits_t = W_out h_t

No biases anywhere. Outputs are sampled with a hard (straight-through) Gumbel-softmax:
the forward value is an exact one-hot sample from ``softmax(logits_t)`` (whatever the
temperature ``tau``); ``tau`` only shapes the gradient.

Shapes: ``H`` hidden units, ``D`` input (noise) dimensions, ``K`` outputs, ``B`` batch,
``L`` time steps. Hidden trajectories are (B, L, H) with ``hidden[:, t]`` = h_{t+1} (the
state after the (t+1)-th input); the initial state h_0 is not part of the trajectory.

Weights travel as :class:`RNNWeights` (three float32 NumPy arrays): framework-neutral,
the format of checkpoints, and the thing interventions copy and modify.

Non-finite states: a state that overflows (inf, then NaN) has no output. A simulation that
turns logits into outputs marks such a step :data:`NONFINITE_OUTPUT` (-1), never a real
output, and :class:`NonFiniteStates` says how many there are and from which step;
statistics that count outputs raise :class:`NonFiniteStatesError` instead of counting them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "RNNWeights",
    "NoiseRNN",
    "Rollout",
    "numpy_step",
    "numpy_rollout_hidden",
    "hard_gumbel_softmax",
    "H0_MODES",
    "NONFINITE_OUTPUT",
    "NonFiniteStates",
    "NonFiniteStatesError",
    "nonfinite_steps",
    "mark_nonfinite",
]

NONFINITE_OUTPUT = -1  # the "output" of a step whose state is not finite: no output at all


@dataclass(frozen=True)
class NonFiniteStates:
    """Where the states of a batch of simulated sequences are not finite.

    A step counts when any of its logits is NaN or infinite (the state overflowed, or is so
    large that the readout does). Its output is undefined.

    Attributes:
        sequences: sequences with at least one such step.
        steps: such steps, all sequences together.
        n_sequences, length: the batch's size, (n_sequences, length).
        first_step: the earliest such step of any sequence, counting the first simulated
            step as 1 (0 when there is none).
    """

    sequences: int
    steps: int
    n_sequences: int
    length: int
    first_step: int

    @classmethod
    def from_mask(cls, mask: "np.ndarray | torch.Tensor") -> "NonFiniteStates":
        """From a (B, L) boolean mask of non-finite steps."""
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        m = m.reshape(-1, m.shape[-1]) if m.ndim >= 1 and m.size else np.zeros((0, 0), dtype=bool)
        columns = np.flatnonzero(m.any(axis=0))
        return cls(int(m.any(axis=1).sum()), int(m.sum()), int(m.shape[0]), int(m.shape[1]),
                   int(columns[0]) + 1 if columns.size else 0)

    def __bool__(self) -> bool:
        return self.steps > 0

    def describe(self) -> str:
        """One sentence: how many sequences and steps, from which step."""
        total = self.n_sequences * self.length
        return (f"{self.sequences} of {self.n_sequences} sequences have non-finite states "
                f"({self.steps} of {total} steps, {self.steps / max(total, 1):.1%}), the first from step {self.first_step}")


class NonFiniteStatesError(FloatingPointError):
    """Outputs were asked of states that are not finite (see :class:`NonFiniteStates`)."""

    def __init__(self, what: str, states: NonFiniteStates) -> None:
        super().__init__(f"{what}: {states.describe()}; a non-finite state has no output, so none is counted")
        self.states = states


def nonfinite_steps(logits: torch.Tensor) -> torch.Tensor:
    """(..., L, K) logits -> (..., L) bool: True where any logit of the step is not finite."""
    return ~torch.isfinite(logits).all(dim=-1)


def mark_nonfinite(outputs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``outputs`` (..., L) with :data:`NONFINITE_OUTPUT` at the steps whose logits are not finite."""
    return torch.where(nonfinite_steps(logits), torch.full_like(outputs, NONFINITE_OUTPUT), outputs)

H0Mode = Literal["zeros", "normal"]
H0_MODES: tuple[str, ...] = ("zeros", "normal")


class RNNWeights(NamedTuple):
    """Framework-neutral weights of the RNN (float32 NumPy arrays).

    Fields:
        W_in: (H, D) input weights.
        W_rec: (H, H) recurrent weights, ``h_t = relu(W_rec @ h_{t-1} + W_in @ x_t)``.
        W_out: (K, H) readout weights, ``logits_t = W_out @ h_t``.
    """

    W_in: np.ndarray
    W_rec: np.ndarray
    W_out: np.ndarray

    @property
    def hidden_size(self) -> int:
        return int(self.W_rec.shape[0])

    @property
    def input_size(self) -> int:
        return int(self.W_in.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.W_out.shape[0])

    def validate(self) -> "RNNWeights":
        """Check shapes agree and entries are finite; return self. Raises ValueError."""
        for name in self._fields:
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 2:
                raise ValueError(f"{name} must be a 2-D array, got {getattr(arr, 'shape', type(arr))}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} has {int((~np.isfinite(arr)).sum())} non-finite entries")
        h = self.W_rec.shape[0]
        if self.W_rec.shape != (h, h):
            raise ValueError(f"W_rec must be square (H, H), got {self.W_rec.shape}")
        if self.W_in.shape[0] != h:
            raise ValueError(f"W_in must have shape (H={h}, D), got {self.W_in.shape}")
        if self.W_out.shape[1] != h:
            raise ValueError(f"W_out must have shape (K, H={h}), got {self.W_out.shape}")
        return self

    def copy(self) -> "RNNWeights":
        """A deep copy (interventions modify copies, never the caller's weights)."""
        return RNNWeights(*(np.array(a, dtype=np.float32, copy=True) for a in self))


class Rollout(NamedTuple):
    """A batch of driven trajectories.

    Fields:
        hidden: (B, L, H) hidden states h_1..h_L.
        logits: (B, L, K) readout ``W_out h_t``.
        outputs: (B, L) int64 sampled outputs (categorical draws from softmax(logits));
            :data:`NONFINITE_OUTPUT` (-1) at a step whose state is not finite.
        inputs: (B, L, D) the noise that drove the run, or None if not kept.
    """

    hidden: torch.Tensor
    logits: torch.Tensor
    outputs: torch.Tensor
    inputs: torch.Tensor | None

    @property
    def nonfinite(self) -> NonFiniteStates:
        """The steps without an output (non-finite states); falsy when there are none."""
        return NonFiniteStates.from_mask(nonfinite_steps(self.logits))


def hard_gumbel_softmax(logits: torch.Tensor, gumbel: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Straight-through Gumbel-softmax with given Gumbel noise.

    Args:
        logits: (..., K).
        gumbel: (..., K) standard Gumbel noise (``-log(-log U)``).
        tau: temperature of the relaxed sample that carries the gradient.

    Returns:
        (..., K) exact one-hot sample in the forward pass; gradient of ``softmax((logits+g)/tau)``.
    """
    soft = torch.softmax((logits + gumbel) / tau, dim=-1)
    index = soft.argmax(dim=-1, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return hard - soft.detach() + soft


def sample_gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard Gumbel noise of ``shape`` drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, device=device)
    tiny = torch.finfo(u.dtype).tiny
    exponential = -torch.log(u.clamp_min(tiny))  # Exp(1) draws
    return -torch.log(exponential.clamp_min(tiny))


class NoiseRNN(nn.Module):
    """The noise-driven ReLU RNN (no biases).

    Parameters are ``W_in`` (H, D), ``W_rec`` (H, H), ``W_out`` (K, H), initialised as
    PyTorch's default for ``nn.RNN``/``nn.Linear``: uniform in ``(-1/sqrt(H), 1/sqrt(H))``.

    Args:
        input_size: D, dimension of the noise input.
        hidden_size: H.
        output_size: K.
        h0: ``"zeros"`` (h_0 = 0) or ``"normal"`` (h_0 ~ N(0, I) per sequence).
        generator: torch generator for the initialisation (required: no global seeding).
    """

    def __init__(
        self,
        input_size: int = 100,
        hidden_size: int = 150,
        output_size: int = 3,
        h0: H0Mode = "zeros",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if h0 not in H0_MODES:
            raise ValueError(f"h0 must be one of {H0_MODES}, got {h0!r}")
        self.h0_mode: H0Mode = h0
        bound = 1.0 / math.sqrt(hidden_size)
        if generator is None:
            raise ValueError("NoiseRNN needs an explicit torch.Generator for its initialisation")

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter((torch.rand(shape, generator=generator) * 2 - 1) * bound)

        self.W_in = init(hidden_size, input_size)
        self.W_rec = init(hidden_size, hidden_size)
        self.W_out = init(output_size, hidden_size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_weights(cls, weights: RNNWeights, h0: H0Mode = "zeros", device: torch.device | str = "cpu") -> "NoiseRNN":
        """Build a model holding (a copy of) ``weights``."""
        weights.validate()
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        if h0 not in H0_MODES:
            raise ValueError(f"h0 must be one of {H0_MODES}, got {h0!r}")
        model.h0_mode = h0
        for name in RNNWeights._fields:
            setattr(model, name, nn.Parameter(torch.tensor(np.asarray(getattr(weights, name)), dtype=torch.float32, device=device)))
        return model

    def weights(self) -> RNNWeights:
        """A float32 NumPy copy of the weights."""
        return RNNWeights(*(getattr(self, n).detach().cpu().numpy().astype(np.float32, copy=True) for n in RNNWeights._fields))

    @property
    def input_size(self) -> int:
        return int(self.W_in.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.W_rec.shape[0])

    @property
    def output_size(self) -> int:
        return int(self.W_out.shape[0])

    # ------------------------------------------------------------------ dynamics
    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step of the map: (B, H), (B, D) -> (B, H) = relu(h W_rec^T + x W_in^T)."""
        return torch.relu(h @ self.W_rec.T + x @ self.W_in.T)

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H) initial states: zeros, or N(0, I) draws from ``generator`` if h0 == 'normal'."""
        device = self.W_rec.device
        if self.h0_mode == "zeros":
            return torch.zeros(batch, self.hidden_size, device=device)
        if generator is None:
            raise ValueError("h0='normal' needs a generator to draw the initial state")
        return torch.randn(batch, self.hidden_size, generator=generator, device=device)

    def hidden_states(self, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """Run the recurrence on given inputs.

        Args:
            inputs: (B, L, D) noise.
            h0: (B, H) initial state.

        Returns:
            (B, L, H) hidden states h_1..h_L.
        """
        drive = inputs @ self.W_in.T  # (B, L, H): one matmul for all steps
        h = h0
        states = []
        for t in range(inputs.shape[1]):
            h = torch.relu(h @ self.W_rec.T + drive[:, t])
            states.append(h)
        return torch.stack(states, dim=1)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., K) readout."""
        return hidden @ self.W_out.T

    def sample_inputs(self, batch: int, length: int, generator: torch.Generator, noise_scale: float = 1.0) -> torch.Tensor:
        """(B, L, D) Gaussian input noise with standard deviation ``noise_scale``."""
        x = torch.randn(batch, length, self.input_size, generator=generator, device=self.W_rec.device)
        return x * noise_scale if noise_scale != 1.0 else x

    def sample_outputs_onehot(self, logits: torch.Tensor, generator: torch.Generator, tau: float = 1.0) -> torch.Tensor:
        """(..., K) straight-through hard Gumbel-softmax samples of ``logits``."""
        gumbel = sample_gumbel(tuple(logits.shape), generator, device=logits.device)
        return hard_gumbel_softmax(logits, gumbel, tau)

    @torch.no_grad()
    def rollout(
        self,
        batch: int,
        length: int,
        generator: torch.Generator,
        noise_scale: float = 1.0,
        h0: torch.Tensor | None = None,
        keep_inputs: bool = False,
    ) -> Rollout:
        """Simulate ``batch`` driven trajectories of ``length`` steps (no gradients).

        Args:
            batch: B.
            length: L.
            generator: torch generator for noise, initial states and output samples.
            noise_scale: standard deviation of the input noise (1.0 is the trained level).
            h0: (B, H) initial states; default per the model's ``h0`` mode.
            keep_inputs: also return the (B, L, D) noise.
        """
        if h0 is None:
            h0 = self.initial_state(batch, generator)
        inputs = self.sample_inputs(batch, length, generator, noise_scale)
        hidden = self.hidden_states(inputs, h0)
        logits = self.logits(hidden)
        gumbel = sample_gumbel(tuple(logits.shape), generator, device=logits.device)
        outputs = mark_nonfinite((logits + gumbel).argmax(dim=-1), logits)
        return Rollout(hidden, logits, outputs, inputs if keep_inputs else None)


# ------------------------------------------------------------------ NumPy reference

def numpy_step(weights: RNNWeights, h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference one-step map in NumPy: (B, H), (B, D) -> (B, H)."""
    return np.maximum(h @ weights.W_rec.T + x @ weights.W_in.T, 0.0)


def numpy_rollout_hidden(weights: RNNWeights, inputs: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """Reference recurrence: inputs (B, L, D), h0 (B, H) -> hidden (B, L, H)."""
    h = h0
    out = np.empty(inputs.shape[:2] + (weights.hidden_size,), dtype=np.result_type(inputs, weights.W_rec))
    for t in range(inputs.shape[1]):
        h = numpy_step(weights, h, inputs[:, t])
        out[:, t] = h
    return out
