"""The training loss with a hand-written backward pass: the fast path of :func:`hmmrnn.train.train`.

:func:`fast_loss` computes exactly what :func:`hmmrnn.train._loss` computes (the RNN driven
by given noise, straight-through hard Gumbel-softmax outputs, the debiased Sinkhorn
divergence to the data batch, optionally the pair-statistics term), and its gradients with
respect to ``W_in``, ``W_rec`` and ``W_out`` (equal to autograd's to float rounding; the tests
check ~1e-6 relative), but without an autograd graph:

* the recurrence runs in place in one (L+1, B, H) buffer of states, with all the input
  products ``x_t W_in^T`` as one matrix product;
* the Sinkhorn divergence is :func:`hmmrnn.sinkhorn.binary_sinkhorn` (the outputs are exact
  one-hot samples), whose gradient with respect to the samples is in closed form;
* backpropagation through time is the delta recursion
  ``delta_t = (dL/dh_t + delta_{t+1} W_rec) * [h_t > 0]`` followed by ``dW_rec`` and ``dW_in``
  each as ONE matrix product over the stacked (L B, H) arrays.

Everything is wrapped in one ``torch.autograd.Function`` so the caller writes
``total.backward()`` as usual. The forward value of the straight-through sample is the
exact one-hot vector here (``hard - soft.detach() + soft`` in :func:`hmmrnn.model.hard_gumbel_softmax`
differs from it by float rounding, ~1e-8), so losses agree to ~1e-7 relative.

Shapes: ``B`` batch, ``L`` steps, ``D`` noise dimensions, ``H`` hidden units, ``K`` outputs.
"""

from __future__ import annotations

from typing import Any

import torch

from .sinkhorn import binary_sinkhorn
from .workspace import Workspace

__all__ = ["rnn_states", "rnn_weight_grads", "onehot_samples", "fast_loss", "fast_divergence"]


