"""Readout calibration: fit the readout to the data's pair statistics, dynamics untouched.

Why. The Sinkhorn loss on clouds of 4,096 sequences barely sees an output as rare as the
linear chains' middle one (0.01 per step, about one per sequence at a random position): a
generated sequence that places it at a random position is *two* mismatches away from its
matched HMM sequence, one that never emits it only one. Trained networks therefore emit it
far too rarely (the paper's fit-quality figure hints at the same in its own networks: squared errors of ~1e-4 in the column to the rare output). The outputs are
not fed back into the network, so the readout ``W_out`` does not influence the hidden
dynamics at all: it can be re-fitted on hidden states of the trained network without
changing a single trajectory.

What. Given hidden states ``h_t`` of driven runs (fixed, from the trained ``W_in``, ``W_rec``)
and the joint distribution of consecutive outputs in the *training data* (no knowledge of
the HMM's parameters is used), minimise over ``W_out``

    (L - 1) * KL(P_data(o_t, o_{t+1}) || P_model(o_t, o_{t+1}))  +  penalty * ||W_out - W_out0||^2,

where ``P_model = mean_t softmax(W_out h_t) softmax(W_out h_{t+1})^T`` is the model's exact
pair distribution given the hidden trajectories (outputs at different steps are independent
given h). The penalty keeps the readout close to the trained one (the problem has 3H
parameters for 8 constraints). L-BFGS, deterministic. ``W_in`` and ``W_rec`` are returned
unchanged, so every dynamical analysis of the network is unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from .hmm import one_hot
from .model import NoiseRNN, RNNWeights
from .train import make_dataset, pair_statistics as pair_distribution

if TYPE_CHECKING:
    from .checkpoints import Checkpoint

__all__ = ["CalibrationResult", "calibrate_readout", "calibrate_checkpoint"]


class CalibrationResult(NamedTuple):
    """Outcome of :func:`calibrate_readout`.

    Fields:
        weights: the calibrated weights (W_in, W_rec identical to the input; new W_out).
        kl_before, kl_after: (L-1) * KL(data pairs || model pairs) before and after.
        data_pairs: (K, K) joint distribution of consecutive outputs in the data.
        model_pairs_before, model_pairs_after: (K, K) the model's, before and after.
        readout_change: ||W_out - W_out0|| / ||W_out0|| (relative Frobenius change).
    """

    weights: RNNWeights
    kl_before: float
    kl_after: float
    data_pairs: np.ndarray
    model_pairs_before: np.ndarray
    model_pairs_after: np.ndarray
    readout_change: float


def _kl(p: torch.Tensor, q: torch.Tensor, floor: float = 1e-8) -> torch.Tensor:
    p = p.clamp_min(floor)
    return (p * (p.log() - q.clamp_min(floor).log())).sum()


def calibrate_readout(
    weights: RNNWeights,
    data_outputs: np.ndarray,
    generator: torch.Generator,
    n_runs: int = 2048,
    length: int = 100,
    penalty: float = 0.1,
    max_iter: int = 300,
    h0: str = "zeros",
) -> CalibrationResult:
    """Re-fit ``W_out`` so that the model's consecutive-output statistics match the data's.

    Args:
        weights: trained weights (not modified).
        data_outputs: (n, L') int training sequences of the target (their pair statistics).
        generator: torch generator of the driven runs whose hidden states are used.
        n_runs: driven runs of ``length`` steps (their hidden states: n_runs x length x H).
        penalty: weight of ``||W_out - W_out0||^2``.
        max_iter: L-BFGS iterations.
        h0: initial state mode of the runs.

    Returns:
        :class:`CalibrationResult`.
    """
    data_outputs = np.asarray(data_outputs)
    if data_outputs.ndim != 2 or data_outputs.shape[1] < 2:
        raise ValueError(f"data_outputs must be (n, L) with L >= 2, got shape {data_outputs.shape}")
    k = weights.output_size
    model = NoiseRNN.from_weights(weights, h0=h0)
    with torch.no_grad():
        hidden = model.rollout(n_runs, length, generator).hidden  # (n_runs, length, H)
        data_pairs = pair_distribution(torch.from_numpy(one_hot(data_outputs, k)).double())
    hidden = hidden.double()
    w0 = torch.tensor(np.asarray(weights.W_out), dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    steps = length - 1

    def objective() -> torch.Tensor:
        probs = torch.softmax(hidden @ w.T, dim=-1)
        return steps * _kl(data_pairs, pair_distribution(probs)) + penalty * ((w - w0) ** 2).sum()

    with torch.no_grad():
        before_pairs = pair_distribution(torch.softmax(hidden @ w0.T, dim=-1))
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        after_pairs = pair_distribution(torch.softmax(hidden @ w.T, dim=-1))
        new = RNNWeights(weights.W_in.copy(), weights.W_rec.copy(), w.detach().numpy().astype(np.float32))
        change = float((w - w0).norm() / w0.norm())
    return CalibrationResult(
        weights=new,
        kl_before=float(steps * _kl(data_pairs, before_pairs)),
        kl_after=float(steps * _kl(data_pairs, after_pairs)),
        data_pairs=data_pairs.numpy(),
        model_pairs_before=before_pairs.numpy(),
        model_pairs_after=after_pairs.numpy(),
        readout_change=change,
    )


def calibrate_checkpoint(source: "str | Path", out: "str | Path", seed: int = 0, n_runs: int = 2048,
                         penalty: float = 0.1, max_iter: int = 300) -> "Checkpoint":
    """Calibrate a checkpoint's readout on its own training data and write the result to ``out``.

    The training sequences are regenerated exactly from the source's recorded seed and sizes
    (:func:`hmmrnn.train.make_dataset`); the driven runs use ``torch.Generator().manual_seed(seed)``.
    The new checkpoint keeps the source's history; its snapshots are the source's (read through
    ``Checkpoint.snapshots()``, not copied); ``training["calibration"]`` records the source,
    the settings and the before/after statistics.
    """
    from . import checkpoints as ckpt

    checkpoint = ckpt.load(source)
    if checkpoint.path is not None and Path(out).resolve() == checkpoint.path.resolve():
        raise ckpt.CheckpointError(f"out {out} is the source checkpoint's folder; write the calibrated copy elsewhere "
                                   "(it would replace the network it was made from)")
    training = checkpoint.training
    for key in ("seed", "n_sequences", "seq_len"):
        if key not in training:
            raise ckpt.CheckpointError(f"{source}: training settings lack {key!r}; cannot regenerate its data")
    seeds = np.random.SeedSequence(int(training["seed"])).spawn(4)
    data = make_dataset(checkpoint.hmm, int(training["n_sequences"]), int(training["seq_len"]), np.random.default_rng(seeds[0]))
    n_train = data.train.shape[0]
    result = calibrate_readout(checkpoint.weights, data.outputs[:n_train], torch.Generator().manual_seed(int(seed)),
                               n_runs=n_runs, length=int(training["seq_len"]), penalty=penalty, max_iter=max_iter,
                               h0=checkpoint.rnn["h0"])
    new_training = dict(training)
    new_training["calibration"] = {
        "source": str(source),
        "what": "readout W_out re-fitted to the training data's consecutive-output statistics (hmmrnn.calibrate); W_in, W_rec unchanged",
        "seed": int(seed), "n_runs": int(n_runs), "penalty": float(penalty), "max_iter": int(max_iter),
        "kl_before": result.kl_before, "kl_after": result.kl_after, "readout_change": result.readout_change,
        "source_weights_out": np.asarray(checkpoint.weights.W_out).tolist(),
    }
    calibrated = ckpt.Checkpoint(result.weights, checkpoint.hmm, dict(checkpoint.rnn), new_training,
                                 dict(checkpoint.results, calibrated=True), checkpoint.history)
    ckpt.save(calibrated, out)
    return calibrated
