"""Command line: ``python -m hmmrnn {train,sweep,evaluate,calibrate,kick-neurons,list} ...``.

Exit codes: 0 success; 1 the fit fails the bar (``evaluate``) or a run of a sweep failed; 2 an error (bad arguments,
settings, files or run folder; each with one message on stderr naming the problem).

Examples::

    python -m hmmrnn train --hmm linear2 --hidden 150 --input 100 --epochs 500 --seed 0 --out runs/linear2
    python -m hmmrnn sweep sweeps/grid-cpu-slice.yaml [--scheduler ADDRESS] [--device cuda] [--only PATTERN] [--dry-run]
    python -m hmmrnn evaluate linear2 [--json]
    python -m hmmrnn kick-neurons linear2 [--json] [--transitions 0:2,2:0]
    python -m hmmrnn list
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)


def _maybe_reexec_with_tcmalloc(argv: list[str]) -> None:
    """Training allocates many 64 MiB temporaries; tcmalloc makes that much cheaper on CPU.

    If tcmalloc is installed and not yet preloaded, re-run this same command with it
    (set HMMRNN_NO_TCMALLOC=1 to opt out).
    """
    if os.environ.get("HMMRNN_NO_TCMALLOC") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = next((p for p in TCMALLOC_PATHS if os.path.exists(p)), None)
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = (lib + " " + env.get("LD_PRELOAD", "")).strip()
    env["HMMRNN_NO_TCMALLOC"] = "1"  # never loop
    os.execve(sys.executable, [sys.executable, "-m", "hmmrnn", *argv], env)


def _number(kind: type, minimum: float, strict: bool, what: str):
    """An argparse type: ``kind`` (int or float) above (strict) or at least ``minimum``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > minimum if strict else value >= minimum) or value != value:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _number(int, 0, True, "a positive integer")
_nonneg_int = _number(int, 0, False, "a non-negative integer")
_positive_float = _number(float, 0.0, True, "a positive number")
_length = _number(int, 1, True, "an integer >= 2 (transitions need pairs of steps)")
MAX_SEED = 2**63 - 1


