"""Time one training step: a plain eager PyTorch + geomloss baseline vs hmmrnn's own step.

Usage (the paper's main configuration is the default)::

    python benchmarks/bench_train_step.py                     # L=100, batch 4096, H=150, D=100, 2 threads
    python benchmarks/bench_train_step.py --tcmalloc          # re-run itself with tcmalloc preloaded
    python benchmarks/bench_train_step.py --batch 256 --L 20 --steps 2 --warmup 1   # a quick check

Methods (each with a fresh model and optimiser; the same HMM batch ``y``):

* ``eager``: what one writes from the paper's description: ``torch.nn.RNN(nonlinearity="relu",
  bias=False)`` + bias-free ``nn.Linear`` readout + ``F.gumbel_softmax(hard=True)`` +
  ``geomloss.SamplesLoss("sinkhorn", p=2, blur=0.2)`` + backward + gradient clip 0.9 + Adam.
* ``compiled``: hmmrnn's step exactly as :func:`hmmrnn.train.train` runs it: the loss
  ``hmmrnn.train._loss`` under ``torch.compile(dynamic=False)``, the temperature schedule and
  the data-data Sinkhorn term computed once for the batch, then backward, clip, Adam. The
  one-off compilation is timed separately (first call minus the median step).
* ``uncompiled``: the same step with ``_loss`` run eagerly.

Every step draws fresh input noise (and Gumbel noise), as training does. The reported time
is the median over ``--steps`` steps after ``--warmup`` steps. Before timing, the eager and
the hmmrnn losses (and the gradient of W_rec) are compared on identical inputs: the same
weights, input noise and Gumbel noise (drawn the way ``F.gumbel_softmax`` draws it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
METHODS = ("eager", "compiled", "uncompiled")
LABELS = {
    "eager": "eager baseline (nn.RNN + F.gumbel_softmax + geomloss)",
    "compiled": "hmmrnn step, torch.compile",
    "uncompiled": "hmmrnn step, no compile",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--L", type=int, default=100, help="sequence length (default 100)")
    parser.add_argument("--batch", type=int, default=4096, help="sequences per cloud (default 4096)")
    parser.add_argument("--hidden", type=int, default=150, help="hidden units H (default 150)")
    parser.add_argument("--input", type=int, default=100, help="noise dimensions D (default 100)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2; the compiled one's first includes compilation)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--hmm", default="linear2", help="target HMM of the data batch (default linear2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tcmalloc", action="store_true", help=f"re-execute with LD_PRELOAD={TCMALLOC} (if present)")
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods must be a subset of {METHODS}, got {args.methods!r}")
    args.methods = methods
    for name in ("L", "batch", "hidden", "input", "steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step is never timed)")
    return args


def tcmalloc_preloaded() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def maybe_reexec(args: argparse.Namespace, argv: list[str]) -> None:
    """With --tcmalloc, run this same command again with tcmalloc preloaded (once)."""
    if not args.tcmalloc or tcmalloc_preloaded():
        return
    if not os.path.exists(TCMALLOC):
        print(f"note: {TCMALLOC} not found (Debian package libtcmalloc-minimal4); running without it", file=sys.stderr)
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = (TCMALLOC + " " + env.get("LD_PRELOAD", "")).strip()
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    maybe_reexec(args, argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from geomloss import SamplesLoss
    from torch import nn

    from hmmrnn.hmm import get_hmm, one_hot, sample
    from hmmrnn.model import NoiseRNN, sample_gumbel
    from hmmrnn.sinkhorn import epsilon_schedule, onehot_diameter, self_transport_term
    from hmmrnn.train import _loss, pair_statistics

    torch.set_num_threads(args.threads)
    B, L, H, D = args.batch, args.L, args.hidden, args.input
    hmm = get_hmm(args.hmm)
    K = hmm.n_outputs
    _, outputs = sample(hmm, B, L, np.random.default_rng(args.seed))
    y = torch.from_numpy(one_hot(outputs, K).reshape(B, L * K))
    tau, clip, lr, betas, blur = 1.0, 0.9, 1e-3, (0.9, 0.9), 0.2

    # ------------------------------------------------------------------ the eager baseline
    class EagerBaseline(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(D, H, nonlinearity="relu", bias=False, batch_first=True)
            self.readout = nn.Linear(H, K, bias=False)

        def forward(self, noise: torch.Tensor) -> torch.Tensor:
            hidden, _ = self.rnn(noise, torch.zeros(1, noise.shape[0], H))
            onehot = F.gumbel_softmax(self.readout(hidden), tau=tau, hard=True)
            return onehot.reshape(noise.shape[0], -1)

    sinkhorn = SamplesLoss("sinkhorn", p=2, blur=blur)

    # ------------------------------------------------------------------ hmmrnn's step (train.py)
    schedule = epsilon_schedule(onehot_diameter(y), blur)
    y_self = self_transport_term(y, schedule)
    pairs = pair_statistics(y.reshape(B, L, K))

    def make_hmmrnn(seed: int) -> NoiseRNN:
        return NoiseRNN(D, H, K, h0="zeros", generator=torch.Generator().manual_seed(seed))

    compiled_loss = torch.compile(_loss, dynamic=False) if "compiled" in args.methods else None

    # ------------------------------------------------------------------ agreement on identical inputs
    check_model = make_hmmrnn(args.seed)
    baseline = EagerBaseline()
    with torch.no_grad():
        baseline.rnn.weight_ih_l0.copy_(check_model.W_in)
        baseline.rnn.weight_hh_l0.copy_(check_model.W_rec)
        baseline.readout.weight.copy_(check_model.W_out)
    gen = torch.Generator().manual_seed(args.seed + 1)
    noise = torch.randn(B, L, D, generator=gen)
    gumbel_seed = args.seed + 2
    torch.manual_seed(gumbel_seed)
    gumbel = -torch.empty(B, L, K).exponential_().log()  # what F.gumbel_softmax draws after this seed
    torch.manual_seed(gumbel_seed)
    eager_value = sinkhorn(baseline(noise), y)
    eager_value.backward()
    eager_grad = baseline.rnn.weight_hh_l0.grad.clone()
    agreement = {}
    for name, fn in (("uncompiled", _loss), ("compiled", compiled_loss)):
        if fn is None or name not in args.methods:
            continue
        check_model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        total, _ = fn(check_model, noise, gumbel, torch.zeros(B, H), y, schedule, y_self, tau, 0.0, pairs)
        total.backward()
        first_call = time.perf_counter() - start
        value_diff = abs(float(total.detach()) - float(eager_value.detach())) / abs(float(eager_value.detach()))
        grad_diff = float((check_model.W_rec.grad - eager_grad).norm() / eager_grad.norm())
        agreement[name] = (float(total.detach()), value_diff, grad_diff, first_call)
    del check_model, baseline, noise, gumbel

    # ------------------------------------------------------------------ timing
    def eager_runner():
        model = EagerBaseline()
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)

        def step() -> float:
            x = model(torch.randn(B, L, D))
            loss = sinkhorn(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return float(loss.detach())

        return step

    def hmmrnn_runner(loss_fn):
        model = make_hmmrnn(args.seed + 3)
        opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
        noise_gen = torch.Generator().manual_seed(args.seed + 4)

        def step() -> float:  # the body of train()'s inner loop
            noise = torch.randn(B, L, D, generator=noise_gen)
            h0 = model.initial_state(B, noise_gen)
            gumbel = sample_gumbel((B, L, K), noise_gen)
            total, divergence = loss_fn(model, noise, gumbel, h0, y, schedule, y_self, tau, 0.0, pairs)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return float(divergence.detach())

        return step

    runners = {"eager": eager_runner, "compiled": lambda: hmmrnn_runner(compiled_loss), "uncompiled": lambda: hmmrnn_runner(_loss)}
    results: dict[str, dict[str, float]] = {}
    for method in args.methods:
        step = runners[method]()
        first = None
        for i in range(args.warmup):
            start = time.perf_counter()
            step()
            if i == 0:
                first = time.perf_counter() - start
        times, losses = [], []
        for _ in range(args.steps):
            start = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - start)
        results[method] = {"median": statistics.median(times), "min": min(times), "max": max(times), "first": first, "loss": losses[-1]}
        print(f"# {method}: median {results[method]['median']:.3f} s/step (min {min(times):.3f}, max {max(times):.3f}), loss {losses[-1]:.3f}", flush=True)

    # ------------------------------------------------------------------ report
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"training step: L={L}, batch={B}, H={H}, D={D}, K={K} ({hmm.name}), float32, "
          f"{args.threads} threads, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
          f"tcmalloc preloaded: {'yes' if tcmalloc_preloaded() else 'no'}, peak RSS {peak_mb:.0f} MB")
    print()
    print("| method | s/step | speed-up vs eager |")
    print("|---|---|---|")
    eager_time = results.get("eager", {}).get("median")
    for method in args.methods:
        t = results[method]["median"]
        speedup = f"{eager_time / t:.2f}x" if eager_time else "-"
        print(f"| {LABELS[method]} | {t:.3f} | {speedup} |")
    print()
    if "compiled" in results:
        # the agreement check made the first compiled call (forward + backward compilation);
        # the timed model's first step may add a recompilation (dynamo guards on the module)
        compile_s = agreement["compiled"][3] - results["compiled"]["median"]
        again_s = results["compiled"]["first"] - results["compiled"]["median"]
        print(f"torch.compile, one-off cost (first call minus a step): {compile_s:.1f} s; "
              f"first step of a second model: +{again_s:.1f} s")
    print(f"loss agreement on identical inputs: geomloss eager {float(eager_value.detach()):.6f}")
    for name, (value, value_diff, grad_diff, _) in agreement.items():
        print(f"  hmmrnn {name}: {value:.6f}  relative difference {value_diff:.1e} (loss), {grad_diff:.1e} (grad W_rec)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
