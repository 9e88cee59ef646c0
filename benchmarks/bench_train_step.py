"""Time one training step: a plain eager PyTorch + geomloss baseline vs hmmrnn's own step.

Usage (the paper's main configuration is the default: batch 4096, H=150, D=100, 2 threads)::

    python benchmarks/bench_train_step.py                        # L = 30, 40 and 100, eager vs hmmrnn
    python benchmarks/bench_train_step.py --L 100 --steps 5      # one length, more steps
    python benchmarks/bench_train_step.py --tcmalloc             # re-run itself with tcmalloc preloaded
    python benchmarks/bench_train_step.py --batch 256 --L 20 --steps 3 --no-memory   # a quick check

Methods (each with a fresh model and optimiser; the same HMM batch ``y``):

* ``eager``: what one writes from the paper's description: ``torch.nn.RNN(nonlinearity="relu",
  bias=False)`` + bias-free ``nn.Linear`` readout + ``F.gumbel_softmax(hard=True)`` +
  ``geomloss.SamplesLoss("sinkhorn", p=2, blur=0.2)`` + backward + gradient clip 0.9 + Adam.
* ``hmmrnn``: the step :func:`hmmrnn.train.train` runs: :func:`hmmrnn.bptt.fast_loss`
  (hand-written BPTT, exact one-hot samples, :func:`hmmrnn.sinkhorn.binary_sinkhorn` with
  its soft-min passes under ``torch.compile``) + backward + clip + Adam, with the
  temperature schedule and the data-data Sinkhorn term computed once per batch.
* ``hmmrnn-nocompile``: the same with the soft-min passes run eagerly (row blocks).
* ``autograd-compiled``: the previous hmmrnn step: ``hmmrnn.train._loss`` (autograd through
  the RNN and :func:`hmmrnn.sinkhorn.sinkhorn_divergence`) under ``torch.compile``.

Every step draws fresh input noise (and Gumbel noise), as training does. The methods are
interleaved (one step of each in turn, ``--steps`` rounds after ``--warmup`` rounds), so a
load change on a shared machine hits all of them; the reported time is the median. Before
timing, the eager and the hmmrnn losses and the gradients of all three weight matrices are
compared on identical inputs (same weights, input noise and Gumbel noise, drawn the way
``F.gumbel_softmax`` draws it). Per length the script also times an epoch of the hmmrnn
step as ``train()`` runs it (10,000 training sequences in batches of 4096, 4096, 1808, plus
1/``--val-every`` of a validation pass over 10,000 sequences), splits one hmmrnn step into
its phases (the profile line), and measures each method's peak memory in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
METHODS = ("eager", "hmmrnn", "hmmrnn-nocompile", "autograd-compiled")
LABELS = {
    "eager": "eager baseline (nn.RNN + F.gumbel_softmax + geomloss)",
    "hmmrnn": "hmmrnn step (hand-written BPTT + binary Sinkhorn, compiled passes)",
    "hmmrnn-nocompile": "hmmrnn step, Sinkhorn passes not compiled",
    "autograd-compiled": "previous hmmrnn step (_loss under torch.compile, autograd)",
}
N_TRAIN = N_VAL = 10000  # the paper's split of 30,000 sequences


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--L", default="30,40,100", help="comma-separated sequence lengths (default 30,40,100)")
    parser.add_argument("--batch", type=int, default=4096, help="sequences per cloud (default 4096)")
    parser.add_argument("--hidden", type=int, default=150, help="hidden units H (default 150)")
    parser.add_argument("--input", type=int, default=100, help="noise dimensions D (default 100)")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds (one step of each method per round; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--methods", default="eager,hmmrnn", help=f"comma-separated subset of {','.join(METHODS)} (default eager,hmmrnn)")
    parser.add_argument("--hmm", default="linear2", help="target HMM of the data batch (default linear2)")
    parser.add_argument("--val-every", type=int, default=5, help="validation period of the timed epoch (default 5, as train())")
    parser.add_argument("--no-epoch", action="store_true", help="skip the epoch timing")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tcmalloc", action="store_true", help=f"re-execute with LD_PRELOAD={TCMALLOC} (if present)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: METHOD:L
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods must be a subset of {METHODS}, got {args.methods!r}")
    args.methods = methods
    try:
        args.lengths = tuple(int(v) for v in args.L.split(",") if v.strip())
    except ValueError:
        parser.error(f"--L must be comma-separated integers, got {args.L!r}")
    if not args.lengths or min(args.lengths) < 2:
        parser.error("--L needs lengths >= 2")
    for name in ("batch", "hidden", "input", "steps", "threads", "val_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
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


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


class Setup:
    """Everything one sequence length needs: data batch, schedule, step factories."""

    def __init__(self, args: argparse.Namespace, length: int) -> None:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from geomloss import SamplesLoss
        from torch import nn

        from hmmrnn.hmm import get_hmm, one_hot, sample
        from hmmrnn.model import NoiseRNN
        from hmmrnn.sinkhorn import epsilon_schedule, onehot_diameter, self_transport_term
        from hmmrnn.train import pair_statistics

        self.args, self.L = args, length
        B, H, D = args.batch, args.hidden, args.input
        hmm = get_hmm(args.hmm)
        self.hmm, self.K = hmm, hmm.n_outputs
        K = self.K
        self.rng = np.random.default_rng(args.seed + length)
        _, outputs = sample(hmm, B, length, self.rng)
        self.y = torch.from_numpy(one_hot(outputs, K).reshape(B, length * K))
        self.tau, self.clip, self.lr, self.betas, self.blur = 1.0, 0.9, 1e-3, (0.9, 0.9), 0.2
        self.schedule = epsilon_schedule(onehot_diameter(self.y), self.blur)
        self.y_self = self_transport_term(self.y, self.schedule)
        self.pairs = pair_statistics(self.y.reshape(B, length, K))
        self.sinkhorn = SamplesLoss("sinkhorn", p=2, blur=self.blur)
        tau = self.tau

        class EagerBaseline(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn = nn.RNN(D, H, nonlinearity="relu", bias=False, batch_first=True)
                self.readout = nn.Linear(H, K, bias=False)

            def forward(self, noise: torch.Tensor) -> torch.Tensor:
                hidden, _ = self.rnn(noise, torch.zeros(1, noise.shape[0], H))
                onehot = F.gumbel_softmax(self.readout(hidden), tau=tau, hard=True)
                return onehot.reshape(noise.shape[0], -1)

        self.EagerBaseline = EagerBaseline
        self.make_hmmrnn = lambda seed: NoiseRNN(D, H, K, h0="zeros", generator=torch.Generator().manual_seed(seed))

    # ------------------------------------------------------------------ steps
    def runner(self, method: str):
        import torch

        from hmmrnn.bptt import fast_loss
        from hmmrnn.model import sample_gumbel
        from hmmrnn.train import _loss
        from hmmrnn.workspace import Workspace

        B, L, D, K = self.args.batch, self.L, self.args.input, self.K
        if method == "eager":
            model = self.EagerBaseline()
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, betas=self.betas)

            def step() -> float:
                x = model(torch.randn(B, L, D))
                loss = self.sinkhorn(x, self.y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
                opt.step()
                return float(loss.detach())

            return step

        ws = Workspace()  # train() reuses the step's big buffers (the noise, and those of the fast loss)
        if method == "autograd-compiled":
            compiled = torch.compile(_loss, dynamic=False)
            loss_fn = lambda *a: compiled(*a)  # noqa: E731
        else:
            use = method == "hmmrnn"
            loss_fn = lambda *a: fast_loss(*a, compiled=use, workspace=ws)  # noqa: E731
        model = self.make_hmmrnn(self.args.seed + 3)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, betas=self.betas)
        noise_gen = torch.Generator().manual_seed(self.args.seed + 4)

        def step() -> float:  # the body of train()'s inner loop
            noise = ws.take("noise", (B, L, D)).normal_(generator=noise_gen)  # torch.randn's numbers, as train() draws them
            h0 = model.initial_state(B, noise_gen)
            gumbel = sample_gumbel((B, L, K), noise_gen)
            total, divergence = loss_fn(model, noise, gumbel, h0, self.y, self.schedule, self.y_self, self.tau, 0.0, self.pairs)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
            opt.step()
            return float(divergence.detach())

        return step

    # ------------------------------------------------------------------ agreement
    def agreement(self) -> dict[str, float]:
        """geomloss + autograd (the eager baseline) vs hmmrnn's fast step on identical inputs."""
        import torch

        from hmmrnn.bptt import fast_loss

        B, L, D, H, K = self.args.batch, self.L, self.args.input, self.args.hidden, self.K
        model = self.make_hmmrnn(self.args.seed)
        baseline = self.EagerBaseline()
        with torch.no_grad():
            baseline.rnn.weight_ih_l0.copy_(model.W_in)
            baseline.rnn.weight_hh_l0.copy_(model.W_rec)
            baseline.readout.weight.copy_(model.W_out)
        noise = torch.randn(B, L, D, generator=torch.Generator().manual_seed(self.args.seed + 1))
        torch.manual_seed(self.args.seed + 2)
        gumbel = -torch.empty(B, L, K).exponential_().log()  # what F.gumbel_softmax draws after this seed
        torch.manual_seed(self.args.seed + 2)
        ref = self.sinkhorn(baseline(noise), self.y)
        ref.backward()
        ref_grads = [baseline.rnn.weight_ih_l0.grad, baseline.rnn.weight_hh_l0.grad, baseline.readout.weight.grad]
        total, _ = fast_loss(model, noise, gumbel, torch.zeros(B, H), self.y, self.schedule, self.y_self, self.tau, 0.0, None, compiled=True)
        total.backward()
        out = {"geomloss": float(ref.detach()), "hmmrnn": float(total.detach())}
        out["loss"] = abs(out["hmmrnn"] - out["geomloss"]) / abs(out["geomloss"])
        for name, ours, theirs in zip(("W_in", "W_rec", "W_out"), (model.W_in.grad, model.W_rec.grad, model.W_out.grad), ref_grads):
            out[name] = float((ours - theirs).norm() / theirs.norm())
        return out

    # ------------------------------------------------------------------ profile of one hmmrnn step
    def profile(self) -> dict[str, float]:
        """One hmmrnn step split into its phases (seconds), the pieces :func:`fast_loss` runs."""
        import torch

        from hmmrnn.bptt import _forward_samples, rnn_weight_grads
        from hmmrnn.model import sample_gumbel
        from hmmrnn.sinkhorn import binary_sinkhorn
        from hmmrnn.workspace import Workspace

        B, L, D, K = self.args.batch, self.L, self.args.input, self.K
        model = self.make_hmmrnn(self.args.seed + 5)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, betas=self.betas)
        gen = torch.Generator().manual_seed(self.args.seed + 6)
        ws = Workspace()
        times: dict[str, float] = {}

        def mark(name: str, start: float) -> float:
            now = time.perf_counter()
            times[name] = times.get(name, 0.0) + now - start
            return now

        for _ in range(2):  # the first pass fills the workspace (as train()'s first step); the second is timed
            times.clear()
            with torch.no_grad():
                t = time.perf_counter()
                noise = ws.take("noise", (B, L, D)).normal_(generator=gen)
                h0 = model.initial_state(B, gen)
                gumbel = sample_gumbel((B, L, K), gen)
                t = mark("noise", t)
                noise_tm, states, logits, onehot, soft = _forward_samples(model.W_in, model.W_rec, model.W_out, noise, gumbel, h0,
                                                                          self.tau, ws)
                t = mark("RNN forward", t)
                result = binary_sinkhorn(onehot.reshape(B, -1), self.y, self.schedule, self.y_self, with_grad=True, compiled=True,
                                         workspace=ws)
                t = mark("Sinkhorn value+gradient", t)
                grad_x = result.grad.view_as(soft)
                g = soft * (grad_x - (grad_x * soft).sum(dim=-1, keepdim=True)) / self.tau
                g_tm = g.transpose(0, 1).contiguous()
                grad_out = g_tm.reshape(L * B, K).T @ states[1:].reshape(L * B, -1)
                grad_hidden = torch.matmul(g_tm, model.W_out, out=ws.take("grad_hidden", (L, B, model.W_out.shape[1])))
                grad_in, grad_rec = rnn_weight_grads(grad_hidden, states, noise_tm, model.W_rec)
                t = mark("BPTT", t)
        for p, grad in zip((model.W_in, model.W_rec, model.W_out), (grad_in, grad_rec, grad_out)):
            p.grad = grad
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        opt.step()
        mark("clip+Adam", t)
        return times

    # ------------------------------------------------------------------ an epoch as train() runs it
    def epoch(self) -> dict[str, float]:
        """Seconds of one epoch of training (batches of 10,000 sequences) and of one validation pass."""
        import torch

        from hmmrnn.bptt import fast_divergence, fast_loss
        from hmmrnn.hmm import one_hot, sample
        from hmmrnn.model import sample_gumbel
        from hmmrnn.sinkhorn import epsilon_schedule, onehot_diameter, self_transport_term
        from hmmrnn.workspace import Workspace

        B, L, D, K = self.args.batch, self.L, self.args.input, self.K
        batches = []
        for total in (N_TRAIN, N_VAL):
            _, outputs = sample(self.hmm, total, L, self.rng)
            flat = torch.from_numpy(one_hot(outputs, K).reshape(total, L * K))
            parts = [flat[i : i + B] for i in range(0, total, B)]
            batches.append([(y, s, self_transport_term(y, s)) for y in parts for s in [epsilon_schedule(onehot_diameter(y), self.blur)]])
        model = self.make_hmmrnn(self.args.seed + 7)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr, betas=self.betas)
        gen = torch.Generator().manual_seed(self.args.seed + 8)
        ws = Workspace()  # as train(): one for the run, shared by training and validation

        def train_epoch() -> None:
            for y, sched, y_self in batches[0]:
                n = y.shape[0]
                noise = ws.take("noise", (n, L, D)).normal_(generator=gen)
                h0 = model.initial_state(n, gen)
                gumbel = sample_gumbel((n, L, K), gen)
                total, divergence = fast_loss(model, noise, gumbel, h0, y, sched, y_self, self.tau, 0.0, None, compiled=True,
                                              workspace=ws)
                opt.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
                opt.step()
                float(divergence.detach())

        def validate() -> None:
            val_gen = torch.Generator().manual_seed(self.args.seed + 9)
            with torch.inference_mode():
                for y, sched, y_self in batches[1]:
                    n = y.shape[0]
                    noise = ws.take("noise", (n, L, D)).normal_(generator=val_gen)
                    h0 = model.initial_state(n, val_gen)
                    gumbel = sample_gumbel((n, L, K), val_gen)
                    float(fast_divergence(model, noise, gumbel, h0, y, sched, y_self, self.tau, compiled=True, workspace=ws))

        train_epoch()  # compiles the passes for the last batch's shape
        validate()
        start = time.perf_counter()
        train_epoch()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        validate()
        val_s = time.perf_counter() - start
        return {"train": train_s, "validation": val_s}


