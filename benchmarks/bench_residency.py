"""Benchmark: residency times of a long driven run (hmmrnn.regions.residency_times).

Target of issue 5: 10,000 states x 20 continuations x 60 steps in at most 10 s on 2 CPU cores.

Prints, side by side:

* the batched computation (all states x continuations as one batch, a loop over <= 60 steps,
  switched continuations dropped, early exit);
* the work it did (continuation-steps simulated, vs 12,000,000 without early exit) and its
  throughput;
* the floor for that work on this machine now: the same number of continuation-steps of
  the bare fused step (noise drawn in place, one matmul, ReLU; no bookkeeping) on a full
  batch, so a busy machine shows up in both numbers;
* a Python loop over states, continuations and steps (``regions.residency_reference``, NumPy,
  like the paper's per-time-step loop), timed on a few states and extrapolated by the number
  of continuation-steps.

Each method is timed in wall-clock seconds and in CPU seconds of this process (all threads):
on the book's 2-core machines a training run usually holds both cores, so the wall time
depends on what else runs (the load average is printed) while the CPU time measures the work.

    python benchmarks/bench_residency.py                      # shipped linear2, CPU
    python benchmarks/bench_residency.py --checkpoint runs/dev-linear2 --threads 2
    python benchmarks/bench_residency.py --device cuda        # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import hmmrnn
from hmmrnn import regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="linear2", help="shipped name or checkpoint folder")
    parser.add_argument("--states", type=int, default=10_000)
    parser.add_argument("--continuations", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--reference-states", type=int, default=20, help="states timed with the per-step loop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    checkpoint = hmmrnn.load(args.checkpoint)
    model = checkpoint.model(str(device))
    generator = torch.Generator(device).manual_seed(args.seed)
    run = regions.recorded_run(model, args.states, generator, burn_in=500)
    n, steps = args.continuations, args.max_steps
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    load_before = os.getloadavg()[0]
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    result = regions.residency_times(model, run.hidden, generator, n_continuations=n, max_steps=steps)
    sync()
    batched, batched_cpu = time.perf_counter() - start, time.process_time() - cpu
    load_after = os.getloadavg()[0]
    work = int(np.where(result.censored, steps, result.switch_step).sum())
    full = args.states * n * steps

    # floor: the bare fused step (regions._FusedSim: draw the noise, one matmul, ReLU) on a full
    # batch, no bookkeeping, for the same number of continuation-steps
    rows = min(args.states * n, 131_072)
    sim = regions._FusedSim(model, torch.as_tensor(run.hidden[:1], device=device).expand(rows, -1))
    repeats = max(1, round(work / rows))
    with torch.no_grad():
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            sim.draw(generator, 1.0)
            sim.advance()
        sync()
    scale = work / (repeats * rows)
    floor, floor_cpu = (time.perf_counter() - start) * scale, (time.process_time() - cpu) * scale

    # the paper's way: a Python loop per state, continuation and step (NumPy), extrapolated
    k = args.reference_states
    rng = np.random.default_rng(args.seed)
    inputs = rng.standard_normal((k, n, steps, model.input_size), dtype=np.float32)
    start, cpu = time.perf_counter(), time.process_time()
    ref = regions.residency_reference(checkpoint.weights, run.hidden[:k], inputs)
    scale = work / int(np.where(ref.censored, steps, ref.switch_step).sum())
    reference, reference_cpu = (time.perf_counter() - start) * scale, (time.process_time() - cpu) * scale

    flops = work * 2 * model.hidden_size * (model.hidden_size + model.input_size)
    print(f"checkpoint {args.checkpoint}: |h|={model.hidden_size}, d={model.input_size}; device {device}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores; "
          f"load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"{args.states} states x {n} continuations x <= {steps} steps: mean RT {result.rt.mean():.2f}, "
          f"censored {result.censored_fraction.mean():.3f}")
    print(f"continuation-steps simulated: {work:,} ({work / full:.2f} of {full:,} without early exit)")
    print()
    print(f"{'method':46s} {'wall (s)':>9s} {'CPU (s)':>9s} {'wall vs batched':>16s}")
    rows_out = [("batched residency_times", batched, batched_cpu),
                ("floor: bare fused steps, same work", floor, floor_cpu),
                (f"per-step Python loop (extrapolated, {k} states)", reference, reference_cpu)]
    for name, wall, cpu_s in rows_out:
        print(f"{name:46s} {wall:9.2f} {cpu_s:9.2f} {wall / batched:15.2f}x")
    print(f"batched: {flops / batched / 1e9:.1f} GFLOP/s wall, {flops / batched_cpu / 1e9:.1f} GFLOP per CPU-second")
    print(f"target: {args.states} x {n} x {steps} in <= 10 s on 2 cores -> "
          f"{'met' if batched <= 10 else 'not met'} here ({batched:.1f} s)")


if __name__ == "__main__":
    main()