def rnn_states(noise_tm: torch.Tensor, h0: torch.Tensor, W_in: torch.Tensor, W_rec: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden states of ``h_t = relu(W_rec h_{t-1} + W_in x_t)``, time-major, h_0 included.

    Args:
        noise_tm: (L, B, D) inputs, time-major and contiguous.
        h0: (B, H) initial states.
        W_in: (H, D); W_rec: (H, H).
        out: (L + 1, B, H) contiguous tensor to write the states into (default: a new one).

    Returns:
        (L + 1, B, H) states, ``states[0] = h0`` and ``states[t] = h_t``.
    """
    steps, batch, dim = noise_tm.shape
    hidden = W_rec.shape[0]
    if out is None:
        states = torch.empty(steps + 1, batch, hidden, dtype=W_rec.dtype, device=W_rec.device)
    else:
        if out.shape != (steps + 1, batch, hidden) or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous ({steps + 1}, {batch}, {hidden}) tensor, got {tuple(out.shape)}")
        states = out
    states[0] = h0
    # all input products at once, written where the pre-activations go
    torch.matmul(noise_tm.reshape(steps * batch, dim), W_in.T, out=states[1:].view(steps * batch, hidden))
    w_rec_t = W_rec.T
    for t in range(1, steps + 1):
        states[t].addmm_(states[t - 1], w_rec_t).relu_()
    return states


def rnn_weight_grads(grad_hidden: torch.Tensor, states: torch.Tensor, noise_tm: torch.Tensor,
                     W_rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagation through time for :func:`rnn_states`.

    Args:
        grad_hidden: (L, B, H) dLoss/dh_t from the readout (time-major); overwritten with the
            deltas dLoss/d(pre-activation_t).
        states: (L + 1, B, H) from :func:`rnn_states`.
        noise_tm: (L, B, D) the inputs.
        W_rec: (H, H).

    Returns:
        (dW_in (H, D), dW_rec (H, H)).
    """
    steps, batch, hidden = grad_hidden.shape
    delta = grad_hidden
    for t in range(steps - 1, -1, -1):
        if t < steps - 1:
            delta[t].addmm_(delta[t + 1], W_rec)
        # delta_t *= [h_t > 0], in place (relu's own backward kernel)
        torch.ops.aten.threshold_backward.grad_input(delta[t], states[t + 1], 0.0, grad_input=delta[t])
    flat = delta.view(steps * batch, hidden)
    grad_rec = flat.T @ states[:-1].reshape(steps * batch, hidden)
    grad_in = flat.T @ noise_tm.reshape(steps * batch, noise_tm.shape[2])
    return grad_in, grad_rec


def onehot_samples(logits: torch.Tensor, gumbel: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard Gumbel-softmax samples and the relaxed sample that carries their gradient.

    Args:
        logits, gumbel: (..., K).

    Returns:
        (onehot (..., K) exact 0/1 samples, soft (..., K) ``softmax((logits + gumbel) / tau)``);
        the one-hot vector marks ``soft.argmax``, as :func:`hmmrnn.model.hard_gumbel_softmax`.
    """
    soft = torch.softmax((logits + gumbel) / tau, dim=-1)
    onehot = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return onehot, soft


def _forward_samples(W_in: torch.Tensor, W_rec: torch.Tensor, W_out: torch.Tensor, noise: torch.Tensor,
                     gumbel: torch.Tensor, h0: torch.Tensor, tau: float, workspace: Workspace | None = None):
    batch, steps, dim = noise.shape
    if workspace is None:
        noise_tm = noise.transpose(0, 1).contiguous()
        states = rnn_states(noise_tm, h0, W_in, W_rec)
    else:
        noise_tm = workspace.take("noise_tm", (steps, batch, dim), noise.dtype, noise.device).copy_(noise.transpose(0, 1))
        states = rnn_states(noise_tm, h0, W_in, W_rec,
                            out=workspace.take("states", (steps + 1, batch, W_rec.shape[0]), W_rec.dtype, W_rec.device))
    logits = (states[1:] @ W_out.T).transpose(0, 1)  # (B, L, K)
    onehot, soft = onehot_samples(logits, gumbel, tau)
    return noise_tm, states, logits, onehot, soft


class _FastLoss(torch.autograd.Function):
    """(W_in, W_rec, W_out) -> (Sinkhorn divergence, logits (B, L, K)); hand-written backward."""

    @staticmethod
    def forward(ctx: Any, W_in: torch.Tensor, W_rec: torch.Tensor, W_out: torch.Tensor, noise: torch.Tensor,
                gumbel: torch.Tensor, h0: torch.Tensor, y: torch.Tensor, eps_list: tuple[float, ...],
                y_self: torch.Tensor | None, tau: float, compiled: bool,
                workspace: Workspace | None) -> tuple[torch.Tensor, torch.Tensor]:
        noise_tm, states, logits, onehot, soft = _forward_samples(W_in, W_rec, W_out, noise, gumbel, h0, tau, workspace)
        batch = noise.shape[0]
        result = binary_sinkhorn(onehot.reshape(batch, -1), y, eps_list, y_self, with_grad=True, compiled=compiled,
                                 workspace=workspace)
        # straight-through: d/dlogits of softmax((logits + g) / tau), fed with dS/d(sample)
        grad_x = result.grad.view_as(soft)
        grad_logits = soft * (grad_x - (grad_x * soft).sum(dim=-1, keepdim=True)) / tau
        ctx.save_for_backward(W_rec, W_out, noise_tm, states, grad_logits)
        ctx.workspace = workspace
        ctx.set_materialize_grads(False)
        return result.value, logits

    @staticmethod
    def backward(ctx: Any, grad_value: torch.Tensor | None, grad_logits_out: torch.Tensor | None):
        W_rec, W_out, noise_tm, states, grad_logits = ctx.saved_tensors
        total = torch.zeros_like(grad_logits) if grad_value is None else grad_logits * grad_value
        if grad_logits_out is not None:
            total = total + grad_logits_out
        steps = noise_tm.shape[0]
        batch = noise_tm.shape[1]
        g_tm = total.transpose(0, 1).contiguous()  # (L, B, K)
        hidden = states[1:]
        grad_out = g_tm.reshape(steps * batch, -1).T @ hidden.reshape(steps * batch, -1)
        if ctx.workspace is None:
            grad_hidden = g_tm @ W_out  # (L, B, H)
        else:
            grad_hidden = torch.matmul(g_tm, W_out, out=ctx.workspace.take("grad_hidden", (steps, batch, W_out.shape[1]),
                                                                             W_out.dtype, W_out.device))
        grad_in, grad_rec = rnn_weight_grads(grad_hidden, states, noise_tm, W_rec)
        return grad_in, grad_rec, grad_out, None, None, None, None, None, None, None, None, None


def fast_divergence(model: torch.nn.Module, noise: torch.Tensor, gumbel: torch.Tensor, h0: torch.Tensor,
                    y: torch.Tensor, eps_list: tuple[float, ...], y_self: torch.Tensor | None, tau: float = 1.0,
                    compiled: bool = False, workspace: Workspace | None = None) -> torch.Tensor:
    """The Sinkhorn divergence of the generated one-hot batch to ``y``, without gradients (validation).

    Args:
        model: a :class:`hmmrnn.model.NoiseRNN`.
        noise: (B, L, D); gumbel: (B, L, K); h0: (B, H); y: (B', L K) data batch.
        compiled: as :func:`fast_loss`.
        workspace: buffers to reuse for the big temporaries (:class:`hmmrnn.workspace.Workspace`).

    Returns:
        0-d tensor, equal to ``sinkhorn_divergence`` of ``hard_gumbel_softmax`` samples to rounding.
    """
    with torch.no_grad():
        *_, onehot, _ = _forward_samples(model.W_in, model.W_rec, model.W_out, noise, gumbel, h0, tau, workspace)
        return binary_sinkhorn(onehot.reshape(noise.shape[0], -1), y, eps_list, y_self, compiled=compiled,
                               workspace=workspace).value


def fast_loss(model: torch.nn.Module, noise: torch.Tensor, gumbel: torch.Tensor, h0: torch.Tensor, y: torch.Tensor,
              eps_list: tuple[float, ...], y_self: torch.Tensor | None, tau: float, stats_weight: float,
              data_pairs: torch.Tensor | None, compiled: bool = False,
              workspace: Workspace | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for :func:`hmmrnn.train._loss`: returns (total loss, Sinkhorn divergence).

    Both carry gradients to ``model.W_in``, ``W_rec``, ``W_out`` through the hand-written
    backward of :class:`_FastLoss`. Args as ``_loss`` (shapes: noise (B, L, D), gumbel
    (B, L, K), h0 (B, H), y (B', L K)), plus ``compiled`` for the Sinkhorn passes
    (:func:`hmmrnn.sinkhorn.binary_sinkhorn`) and ``workspace``: buffers for the big
    temporaries, reused from step to step (:class:`hmmrnn.workspace.Workspace`; the same
    numbers, no fresh memory per step). With a workspace, call ``backward`` on the result
    before the next call with the same workspace (the step's saved states live there).
    """
    from .train import pair_statistics_kl

    if noise.ndim != 3 or gumbel.shape[:2] != noise.shape[:2] or h0.shape != (noise.shape[0], model.W_rec.shape[0]):
        raise ValueError(f"noise (B, L, D), gumbel (B, L, K) and h0 (B, H) disagree: {tuple(noise.shape)}, "
                         f"{tuple(gumbel.shape)}, {tuple(h0.shape)}")
    divergence, logits = _FastLoss.apply(model.W_in, model.W_rec, model.W_out, noise, gumbel, h0, y, eps_list,
                                         y_self, tau, compiled, workspace)
    if stats_weight > 0 and data_pairs is not None:
        steps = noise.shape[1] - 1
        return divergence + stats_weight * steps * pair_statistics_kl(logits, data_pairs), divergence
    return divergence, divergence