def memory_probe(args: argparse.Namespace) -> int:
    """Child process: run two steps of one method and print the peak resident memory (MB).

    Prints the high-water mark after the setup (the data batch, its Sinkhorn self-term, both
    models' classes) and after two steps; ``ru_maxrss`` never decreases, so a step that stays
    under the setup's peak shows the setup's value.
    """
    import torch

    method, length = args.memory_probe.split(":")
    torch.set_num_threads(args.threads)
    setup = Setup(args, int(length))
    setup_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step = setup.runner(method)
    step()
    step()
    print(json.dumps({"setup_mb": setup_mb, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def peak_memory(args: argparse.Namespace, argv: list[str], method: str, length: int) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--memory-probe", f"{method}:{length}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {method} L={length} failed:\n{done.stderr[-2000:]}")
    return {k: float(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    maybe_reexec(args, argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args)

    print(f"load average at start: {load()}  (the machine's 1, 5, 15-minute run-queue lengths)", flush=True)
    start_all = time.perf_counter()
    rows = []
    for length in args.lengths:
        setup = Setup(args, length)
        agree = setup.agreement()  # also compiles the binary Sinkhorn passes for this shape
        print(f"# L={length}: agreement on identical inputs: loss geomloss {agree['geomloss']:.6f}, hmmrnn {agree['hmmrnn']:.6f} "
              f"(relative {agree['loss']:.1e}); gradients relative W_in {agree['W_in']:.1e}, W_rec {agree['W_rec']:.1e}, "
              f"W_out {agree['W_out']:.1e}", flush=True)
        steps = {m: setup.runner(m) for m in args.methods}
        times: dict[str, list[float]] = {m: [] for m in args.methods}
        losses: dict[str, float] = {}
        for round_ in range(args.warmup + args.steps):
            for method in args.methods:  # interleaved: one step of each method per round
                start = time.perf_counter()
                losses[method] = steps[method]()
                elapsed = time.perf_counter() - start
                if round_ >= args.warmup:
                    times[method].append(elapsed)
        med = {m: statistics.median(times[m]) for m in args.methods}
        for m in args.methods:
            print(f"#   {m}: median {med[m]:.3f} s/step over {len(times[m])} ({', '.join(f'{t:.2f}' for t in times[m])}), "
                  f"last loss {losses[m]:.3f}", flush=True)
        profile = setup.profile() if "hmmrnn" in args.methods else {}
        epoch = setup.epoch() if ("hmmrnn" in args.methods and not args.no_epoch) else {}
        memory = {} if args.no_memory else {m: peak_memory(args, argv, m, length) for m in args.methods}
        rows.append({"L": length, "median": med, "agree": agree, "profile": profile, "epoch": epoch, "memory": memory})
        print(f"#   load average now: {load()}", flush=True)

    # ------------------------------------------------------------------ report
    print()
    print(f"training step: batch={args.batch}, H={args.hidden}, D={args.input}, K={setup.K} ({args.hmm}), float32, "
          f"{args.threads} threads, median of {args.steps} interleaved steps after {args.warmup} warm-up")
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
          f"tcmalloc preloaded: {'yes' if tcmalloc_preloaded() else 'no'}, load average at end: {load()}, "
          f"wall {time.perf_counter() - start_all:.0f} s")
    print()
    others = [m for m in args.methods if m != "eager"]
    head = ["L"] + [f"{m} s/step" for m in args.methods] + [f"{m} speed-up" for m in others if "eager" in args.methods]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [str(row["L"])] + [f"{row['median'][m]:.3f}" for m in args.methods]
        if "eager" in args.methods:
            cells += [f"{row['median']['eager'] / row['median'][m]:.2f}x" for m in others]
        print("| " + " | ".join(cells) + " |")
    print()
    for row in rows:
        a = row["agree"]
        print(f"L={row['L']}: geomloss+autograd vs hmmrnn on identical inputs: loss {a['geomloss']:.6f} vs {a['hmmrnn']:.6f} "
              f"(relative {a['loss']:.1e}); gradient relative difference W_in {a['W_in']:.1e}, W_rec {a['W_rec']:.1e}, W_out {a['W_out']:.1e}")
        if row["profile"]:
            p = row["profile"]
            total = sum(p.values())
            print(f"L={row['L']}: profile of one hmmrnn step ({total:.2f} s): " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in p.items()))
        if row["epoch"]:
            e = row["epoch"]
            print(f"L={row['L']}: hmmrnn epoch: training {e['train']:.2f} s + validation {e['validation']:.2f} s / {args.val_every} "
                  f"= {e['train'] + e['validation'] / args.val_every:.2f} s an epoch")
        if row["memory"]:
            print(f"L={row['L']}: peak resident memory (a child process per method; high-water mark after the setup -> after 2 steps): "
                  + ", ".join(f"{m} {v['setup_mb']:.0f} -> {v['peak_mb']:.0f} MB" for m, v in row["memory"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
