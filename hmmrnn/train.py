"""Training: the paper's recipe (PAPER.md §3), seeded end to end, resumable, fast on a CPU.

Recipe (every field of :class:`TrainConfig` overridable): 30,000 HMM sequences split in
thirds (train / validation / test); batches of 4096 generated vs 4096 HMM sequences; fresh
input noise every step; loss = debiased Sinkhorn divergence (p=2, blur=0.2) between
flattened one-hot sequences; Adam(lr 1e-3, betas (0.9, 0.9)); gradient-norm clip.

Beyond the paper's code:

* the model kept is really the best one by validation loss (a copy), and validation uses
  the same noise at every evaluation (common random numbers) so that epochs are compared
  on equal terms;
* a resume file (``resume.pt``) is written atomically every ``resume_every`` epochs; a run
  killed at any point and resumed ends with the same weights as an uninterrupted run;
* optional learning-rate decay (``lr_milestones``/``lr_gamma``), start from another
  checkpoint (``init_from``), and an optional auxiliary term (``stats_weight``, default 0,
  i.e. off) — see :func:`pair_statistics_kl`;
* the whole loss (RNN, Gumbel sampling, Sinkhorn) can run under ``torch.compile``.

Randomness: ``seed`` feeds a ``numpy.random.SeedSequence`` whose children seed the HMM data,
the weight initialisation, the training noise and the validation noise.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import checkpoints as ckpt
from .hmm import HMM, get_hmm, one_hot, sample
from .model import H0_MODES, NoiseRNN, RNNWeights, hard_gumbel_softmax, sample_gumbel
from .sinkhorn import epsilon_schedule, onehot_diameter, self_transport_term, sinkhorn_divergence

__all__ = ["TrainConfig", "Dataset", "make_dataset", "hmm_validation_floor", "train", "resolve_device", "pair_statistics_kl", "software_versions"]


@dataclass
class TrainConfig:
    """All settings of a training run (defaults: the paper's main configuration)."""

    hmm: str = "linear2"
    hidden_size: int = 150
    input_size: int = 100
    h0: str = "zeros"
    seq_len: int | None = None  # None: the target's training length (PAPER.md §3)
    epochs: int = 500
    seed: int = 0
    n_sequences: int = 30000
    batch_size: int = 4096
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.9)
    grad_clip: float = 0.9
    blur: float = 0.2
    tau: float = 1.0
    val_every: int = 5
    snapshot_every: int = 0  # 0: no snapshots
    snapshot_until: int = 300
    resume_every: int = 10
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    stats_weight: float = 0.0
    init_from: str | None = None
    device: str = "auto"
    compile: bool | None = None  # None: compile when it pays off (long CPU/GPU runs)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad setting; return self."""
        get_hmm(self.hmm)  # raises KeyError naming the known targets
        positive_ints = ("hidden_size", "input_size", "epochs", "n_sequences", "batch_size", "val_every", "resume_every")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.seq_len is not None and (not isinstance(self.seq_len, (int, np.integer)) or self.seq_len < 1):
            raise ValueError(f"seq_len must be a positive integer or None, got {self.seq_len!r}")
        if self.n_sequences < 3:
            raise ValueError(f"n_sequences must be at least 3 (split in thirds), got {self.n_sequences}")
        if self.h0 not in H0_MODES:
            raise ValueError(f"h0 must be one of {H0_MODES}, got {self.h0!r}")
        for name in ("lr", "blur", "tau", "grad_clip", "lr_gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not (isinstance(self.stats_weight, (int, float)) and math.isfinite(self.stats_weight) and self.stats_weight >= 0):
            raise ValueError(f"stats_weight must be a finite number >= 0, got {self.stats_weight!r}")
        if not isinstance(self.snapshot_every, (int, np.integer)) or self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be an integer >= 0, got {self.snapshot_every!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self

    def target(self) -> HMM:
        hmm = get_hmm(self.hmm)
        return hmm if self.seq_len is None else dataclasses.replace(hmm, seq_len=self.seq_len)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["lr_milestones"] = list(self.lr_milestones)
        return d


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def software_versions() -> dict[str, str]:
    import geomloss

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "geomloss": geomloss.__version__,
        "hmmrnn": _package_version(),
    }


def _package_version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------- data

@dataclass
class Dataset:
    """HMM sequences for training, one-hot and flattened.

    Attributes:
        train, val, test: (n_i, L * K) float32 tensors (thirds of ``n_sequences``).
        outputs: (n_sequences, L) int64 raw outputs (train, then val, then test rows).
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    outputs: np.ndarray


def make_dataset(hmm: HMM, n_sequences: int, seq_len: int, rng: np.random.Generator) -> Dataset:
    """Sample ``n_sequences`` sequences of ``seq_len`` steps and split them in thirds."""
    _, outputs = sample(hmm, n_sequences, seq_len, rng)
    flat = torch.from_numpy(one_hot(outputs, hmm.n_outputs).reshape(n_sequences, -1))
    third = n_sequences // 3
    return Dataset(flat[:third], flat[third : 2 * third], flat[2 * third :], outputs)


def _batches(data: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [data[i : i + batch_size] for i in range(0, data.shape[0], batch_size)]


def hmm_validation_floor(hmm: HMM, rng: np.random.Generator, seq_len: int | None = None,
                         n_val: int = 10000, batch_size: int = 4096, blur: float = 0.2,
                         generated: HMM | None = None) -> float:
    """The validation loss a perfect sampler of the HMM would get: its finite-sample floor.

    Two independent sets of ``n_val`` HMM sequences play the generated and the validation
    clouds, batched and averaged exactly as :func:`train` validates (batches of
    ``batch_size``, the temperature schedule from each data batch, mean weighted by batch
    size). With the paper's settings (10,000 validation sequences, batches of 4096) this is
    the number a "best validation loss" should be compared with: the debiased divergence
    between two samples of the same law is positive at any finite size.

    Args:
        generated: another HMM with the same outputs that plays the generated cloud (default:
            ``hmm`` itself) — the validation loss of an exact sampler of a *different* law,
            e.g. one that never emits the rare output.

    Returns:
        The weighted mean Sinkhorn divergence over the validation batches.
    """
    length = hmm.seq_len if seq_len is None else seq_len
    if length is None or length < 1 or n_val < 1 or batch_size < 1:
        raise ValueError(f"need seq_len, n_val and batch_size >= 1, got {length}, {n_val}, {batch_size}")
    generator_hmm = hmm if generated is None else generated
    if generator_hmm.n_outputs != hmm.n_outputs:
        raise ValueError(f"generated HMM has {generator_hmm.n_outputs} outputs, the target {hmm.n_outputs}")
    k = hmm.n_outputs
    clouds = []
    for source in (generator_hmm, hmm):
        _, outputs = sample(source, n_val, length, rng)
        clouds.append(torch.from_numpy(one_hot(outputs, k).reshape(n_val, -1)))
    total = 0.0
    with torch.inference_mode():
        for x, y in zip(_batches(clouds[0], batch_size), _batches(clouds[1], batch_size)):
            sched = epsilon_schedule(onehot_diameter(y), blur)
            total += float(sinkhorn_divergence(x, y, eps_list=sched)) * y.shape[0]
    return total / n_val


# --------------------------------------------------------------------------- losses

def pair_statistics(onehot_or_probs: torch.Tensor) -> torch.Tensor:
    """(B, L, K) one-hot outputs or per-step probabilities -> (K, K) mean joint of consecutive steps."""
    first, second = onehot_or_probs[:, :-1], onehot_or_probs[:, 1:]
    return torch.einsum("blk,blm->km", first, second) / (first.shape[0] * first.shape[1])


def pair_statistics_kl(logits: torch.Tensor, data_pairs: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """KL(data || model) between the joint distributions of consecutive outputs.

    The model's joint is computed exactly given the hidden trajectory: outputs at different
    steps are independent given h, so ``E[o_t o_{t+1}^T | h] = p_t p_{t+1}^T`` with
    ``p_t = softmax(logits_t)`` — no sampling noise. An auxiliary term (off by default);
    the Sinkhorn loss on 4096-sample clouds under-weights an output as rare as the linear
    chains' middle one (PAPER.md §4), and this term states the pair statistics directly.

    Args:
        logits: (B, L, K).
        data_pairs: (K, K) joint of consecutive outputs in the data batch.
    """
    model_pairs = pair_statistics(torch.softmax(logits, dim=-1))
    p = data_pairs.clamp_min(floor)
    return (p * (p.log() - model_pairs.clamp_min(floor).log())).sum()


def _generated_onehot(model: NoiseRNN, noise: torch.Tensor, gumbel: torch.Tensor, h0: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = model.hidden_states(noise, h0)
    logits = model.logits(hidden)
    return hard_gumbel_softmax(logits, gumbel, tau), logits


def _loss(model: NoiseRNN, noise: torch.Tensor, gumbel: torch.Tensor, h0: torch.Tensor, y: torch.Tensor,
          eps_list: tuple[float, ...], y_self: torch.Tensor, tau: float, stats_weight: float,
          data_pairs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (total loss, Sinkhorn divergence)."""
    onehot, logits = _generated_onehot(model, noise, gumbel, h0, tau)
    x = onehot.reshape(onehot.shape[0], -1)
    divergence = sinkhorn_divergence(x, y, eps_list=eps_list, y_self_term=y_self)
    if stats_weight > 0 and data_pairs is not None:
        steps = noise.shape[1] - 1
        return divergence + stats_weight * steps * pair_statistics_kl(logits, data_pairs), divergence
    return divergence, divergence


# --------------------------------------------------------------------------- the loop

def _default_log(message: str) -> None:  # pragma: no cover - trivial
    print(message, flush=True)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    stop_after: int | None = None,
) -> ckpt.Checkpoint:
    """Train a network and write its checkpoint folder.

    Args:
        config: the settings.
        out_dir: checkpoint folder; receives ``weights.npz`` (best model), ``config.json``,
            ``snapshots.npz`` (if enabled) and ``resume.pt``.
        resume: continue from ``out_dir/resume.pt`` (same settings; ``epochs`` may grow).
        progress: tqdm bar; None shows it only when stderr is a terminal (never in notebooks).
        log: called with one line per validation (None: silent).
        stop_after: stop (as if killed) after this many epochs in this call — for tests.

    Returns:
        The checkpoint of the best model (by validation loss).
    """
    config.validate()
    out_dir = Path(out_dir)
    resume_path = out_dir / "resume.pt"
    device = resolve_device(config.device)
    hmm = config.target()
    seq_len = int(hmm.seq_len or 100)
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    data = make_dataset(hmm, config.n_sequences, seq_len, np.random.default_rng(seeds[0]))
    init_gen = torch.Generator().manual_seed(int(seeds[1].generate_state(1)[0]))
    noise_gen = torch.Generator(device=device).manual_seed(int(seeds[2].generate_state(1)[0]))
    val_seed = int(seeds[3].generate_state(1)[0])

    model = NoiseRNN(config.input_size, config.hidden_size, hmm.n_outputs, h0=config.h0, generator=init_gen)
    parent: ckpt.Checkpoint | None = None
    if config.init_from:
        start = parent = ckpt.load(config.init_from)
        if start.weights.W_rec.shape != tuple(model.W_rec.shape) or start.weights.W_in.shape != tuple(model.W_in.shape):
            raise ValueError(f"init_from {config.init_from!r} has other sizes than this configuration")
        model = NoiseRNN.from_weights(start.weights, h0=config.h0)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas))

    train_batches = [b.to(device) for b in _batches(data.train, config.batch_size)]
    val_batches = [b.to(device) for b in _batches(data.val, config.batch_size)]
    k = hmm.n_outputs
    schedules = [epsilon_schedule(onehot_diameter(b), config.blur) for b in train_batches]
    train_self = [self_transport_term(b, s) for b, s in zip(train_batches, schedules)]
    val_schedules = [epsilon_schedule(onehot_diameter(b), config.blur) for b in val_batches]
    val_self = [self_transport_term(b, s) for b, s in zip(val_batches, val_schedules)]
    train_pairs = [pair_statistics(b.reshape(b.shape[0], seq_len, k)) for b in train_batches]

    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_epoch": [], "val_loss": [], "lr": []}
    best: dict[str, Any] = {"epoch": 0, "val_loss": math.inf, "weights": model.weights()}
    snap_epochs: list[int] = []
    snap_weights: list[RNNWeights] = []
    start_epoch = 0

    if resume and resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        saved = dict(state["config"])
        current = config.as_dict()
        diffs = {key: (saved.get(key), current[key]) for key in current if key not in ("epochs", "device", "compile") and saved.get(key) != current[key]}
        if diffs:
            raise ValueError(f"cannot resume {resume_path}: settings differ from the saved run: {diffs}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        noise_gen.set_state(state["noise_gen"])
        history = state["history"]
        best = state["best"]
        snap_epochs, snap_weights = state["snap_epochs"], [RNNWeights(*w) for w in state["snap_weights"]]
        start_epoch = int(state["epoch"])
        if log:
            log(f"resumed {resume_path} at epoch {start_epoch}")
    elif resume and log:
        log(f"no {resume_path} yet: starting from scratch")

    def lr_at(epoch: int) -> float:
        return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones)

    use_compile = config.compile if config.compile is not None else (config.epochs >= 50 and (device.type == "cuda" or shutil.which("cc") or shutil.which("gcc")))
    loss_fn = torch.compile(_loss, dynamic=False) if use_compile else _loss

    def validate() -> float:
        gen = torch.Generator(device=device).manual_seed(val_seed)
        total, count = 0.0, 0
        with torch.inference_mode():
            for y, sched, y_self in zip(val_batches, val_schedules, val_self):
                n = y.shape[0]
                noise = torch.randn(n, seq_len, config.input_size, generator=gen, device=device)
                h0 = model.initial_state(n, gen)
                gumbel = sample_gumbel((n, seq_len, k), gen, device=device)
                onehot, _ = _generated_onehot(model, noise, gumbel, h0, config.tau)
                value = sinkhorn_divergence(onehot.reshape(n, -1), y, eps_list=sched, y_self_term=y_self)
                total += float(value) * n
                count += n
        return total / count

    def save_resume(epoch: int) -> None:
        state = {
            "config": config.as_dict(),
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "noise_gen": noise_gen.get_state(),
            "history": history,
            "best": best,
            "snap_epochs": snap_epochs,
            "snap_weights": [tuple(w) for w in snap_weights],
        }
        import io

        buffer = io.BytesIO()
        torch.save(state, buffer)
        ckpt.atomic_write_bytes(resume_path, buffer.getvalue())

    def snapshot(epoch: int) -> None:
        if config.snapshot_every and epoch % config.snapshot_every == 0 and epoch <= config.snapshot_until and epoch not in snap_epochs:
            snap_epochs.append(epoch)
            snap_weights.append(model.weights())

    if start_epoch == 0:
        snapshot(0)
    show_bar = progress if progress is not None else sys.stderr.isatty()
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, initial=start_epoch, desc=f"train {hmm.name}", unit="epoch")
    epochs_run = 0
    t_start = time.perf_counter()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch)
        model.train()
        losses = []
        for y, sched, y_self, pairs in zip(train_batches, schedules, train_self, train_pairs):
            n = y.shape[0]
            noise = torch.randn(n, seq_len, config.input_size, generator=noise_gen, device=device)
            h0 = model.initial_state(n, noise_gen)
            gumbel = sample_gumbel((n, seq_len, k), noise_gen, device=device)
            total, divergence = loss_fn(model, noise, gumbel, h0, y, sched, y_self, config.tau, config.stats_weight, pairs)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            losses.append((float(divergence.detach()), n))
        train_loss = sum(l * n for l, n in losses) / sum(n for _, n in losses)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}; last good state is in {resume_path}")
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["lr"].append(lr_at(epoch))
        snapshot(epoch)
        if epoch % config.val_every == 0 or epoch == config.epochs:
            val_loss = validate()
            history["val_epoch"].append(epoch)
            history["val_loss"].append(val_loss)
            if val_loss < best["val_loss"]:
                best = {"epoch": epoch, "val_loss": val_loss, "weights": model.weights()}
            if log:
                rate = (time.perf_counter() - t_start) / max(epochs_run + 1, 1)
                log(f"epoch {epoch:5d}  train {train_loss:8.3f}  val {val_loss:8.3f}  best {best['val_loss']:8.3f} @ {best['epoch']}  ({rate:.1f} s/epoch)")
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.2f}", best=f"{best['val_loss']:.2f}")
            bar.update(1)
        epochs_run += 1
        if epoch % config.resume_every == 0 or epoch == config.epochs:
            save_resume(epoch)
        if stop_after is not None and epochs_run >= stop_after and epoch < config.epochs:
            if bar is not None:
                bar.close()
            raise KeyboardInterrupt(f"stopped after {epochs_run} epochs (stop_after)")
    if bar is not None:
        bar.close()

    training = config.as_dict()
    training.update(
        {
            "n_train": int(data.train.shape[0]),
            "n_val": int(data.val.shape[0]),
            "n_test": int(data.test.shape[0]),
            "seq_len": seq_len,
            "device": str(device),
            "compiled": bool(use_compile),
            "versions": software_versions(),
        }
    )
    final_val = history["val_loss"][-1] if history["val_loss"] else math.nan
    results = {
        "best_epoch": int(best["epoch"]),
        "best_val_loss": float(best["val_loss"]),
        "final_val_loss": float(final_val),
        "final_epoch": int(history["epoch"][-1]) if history["epoch"] else 0,
    }
    if parent is not None:
        history, results, training = _as_second_phase(parent, history, results, training, config.init_from)
    checkpoint = ckpt.Checkpoint(
        weights=best["weights"],
        hmm=hmm,
        rnn={"input_size": config.input_size, "hidden_size": config.hidden_size, "h0": config.h0},
        training=training,
        results=results,
        history=history,
    )
    ckpt.save(checkpoint, out_dir)
    ckpt.atomic_write_bytes(out_dir / "last.npz", ckpt._npz_bytes(model.weights()._asdict()))
    if snap_epochs:
        ckpt.save_snapshots(out_dir / "snapshots.npz", snap_epochs, snap_weights)
    elif parent is not None and parent.path is not None and (parent.path / "snapshots.npz").exists():
        ckpt.atomic_write_bytes(out_dir / "snapshots.npz", (parent.path / "snapshots.npz").read_bytes())
    return checkpoint


def _as_second_phase(parent: ckpt.Checkpoint, history: dict[str, list], results: dict[str, Any],
                     training: dict[str, Any], init_from: str) -> tuple[dict[str, list], dict[str, Any], dict[str, Any]]:
    """Present a run started from ``parent`` (``init_from``) as a second phase of the parent's run.

    The history becomes the parent's followed by this run's epochs, numbered on from the
    parent's final epoch; ``results`` epochs are shifted the same way and gain
    ``phase_start_epoch``; ``training["parent"]`` keeps the parent's settings and results.
    The best model is the best of *this* phase (by its own validation).
    """
    offset = int(parent.results.get("final_epoch") or (parent.history.get("epoch") or [0])[-1])
    combined: dict[str, list] = {}
    for key, values in history.items():
        before = list(parent.history.get(key, []))
        shifted = [e + offset for e in values] if key in ("epoch", "val_epoch") else list(values)
        combined[key] = before + shifted
    results = dict(results)
    results["best_epoch"] += offset
    results["final_epoch"] += offset
    results["phase_start_epoch"] = offset + 1
    training = dict(training)
    training["parent"] = {"init_from": str(init_from), "training": parent.training, "results": parent.results}
    return combined, results, training
