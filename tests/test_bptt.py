"""Tests of hmmrnn.bptt: the hand-written training loss against autograd and geomloss.

The references are independent implementations: the model's own recurrence and PyTorch
autograd through it, ``hmmrnn.train._loss`` (autograd through the re-implemented Sinkhorn)
and geomloss's ``SamplesLoss`` with autograd (the eager baseline of the benchmark). In
float64 everything agrees to rounding (~1e-14); in float32 to ~1e-5 (rounding of the
Sinkhorn potentials, the same size for the reference against float64)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from hmmrnn.bptt import fast_divergence, fast_loss, onehot_samples, rnn_states, rnn_weight_grads
from hmmrnn.hmm import get_hmm, one_hot, sample
from hmmrnn.model import NoiseRNN, hard_gumbel_softmax, sample_gumbel
from hmmrnn.sinkhorn import epsilon_schedule, geomloss_divergence, onehot_diameter, self_transport_term, sinkhorn_divergence
from hmmrnn import runfolder
from hmmrnn import train as train_module
from hmmrnn.train import TrainConfig, _loss, pair_statistics, train
from hmmrnn.workspace import Workspace

B, L, H, D = 48, 9, 12, 5


def problem(seed: int, dtype=torch.float64, h0_mode: str = "zeros", name: str = "linear3"):
    """A small model whose outputs are not trivial (weights scaled up), noise, Gumbel noise, data."""
    hmm = get_hmm(name)
    k = hmm.n_outputs
    _, outputs = sample(hmm, B, L, np.random.default_rng(seed))
    y = torch.from_numpy(one_hot(outputs, k).reshape(B, -1)).to(dtype)
    model = NoiseRNN(D, H, k, h0=h0_mode, generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        model.W_rec.mul_(3.0)
        model.W_out.mul_(5.0)
    gen = torch.Generator().manual_seed(seed + 100)
    noise = torch.randn(B, L, D, generator=gen, dtype=dtype)
    gumbel = sample_gumbel((B, L, k), gen).to(dtype)
    h0 = model.initial_state(B, gen).to(dtype)
    schedule = epsilon_schedule(onehot_diameter(y), 0.2)
    return model, noise, gumbel, h0, y, schedule, self_transport_term(y, schedule), pair_statistics(y.reshape(B, L, k))


def loss_and_grads(fn, model, *args):
    model = copy.deepcopy(model)
    total, divergence = fn(model, *args)
    total.backward()
    return float(total.detach()), float(divergence.detach()), [p.grad.clone() for p in (model.W_in, model.W_rec, model.W_out)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("seed, h0_mode, stats_weight", [(0, "zeros", 0.0), (1, "normal", 0.0), (2, "zeros", 0.3), (3, "normal", 1.0)])
def test_fast_loss_equals_autograd_loss_float64(seed, h0_mode, stats_weight):
    model, noise, gumbel, h0, y, sched, y_self, pairs = problem(seed, h0_mode=h0_mode)
    args = (noise, gumbel, h0, y, sched, y_self, 1.0, stats_weight, pairs)
    t_ref, d_ref, g_ref = loss_and_grads(_loss, model, *args)
    t_fast, d_fast, g_fast = loss_and_grads(fast_loss, model, *args)
    assert t_fast == pytest.approx(t_ref, rel=1e-12) and d_fast == pytest.approx(d_ref, rel=1e-12)
    for ours, theirs in zip(g_fast, g_ref):
        assert float(theirs.norm()) > 0
        assert rel(ours, theirs) < 1e-10


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_fast_loss_equals_geomloss_with_autograd(tau):
    """The eager baseline: model rollout, straight-through sample, geomloss, autograd."""
    model, noise, gumbel, h0, y, sched, y_self, pairs = problem(4, name="linear2")
    ref = copy.deepcopy(model)
    hidden = ref.hidden_states(noise, h0)
    x = hard_gumbel_softmax(ref.logits(hidden), gumbel, tau).reshape(B, -1)
    value = geomloss_divergence(x, y)
    value.backward()
    t_fast, _, g_fast = loss_and_grads(fast_loss, model, noise, gumbel, h0, y, sched, y_self, tau, 0.0, None)
    assert t_fast == pytest.approx(float(value.detach()), rel=1e-12)
    for ours, p in zip(g_fast, (ref.W_in, ref.W_rec, ref.W_out)):
        assert rel(ours, p.grad) < 1e-10


def test_fast_loss_float32_rounding_matches_the_reference():
    # both float32 implementations against the float64 truth: errors of the same size (~1e-6 - 1e-5)
    model, noise, gumbel, h0, y, sched, y_self, pairs = problem(5)
    _, _, truth = loss_and_grads(_loss, model, noise, gumbel, h0, y, sched, y_self, 1.0, 0.0, None)
    args32 = [a.float() for a in (noise, gumbel, h0, y)]
    y_self32 = self_transport_term(args32[3], sched)
    m32 = copy.deepcopy(model).float()
    t_ref, _, g_ref = loss_and_grads(_loss, m32, *args32, sched, y_self32, 1.0, 0.0, None)
    t_fast, _, g_fast = loss_and_grads(fast_loss, m32, *args32, sched, y_self32, 1.0, 0.0, None)
    assert t_fast == pytest.approx(t_ref, rel=1e-6)
    for ours, theirs, exact in zip(g_fast, g_ref, truth):
        assert rel(ours.double(), exact) < 5e-5
        assert rel(theirs.double(), exact) < 5e-5


def test_rnn_states_and_weight_grads_match_the_model_and_autograd():
    model, noise, _, h0, *_ = problem(6, h0_mode="normal")
    states = rnn_states(noise.transpose(0, 1).contiguous(), h0, model.W_in.detach(), model.W_rec.detach())
    hidden = model.hidden_states(noise, h0)
    torch.testing.assert_close(states[0], h0, rtol=0, atol=0)
    torch.testing.assert_close(states[1:].transpose(0, 1), hidden.detach(), rtol=1e-12, atol=1e-12)
    weights = torch.randn(B, L, H, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (hidden * weights).sum().backward()
    grad_in, grad_rec = rnn_weight_grads(weights.transpose(0, 1).contiguous(), states, noise.transpose(0, 1).contiguous(),
                                         model.W_rec.detach())
    assert rel(grad_in, model.W_in.grad) < 1e-12
    assert rel(grad_rec, model.W_rec.grad) < 1e-12


def test_onehot_samples_are_the_straight_through_forward_values():
    model, noise, gumbel, h0, *_ = problem(8)
    logits = model.logits(model.hidden_states(noise, h0)).detach()
    onehot, soft = onehot_samples(logits, gumbel, 0.7)
    torch.testing.assert_close(onehot, hard_gumbel_softmax(logits, gumbel, 0.7), rtol=0, atol=1e-15)
    assert torch.all(onehot.sum(-1) == 1) and torch.all((onehot == 0) | (onehot == 1))
    torch.testing.assert_close(soft.sum(-1), torch.ones(B, L, dtype=soft.dtype))


def test_fast_divergence_is_the_validation_loss():
    model, noise, gumbel, h0, y, sched, y_self, _ = problem(9)
    with torch.inference_mode():
        x = hard_gumbel_softmax(model.logits(model.hidden_states(noise, h0)), gumbel, 1.0).reshape(B, -1)
        expected = float(sinkhorn_divergence(x, y, eps_list=sched, y_self_term=y_self))
        got = float(fast_divergence(model, noise, gumbel, h0, y, sched, y_self))
    assert got == pytest.approx(expected, rel=1e-12)


def test_a_workspace_changes_no_number_over_consecutive_steps_and_validation():
    """The same buffers reused for two problems of different sizes, a validation in between:
    losses and gradients equal to the last bit those of fresh memory, and in float32 (int8 overlaps)."""
    ws = Workspace()
    for seed, dtype in ((4, torch.float32), (5, torch.float64), (4, torch.float32)):
        model, noise, gumbel, h0, y, sched, y_self, pairs = problem(seed, dtype=dtype)
        if seed == 5:  # a smaller batch: views of the larger buffers
            noise, gumbel, h0, y = noise[:20], gumbel[:20], h0[:20], y[:20]
            y_self = self_transport_term(y, sched)
        args = (noise, gumbel, h0, y, sched, y_self, 1.0, 0.0, None)
        t_ref, d_ref, g_ref = loss_and_grads(fast_loss, model, *args)
        t_ws, d_ws, g_ws = loss_and_grads(lambda m, *a: fast_loss(m, *a, workspace=ws), model, *args)
        assert (t_ws, d_ws) == (t_ref, d_ref)
        assert all(torch.equal(a, b) for a, b in zip(g_ws, g_ref))
        with torch.inference_mode():
            assert float(fast_divergence(model, noise, gumbel, h0, y, sched, y_self, workspace=ws)) == float(
                fast_divergence(model, noise, gumbel, h0, y, sched, y_self))
    assert ws.nbytes() > 0


def test_workspace_buffers_are_reused_grow_and_draw_torch_randn_numbers():
    ws = Workspace()
    a = ws.take("x", (4, 5))
    b = ws.take("x", (2, 3))
    assert a.data_ptr() == b.data_ptr() and b.shape == (2, 3) and b.is_contiguous()
    c = ws.take("x", (10, 10))  # larger: a new buffer
    assert c.shape == (10, 10) and ws.nbytes() == 100 * 4
    assert ws.take("x", (3,), torch.int32).dtype == torch.int32  # another dtype: its own buffer
    with torch.inference_mode():  # taken during validation, still an ordinary tensor for training
        v = ws.take("y", (3, 4))
    v.normal_()  # an inference tensor would refuse this outside inference mode
    drawn = ws.take("x", (3, 7, 2)).normal_(generator=torch.Generator().manual_seed(8))
    assert torch.equal(drawn, torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError, match="negative dimension"):
        ws.take("x", (2, -1))


def test_fast_loss_rejects_mismatched_shapes():
    model, noise, gumbel, h0, y, sched, y_self, _ = problem(10)
    with pytest.raises(ValueError, match="disagree"):
        fast_loss(model, noise, gumbel[:, :-1], h0, y, sched, y_self, 1.0, 0.0, None)
    with pytest.raises(ValueError, match="disagree"):
        fast_loss(model, noise, gumbel, h0[:-1], y, sched, y_self, 1.0, 0.0, None)


# --------------------------------------------------------------------------- inside train()

TINY = TrainConfig(hmm="linear2", hidden_size=8, input_size=4, n_sequences=60, batch_size=16, seq_len=10, epochs=4,
                   val_every=1, resume_every=1, lr=0.05, seed=0, compile=False, device="cpu")


def test_train_runs_the_fast_loss_and_equals_a_run_with_the_autograd_loss(tmp_path, monkeypatch):
    fast = train(TINY, tmp_path / "fast", progress=False)
    assert fast.training["loss"] == "bptt"

    def autograd_loss(*args, compiled=False, workspace=None):  # train()'s "bptt" path, computed by _loss and autograd
        return _loss(*args)

    monkeypatch.setattr(train_module, "fast_loss", autograd_loss)
    ref = train(TINY, tmp_path / "ref", progress=False)
    # the same run to float32 rounding (observed: losses ~1e-7 relative, weights ~1e-6 of ~0.6)
    np.testing.assert_allclose(fast.history["train_loss"], ref.history["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(fast.history["val_loss"], ref.history["val_loss"], rtol=1e-6)
    for name in ("W_in", "W_rec", "W_out"):
        np.testing.assert_allclose(getattr(fast.weights, name), getattr(ref.weights, name), rtol=0, atol=1e-5)


def test_a_resumed_run_keeps_the_loss_implementation_it_was_trained_with(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=2)
    path = folder / runfolder.RESUME_NAME
    state = runfolder.load_resume(path)
    assert state.run["loss"] == "bptt"
    # a resume file written before the fast loss existed names none: that run trained with _loss
    run = {k: v for k, v in state.run.items() if k != "loss"}
    runfolder.save_resume(path, dataclasses.replace(state, run=run))
    resumed = train(TINY, folder, resume=True, progress=False)
    assert resumed.training["loss"] == "autograd"
    assert runfolder.load_resume(path).run["loss"] == "autograd"