def _seed(text: str) -> int:
    """An argparse type: an integer seed in [0, 2**63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed <= 2**63 - 1, got {value}")
    return value


def _transitions(text: str) -> list[tuple[int, int]]:
    """An argparse type: ``"0:2,2:0"`` -> [(0, 2), (2, 0)]."""
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise argparse.ArgumentTypeError(f"expected SOURCE:TARGET pairs of output indices separated by commas (e.g. 0:2,2:0), got {text!r}")
        pairs.append((int(parts[0]), int(parts[1])))
    return pairs


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .hmm import TARGET_NAMES

    parser = argparse.ArgumentParser(prog="python -m hmmrnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a network on an HMM target and write its checkpoint folder")
    tr.add_argument("--hmm", required=True, choices=TARGET_NAMES, help="target HMM")
    tr.add_argument("--hidden", type=_positive_int, default=150, help="hidden units H (default 150)")
    tr.add_argument("--input", type=_positive_int, default=100, help="noise dimensions D (default 100)")
    tr.add_argument("--epochs", type=_positive_int, default=500, help="epochs to train (default 500, the paper's); with --resume it may grow")
    tr.add_argument("--seed", type=_seed, default=0, help="seed of the data, the initial weights, the noise and the validation draws (default 0)")
    tr.add_argument("--out", required=True, type=Path, help="run folder to write (locked while training; must be empty unless --resume or --overwrite)")
    tr.add_argument("--seq-len", type=_positive_int, default=None, help="sequence length (default: the target's)")
    tr.add_argument("--h0", choices=("zeros", "normal"), default="zeros", help="initial hidden state: zeros (the paper's) or a standard normal draw (default zeros)")
    tr.add_argument("--n-sequences", type=_positive_int, default=30000, help="HMM sequences sampled, split in thirds into train, validation and test (default 30000)")
    tr.add_argument("--batch", type=_positive_int, default=4096, help="sequences per batch (default 4096); batches of at least 1024 compile the loss when a compiler is present")
    tr.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    tr.add_argument("--beta2", type=float, default=0.9, help="Adam beta2 (beta1 is 0.9)")
    tr.add_argument("--clip", type=_positive_float, default=None, help="gradient-norm clip (default 0.9; 0.3 for fully3/cyclic4)")
    tr.add_argument("--blur", type=_positive_float, default=0.2, help="Sinkhorn blur: the smallest entropic scale of the loss (default 0.2)")
    tr.add_argument("--tau", type=_positive_float, default=1.0, help="Gumbel-softmax temperature of the sampled outputs (default 1.0)")
    tr.add_argument("--val-every", type=_positive_int, default=5, help="validate (and print a line: epoch, losses, s/epoch) every N epochs and at the last (default 5)")
    tr.add_argument("--snapshot-every", type=_nonneg_int, default=0, help="keep the weights every N epochs in snapshots.npz, for the training-dynamics figures (default 0: none)")
    tr.add_argument("--snapshot-until", type=_nonneg_int, default=300, help="last epoch that gets a snapshot (default 300)")
    tr.add_argument("--resume-every", type=_positive_int, default=10, help="write the resume file every N epochs (default 10)")
    tr.add_argument("--lr-milestones", type=_positive_int, nargs="*", default=[], help="epochs at which lr is multiplied by --lr-gamma")
    tr.add_argument("--lr-gamma", type=_positive_float, default=0.1, help="factor applied to the learning rate at each of --lr-milestones (default 0.1)")
    tr.add_argument("--stats-weight", type=float, default=0.0, help="weight of the auxiliary pair-statistics KL term (default 0: the paper's loss)")
    tr.add_argument("--init-from", default=None, help="start from this checkpoint's weights (name or folder)")
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    tr.add_argument("--compile", dest="compile", action="store_true", default=None, help="force torch.compile")
    tr.add_argument("--no-compile", dest="compile", action="store_false", help="never torch.compile")
    mode = tr.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUT (its resume file; same settings, --epochs may grow)")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in OUT: delete all its files (snapshots included) first")

    sw = sub.add_parser("sweep", help="run the training runs and seed searches of a YAML spec on dask.distributed and tabulate them")
    sw.add_argument("spec", type=Path, help="sweep spec (YAML; see hmmrnn.sweep and sweeps/)")
    sw.add_argument("--out", type=Path, default=None, help="sweep folder (default: the spec's 'out')")
    sw.add_argument("--scheduler", default=None, help="address of a running dask scheduler (default: a local cluster on this machine)")
    sw.add_argument("--workers", type=_positive_int, default=None, help="workers of the local cluster (default: one per CPU core; one per GPU with --device cuda)")
    sw.add_argument("--threads", type=_positive_int, default=1, help="torch threads per run (default 1)")
    sw.add_argument("--device", default=None, help="training device of every run: auto, cpu, cuda or cuda:N (default: the spec's)")
    sw.add_argument("--dry-run", action="store_true", help="print the runs and their state (done, partial, new); run nothing")
    sw.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="run only the runs (and searches) whose name matches this shell pattern, e.g. 'linear3-h50-*' "
                         "(repeatable); two parts of one spec can run side by side")

    ev = sub.add_parser("evaluate", help="emission-fit table of a checkpoint vs its HMM vs the paper")
    ev.add_argument("checkpoint", help="shipped name (e.g. linear2) or checkpoint folder")
    ev.add_argument("--n", type=_positive_int, default=5000, help="sequences to sample (default 5000)")
    ev.add_argument("--length", type=_length, default=None, help="sequence length (default as the paper's fit figure: 100 for the linear chains, the training length for fully3 and cyclic4)")
    ev.add_argument("--seed", type=_seed, default=0, help="seed of the sampled sequences (default 0)")
    ev.add_argument("--json", action="store_true", help="machine-readable output")

    ca = sub.add_parser("calibrate", help="re-fit the readout of a checkpoint to its training data's pair statistics (dynamics unchanged)")
    ca.add_argument("checkpoint", help="shipped name or checkpoint folder")
    ca.add_argument("--out", required=True, type=Path, help="folder of the calibrated checkpoint")
    ca.add_argument("--seed", type=_seed, default=0, help="seed of the noise-driven runs (default 0; the training data come from the checkpoint's own seed)")
    ca.add_argument("--n-runs", type=_positive_int, default=2048, help="noise-driven runs whose hidden states the readout is fitted on (default 2048)")
    ca.add_argument("--penalty", type=_positive_float, default=0.1, help="weight of ||W_out - W_out0||^2 (default 0.1)")
    ca.add_argument("--max-iter", type=_positive_int, default=300, help="L-BFGS iterations (default 300)")

    kn = sub.add_parser("kick-neurons", help="find the kick neurons of a checkpoint (kick signature + batched silencing)")
    kn.add_argument("checkpoint", help="shipped name (e.g. linear2) or checkpoint folder")
    kn.add_argument("--transitions", type=_transitions, default=None,
                    help="SOURCE:TARGET output pairs, one group each, e.g. 0:2,2:0 (default: both directions "
                         "between the two tracked outputs of a network that shows two)")
    kn.add_argument("--seed", type=_seed, default=0, help="seed of the recorded run and the silencing trials (default 0)")
    kn.add_argument("--n-states", type=_positive_int, default=5000, help="states of the recorded run (default 5000)")
    kn.add_argument("--n-traj", type=_positive_int, default=32, help="trajectories per silencing condition (default 32)")
    kn.add_argument("--n-steps", type=_positive_int, default=1000, help="steps per trajectory (default 1000; the first 100 settle)")
    kn.add_argument("--max-size", type=_positive_int, default=12, help="largest group size tried (default 12)")
    kn.add_argument("--target", type=_fraction, default=0.95, help="required hazard reduction, with 95%% confidence (default 0.95)")
    kn.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("list", help="list the shipped checkpoints and the HMM targets")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    clip = args.clip if args.clip is not None else (0.3 if args.hmm in ("fully3", "cyclic4") else 0.9)
    config = TrainConfig(
        hmm=args.hmm,
        hidden_size=args.hidden,
        input_size=args.input,
        h0=args.h0,
        seq_len=args.seq_len,
        epochs=args.epochs,
        seed=args.seed,
        n_sequences=args.n_sequences,
        batch_size=args.batch,
        lr=args.lr,
        betas=(0.9, args.beta2),
        grad_clip=clip,
        blur=args.blur,
        tau=args.tau,
        val_every=args.val_every,
        snapshot_every=args.snapshot_every,
        snapshot_until=args.snapshot_until,
        resume_every=args.resume_every,
        lr_milestones=tuple(args.lr_milestones),
        lr_gamma=args.lr_gamma,
        stats_weight=args.stats_weight,
        init_from=args.init_from,
        device=args.device,
        compile=args.compile,
    )
    try:
        config.validate()
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    checkpoint = train(config, args.out, resume=args.resume, overwrite=args.overwrite, log=lambda m: print(m, flush=True))
    print(json.dumps({"out": str(args.out), **checkpoint.results}))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import RunSpec, dashboard_link, load_spec, make_client, run_sweep, select, sweep_state

    spec = select(load_spec(args.spec, out=args.out, device=args.device), args.only)  # SpecError (a ValueError): exit 2

    def state(run: RunSpec) -> str:
        status, _, where = sweep_state(spec.out, spec.done_in, run)
        return status if where is None else f"done (in {where})"

    states = [(run.name, state(run)) for run in spec.runs]
    print(f"sweep {args.spec}: {len(spec.runs)} runs ({sum(s.startswith('done') for _, s in states)} done), "
          f"{len(spec.searches)} seed searches -> {spec.out}", flush=True)
    if args.dry_run:
        for name, text in states:
            print(f"  {name}: {text}")
        for s in spec.searches:
            print(f"  search {s.cell}: seeds {s.first_seed}, {s.first_seed + 1}, ... until {s.successes} succeed "
                  f"(at most {s.max_tries} tries, {s.in_flight} at a time)")
        return 0
    device = args.device or (spec.runs[0].config["device"] if spec.runs else spec.searches[0].template.config["device"])
    client = make_client(args.scheduler, args.workers, device)  # an unreachable scheduler: OSError, exit 2
    try:
        info = client.scheduler_info()
        link = dashboard_link(client)
        print(f"dask scheduler {info.get('address')}, {len(info.get('workers', {}))} workers; "
              + (f"dashboard {link}" if link else "no dashboard (pip install bokeh for one)"), flush=True)
        outcome = run_sweep(spec, client, threads=args.threads, echo=lambda m: print(m, flush=True))
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept, partial ones resume when the same command runs again", file=sys.stderr)
        return 130
    finally:
        cluster = client.cluster if args.scheduler is None else None
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"table: {outcome.table} ({len(outcome.rows)} runs of this spec finished, {len(outcome.failed)} failed)")
    return 1 if outcome.failed else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, load
    from .metrics import evaluate, format_fit_table
    from .model import NonFiniteStatesError

    try:
        checkpoint = load(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = evaluate(checkpoint, n=args.n, length=args.length, seed=args.seed)
    except NonFiniteStatesError as exc:  # the network has no outputs there: the fit fails, said so
        print(f"FAIL: {args.checkpoint}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_fit_table(report))
    return 0 if report.passes else 1


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate_checkpoint
    from .checkpoints import CheckpointError

    try:
        result = calibrate_checkpoint(args.checkpoint, args.out, seed=args.seed, n_runs=args.n_runs,
                                      penalty=args.penalty, max_iter=args.max_iter)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = result.training["calibration"]
    print(json.dumps({"out": str(args.out), **{k: info[k] for k in ("kl_before", "kl_after", "readout_change")}}))
    return 0


def _cmd_kick_neurons(args: argparse.Namespace) -> int:
    import torch

    from .checkpoints import CheckpointError, load
    from .circuits import find_kick_neurons, tracked_outputs
    from .dynamics import driven_run

    torch.set_num_threads(1)
    try:
        checkpoint = load(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    weights = checkpoint.weights
    transitions = args.transitions
    if transitions is None:
        probe = driven_run(weights, 2000, torch.Generator().manual_seed(args.seed), burn_in=200)
        outputs = tracked_outputs(probe.dominant, weights.output_size)
        if len(outputs) != 2:
            print(f"error: the network shows {len(outputs)} outputs >= 5% of the time {outputs}; "
                  "name the transitions with --transitions", file=sys.stderr)
            return 2
        transitions = [outputs, outputs[::-1]]
    if args.n_steps <= 101:
        print("error: --n-steps must exceed the 100 settling steps", file=sys.stderr)
        return 2
    try:
        search = find_kick_neurons(weights, transitions, torch.Generator().manual_seed(args.seed), n_states=args.n_states,
                                   n_traj=args.n_traj, n_steps=args.n_steps, max_size=args.max_size, target=args.target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"checkpoint": args.checkpoint, "seed": args.seed, **search.to_dict()}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"kick neurons of {args.checkpoint} (seed {args.seed}; tracked outputs {search.outputs})")
    for (a, b), group, sig in zip(search.transitions, search.groups, search.signatures):
        shown = ", ".join(f"{i} ({sig.score[i]:.2f})" for i in group)
        print(f"  {a} -> {b}: {shown}")
    verdict = "reached" if search.search.reached else "NOT reached"
    print(f"group size {search.search.size}: silencing all groups cuts the hazard by {report['reduction']:.1%} "
          f"(95% lower bound {report['reduction_low']:.1%}; target {args.target:.0%}: {verdict})")
    print("prefix reductions k = 1..: " + " ".join(f"{v:.2f}" for v in search.search.reduction))
    print(f"criterion: {search.criterion}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, load, shipped_names
    from .hmm import TARGET_NAMES, get_hmm

    print("HMM targets (name: states, training length):")
    for name in TARGET_NAMES:
        hmm = get_hmm(name)
        print(f"  {name}: {hmm.n_states} states, L={hmm.seq_len}")
    print("shipped checkpoints:")
    names = shipped_names()
    broken = 0
    for name in names:
        try:
            c = load(name)
        except CheckpointError as exc:
            broken += 1
            print(f"  {name}: cannot be loaded: {exc}")
            continue
        best = c.results.get("best_val_loss")
        best_text = f"{best:.3f}" if isinstance(best, (int, float)) else "?"
        print(f"  {name}: H={c.rnn['hidden_size']} D={c.rnn['input_size']} epochs={c.training.get('epochs')} "
              f"best val loss {best_text} @ epoch {c.results.get('best_epoch')}")
    if not names:
        print("  (none)")
    if broken:
        print(f"error: {broken} shipped checkpoint folder(s) cannot be loaded (see above)", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors the user can fix end in one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from .runfolder import RunFolderError

    try:
        return _dispatch(args, argv)
    except (ValueError, KeyError, RunFolderError, FloatingPointError, OSError) as exc:  # HMMError, CheckpointError are ValueErrors
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {text}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "train":
        _maybe_reexec_with_tcmalloc(argv)
        return _cmd_train(args)
    if args.command == "sweep":
        _maybe_reexec_with_tcmalloc(argv)  # local workers inherit the preload
        return _cmd_sweep(args)
    if args.command == "evaluate":
        return _cmd_evaluate(args)
    if args.command == "calibrate":
        return _cmd_calibrate(args)
    if args.command == "kick-neurons":
        return _cmd_kick_neurons(args)
    return _cmd_list(args)


if __name__ == "__main__":
    sys.exit(main())
