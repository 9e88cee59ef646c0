#!/usr/bin/env python
"""A faithful CPU copy of the authors' training loop, for an A/B against ``hmmrnn.train``.

The loop of ``scripts/rnn.py`` in the authors' repository (GitHub ``EliaTorre/hmmrnn``,
``RNN.train_model``), kept as it is where it decides the numbers:

* ``nn.RNN(D, H, nonlinearity="relu", bias=False, batch_first=True)`` and a bias-free
  ``nn.Linear(H, K)`` readout, PyTorch's default initialisation;
* h_0 = 0 (``init: False`` in every current config of theirs) or N(0, I) (``--h0 normal``);
* outputs ``F.gumbel_softmax(logits, tau=1, hard=True, eps=1e-10)``;
* loss ``geomloss.SamplesLoss(blur=0.2)`` (Sinkhorn, p=2, debiased, scaling 0.5) between the
  flattened one-hot sequences of a generated batch and a data batch;
* ``Adam(lr=1e-3, betas=(0.9, 0.9))``, ``clip_grad_norm_`` each step;
* the 10,000 training sequences in the same batches every epoch (4096, 4096, 1808), fresh
  N(0, 1) input noise every epoch.

What differs, and why it cannot change the training dynamics:

* the data: the same 30,000 HMM sequences that ``hmmrnn.train.train`` makes for the same
  ``--seed`` (its ``make_dataset`` with the first child of ``SeedSequence(seed)``), so that the
  two loops see identical data;
* randomness comes from explicit generators (weights: ``torch.manual_seed(seed)`` inside a
  forked RNG, as ``nn.Module`` initialises from the global generator; input and Gumbel noise:
  the global generator seeded once with ``seed + 1``);
* validation every ``--val-every`` epochs instead of every epoch (it does not feed back into
  training); it is reported both as the authors average it (unweighted mean of the batch
  losses, fresh noise) and weighted by batch size (as ``hmmrnn.train`` does);
* the loss of one step runs under ``torch.compile`` when ``--compile`` is given (same numbers
  up to roundoff, several times faster on a CPU).

Writes ``<out>/history.json`` atomically after every validation (so a killed run keeps what it
did) and prints one line per validation.

Usage::

    python scripts/authors_loop.py --hmm fully3 --seed 0 --epochs 200 --out runs/ab/authors-fully3-s0 --compile
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from geomloss import SamplesLoss
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hmmrnn.checkpoints import atomic_write_bytes  # noqa: E402
from hmmrnn.train import TrainConfig, make_dataset  # noqa: E402


class AuthorsRNN(nn.Module):
    """The authors' ``RNN``: nn.RNN (ReLU, no bias) + bias-free linear readout."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, h0_normal: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.h0_normal = h0_normal
        self.rnn = nn.RNN(input_size, hidden_size, 1, nonlinearity="relu", batch_first=True, bias=False)
        self.fc = nn.Linear(hidden_size, output_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) noise -> (B, L, K) hard Gumbel-softmax one-hot outputs."""
        if self.h0_normal:
            h = torch.normal(0.0, 1.0, size=(1, x.size(0), self.hidden_size))
        else:
            h = torch.zeros(1, x.size(0), self.hidden_size)
        out, _ = self.rnn(x, h)
        return F.gumbel_softmax(self.fc(out), tau=1.0, hard=True, eps=1e-10, dim=-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hmm", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--h0", choices=("zeros", "normal"), default="zeros")
    parser.add_argument("--clip", type=float, default=None, help="default: 0.3 for fully3/cyclic4, else 0.9 (the authors' configs)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    config = TrainConfig(hmm=args.hmm, seed=args.seed)
    hmm = config.target()
    seq_len = int(hmm.seq_len)
    clip = args.clip if args.clip is not None else (0.3 if args.hmm in ("fully3", "cyclic4") else 0.9)
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    data = make_dataset(hmm, config.n_sequences, seq_len, np.random.default_rng(seeds[0]))
    train_seq, val_seq = data.train, data.val
    k = hmm.n_outputs

    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = AuthorsRNN(config.input_size, config.hidden_size, k, args.h0 == "normal")
    torch.manual_seed(args.seed + 1)  # input noise and Gumbel noise (a script, not the package)
    criterion = SamplesLoss(blur=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.9))

    def batch_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = model(inputs)
        return criterion(outputs.reshape(outputs.shape[0], -1), targets)

    loss_fn = torch.compile(batch_loss) if args.compile else batch_loss
    batch_size = 4096
    history: dict = {"epoch": [], "train_loss": [], "val_epoch": [], "val_loss_unweighted": [], "val_loss_weighted": [],
                     "settings": {"hmm": args.hmm, "seed": args.seed, "h0": args.h0, "clip": clip, "seq_len": seq_len,
                                  "compile": args.compile, "torch": torch.__version__, "threads": torch.get_num_threads()}}
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        train_noise = torch.normal(0.0, 1.0, size=(train_seq.shape[0], seq_len, config.input_size))
        model.train()
        losses = []
        for i in range(0, len(train_seq), batch_size):
            inputs, targets = train_noise[i:i + batch_size], train_seq[i:i + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(inputs, targets)
            losses.append(loss.item())
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
        train_loss = sum(losses) / len(losses)  # the authors' unweighted mean
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}")
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        if epoch % args.val_every == 0 or epoch == args.epochs:
            val_noise = torch.normal(0.0, 1.0, size=(val_seq.shape[0], seq_len, config.input_size))
            model.eval()
            values, sizes = [], []
            with torch.inference_mode():
                for i in range(0, len(val_seq), batch_size):
                    targets = val_seq[i:i + batch_size]
                    values.append(float(batch_loss(val_noise[i:i + batch_size], targets)))
                    sizes.append(targets.shape[0])
            unweighted = sum(values) / len(values)
            weighted = sum(v * n for v, n in zip(values, sizes)) / sum(sizes)
            history["val_epoch"].append(epoch)
            history["val_loss_unweighted"].append(unweighted)
            history["val_loss_weighted"].append(weighted)
            history["seconds"] = time.perf_counter() - start
            atomic_write_bytes(args.out / "history.json", json.dumps(history).encode())
            rate = (time.perf_counter() - start) / epoch
            print(f"epoch {epoch:5d}  train {train_loss:8.3f}  val {unweighted:8.3f} (weighted {weighted:8.3f})  ({rate:.1f} s/epoch)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
