"""Training: the paper's recipe, seeded end to end, resumable, fast on a CPU.

The recipe is that of Torre et al. (NeurIPS 2025), its Methods and its public code.

Recipe (every field of :class:`TrainConfig` overridable): 30,000 HMM sequences split in
thirds (train / validation / test); batches of 4096 generated vs 4096 HMM sequences; fresh
input noise every step; loss = debiased Sinkhorn divergence (p=2, blur=0.2) between
flattened one-hot sequences; Adam(lr 1e-3, betas (0.9, 0.9)); gradient-norm clip.

Beyond the paper's code:

* the model kept is really the best one by validation loss (a copy), and validation uses
  the same noise at every evaluation (common random numbers) so that epochs are compared
  on equal terms;
* the run folder is owned by one run (:mod:`hmmrnn.runfolder`: an exclusive lock, a
  non-empty folder refused unless resumed or overwritten, checked before the first epoch);
* a resume file (``resume.npz``: arrays and JSON, no pickles) is written atomically every
  ``resume_every`` epochs; a run killed at any point and resumed ends with the same weights
  as an uninterrupted run. What decides the numbers beyond the settings (compiled or not,
  device, dtype, CPU threads, the torch and NumPy versions) is recorded in it and kept (or
  required) by a resumed run, so a run trained in segments equals the uninterrupted one;
* optional learning-rate decay (``lr_milestones``/``lr_gamma``), start from another
  checkpoint (``init_from``), and an optional auxiliary term (``stats_weight``, default 0,
  i.e. off) — see :func:`pair_statistics_kl`;
* an optional check after every validation (``train(..., check=...)``, returning a
  :class:`CheckResult`) that records numbers in the history and may end the run early by a
  stated rule (e.g. :class:`hmmrnn.search.BifurcationRule`: no bifurcation by epoch E);
* the loss and its gradient come from :func:`hmmrnn.bptt.fast_loss` (hand-written
  backpropagation through time, the Sinkhorn divergence of the exact one-hot samples with a
  closed-form gradient, its soft-min passes under ``torch.compile`` when compiling): the
  same loss as :func:`_loss` (autograd, the implementation of runs started before it, which
  resume with it), equal to it to float rounding and several times faster on a CPU
  (``benchmarks/bench_train_step.py`` times both against an eager PyTorch + geomloss step).

Randomness: ``seed`` feeds a ``numpy.random.SeedSequence`` whose children seed the HMM data,
the weight initialisation, the training noise and the validation noise.
"""

from __future__ import annotations

import dataclasses
import math
import os
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
from . import runfolder
from .hmm import HMM, get_hmm, one_hot, sample
from .model import H0_MODES, NoiseRNN, RNNWeights, hard_gumbel_softmax, sample_gumbel
from .workspace import Workspace
from .bptt import fast_divergence, fast_loss
from .sinkhorn import epsilon_schedule, onehot_diameter, self_transport_term, sinkhorn_divergence

__all__ = ["TrainConfig", "CheckResult", "Dataset", "make_dataset", "hmm_validation_floor", "train", "resolve_device",
           "compile_decision", "compile_reason", "run_bytes", "pair_statistics_kl", "software_versions", "COMPILE_MIN_BATCH", "MAX_SEED"]

COMPILE_MIN_BATCH = 1024  # compile = None: compile the loss for batches at least this large
QUIET_SECONDS = 60.0  # without a progress bar, a run logs a line at least this often (and after its first epoch)
MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """All settings of a training run (defaults: the paper's main configuration)."""

    hmm: str = "linear2"
    hidden_size: int = 150
    input_size: int = 100
    h0: str = "zeros"
    seq_len: int | None = None  # None: the target's training length (the paper's Methods)
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
    compile: bool | None = None  # None: compile_decision (batches >= COMPILE_MIN_BATCH, with a compiler or CUDA)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad setting; return self."""
        get_hmm(self.hmm)  # raises KeyError naming the known targets
        positive_ints = ("hidden_size", "input_size", "epochs", "n_sequences", "batch_size", "val_every", "resume_every")
        for name in positive_ints:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.seq_len is not None and (not _is_int(self.seq_len) or self.seq_len < 1):
            raise ValueError(f"seq_len must be a positive integer or None, got {self.seq_len!r}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {self.seed!r}")
        if not _is_int(self.snapshot_until) or self.snapshot_until < 0:
            raise ValueError(f"snapshot_until must be an integer >= 0, got {self.snapshot_until!r}")
        if not all(_is_int(m) and m >= 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones must be positive integers, got {self.lr_milestones!r}")
        if self.compile not in (None, True, False):
            raise ValueError(f"compile must be None, True or False, got {self.compile!r}")
        if self.init_from is not None and not isinstance(self.init_from, (str, os.PathLike)):
            raise ValueError(f"init_from must be a checkpoint name or folder, got {self.init_from!r}")
        if self.n_sequences < 3:
            raise ValueError(f"n_sequences must be at least 3 (split in thirds), got {self.n_sequences}")
        if self.h0 not in H0_MODES:
            raise ValueError(f"h0 must be one of {H0_MODES}, got {self.h0!r}")
        for name in ("lr", "blur", "tau", "grad_clip", "lr_gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not (isinstance(self.stats_weight, (int, float)) and math.isfinite(self.stats_weight) and self.stats_weight >= 0):
            raise ValueError(f"stats_weight must be a finite number >= 0, got {self.stats_weight!r}")
        if not _is_int(self.snapshot_every) or self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be an integer >= 0, got {self.snapshot_every!r}")
        if not isinstance(self.device, str) or (self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:")):
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


def _is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an ``int`` in Python, but no size or count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class CheckResult:
    """What a check (``train(..., check=fn)``) returns after a validation.

    ``fn(epoch, weights, history) -> CheckResult`` is called after every validation with the
    epoch, the current :class:`~hmmrnn.model.RNNWeights` (a copy) and the history so far
    (which holds the values of the earlier checks). It must not draw from the training's
    random generators, so that a run with a check trains exactly as one without it.

    Attributes:
        values: numbers appended to ``history["check_" + key]`` (one per check; the epochs
            go to ``history["check_epoch"]``); they are saved in the resume file, so a rule
            that reads them sees the same history after a resume.
        stop: None to go on; otherwise the reason to end the run at this epoch. The run then
            ends as a finished one (checkpoint written, ``results["stop_reason"]`` set) and
            resuming it trains no further.
    """

    values: dict[str, float] = field(default_factory=dict)
    stop: str | None = None


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU. Raises ValueError for a device this machine lacks."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine (use --device cpu or auto)")
        try:
            resolved = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device {device!r} is not a valid device name ({exc})") from None
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return resolved
    return torch.device(device)


def compile_decision(config: TrainConfig, device: torch.device) -> bool:
    """Whether a new run compiles its loss (``torch.compile``); a resumed run keeps its own.

    ``config.compile`` if set; otherwise compile when a batch holds at least
    :data:`COMPILE_MIN_BATCH` sequences (the paper's 4096: compiling pays off within a few
    epochs) and a compiler can run (CUDA, or a C compiler on the CPU). The number of epochs
    plays no part: compiled and eager steps differ in the last bits, so a decision that
    depended on ``--epochs`` would make a run trained in segments differ from one trained
    at once.
    """
    return compile_reason(config, device)[0]


def compile_reason(config: TrainConfig, device: torch.device) -> tuple[bool, str]:
    """:func:`compile_decision` and why, in words (the line a run prints before its first epoch)."""
    if config.compile is not None:
        return bool(config.compile), ("asked for (--compile)" if config.compile else "asked not to (--no-compile)")
    if config.batch_size < COMPILE_MIN_BATCH:
        return False, (f"batches of {config.batch_size} sequences are below {COMPILE_MIN_BATCH}, "
                       "where compiling would not pay off (--compile forces it)")
    if device.type == "cuda":
        return True, f"batches of {config.batch_size} >= {COMPILE_MIN_BATCH} sequences on CUDA"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler:
        return True, f"batches of {config.batch_size} >= {COMPILE_MIN_BATCH} sequences and a C compiler ({compiler})"
    return False, (f"batches of {config.batch_size} >= {COMPILE_MIN_BATCH} sequences, but no C compiler (cc, gcc) "
                   "is found on this machine")


def _snapshot_count(config: TrainConfig) -> int:
    if not config.snapshot_every:
        return 0
    return len(range(0, min(config.snapshot_until, config.epochs) + 1, config.snapshot_every))


def run_bytes(config: TrainConfig, n_outputs: int) -> int:
    """Room the files of a run need: weights, last, snapshots, resume file, config (bytes).

    Every file is written through a temporary copy, so the largest counts twice; 1 MiB spare.
    """
    weight_set = 4 * (config.hidden_size * (config.input_size + config.hidden_size) + n_outputs * config.hidden_size)
    snaps = _snapshot_count(config) * weight_set
    resume = 4 * weight_set + snaps  # model, Adam's two moments, best model; the snapshots
    history = 100 * config.epochs
    files = 2 * weight_set + snaps + resume + history
    return files + max(resume, snaps) + 2**20


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _check_memory(config: TrainConfig, n_outputs: int, seq_len: int, device: torch.device) -> None:
    """Refuse sizes whose weights, optimizer state and one batch's states cannot fit in memory."""
    params = config.hidden_size * (config.input_size + config.hidden_size) + n_outputs * config.hidden_size
    batch = min(config.batch_size, config.n_sequences)
    need = 4 * (4 * params + 2 * batch * seq_len * (config.hidden_size + config.input_size) + batch * batch)
    if device.type == "cuda":
        have = int(torch.cuda.get_device_properties(device).total_memory)
        where = f"{device} has"
    else:
        have = _memory_bytes()
        where = "this machine has"
    if have is not None and need > have:
        raise ValueError(
            f"hidden_size={config.hidden_size}, input_size={config.input_size}, batch_size={config.batch_size}, "
            f"seq_len={seq_len}: the weights, optimizer state and one batch need at least {need / 2**30:.1f} GiB; "
            f"{where} {have / 2**30:.1f} GiB"
        )


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
    chains' middle one (the paper's fit-quality figure), and this term states the pair statistics directly.

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

def _threads_note(device: torch.device) -> str:
    if device.type != "cpu":
        return ""
    n = torch.get_num_threads()
    return f" ({n} thread{'s' if n != 1 else ''})"


def _default_log(message: str) -> None:  # pragma: no cover - trivial
    print(message, flush=True)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    stop_after: int | None = None,
    check: Callable[[int, RNNWeights, dict[str, list]], CheckResult] | None = None,
    overwrite: bool = False,
) -> ckpt.Checkpoint:
    """Train a network and write its checkpoint folder.

    Before the first epoch: the settings are validated, the device exists, the sizes fit in
    memory, and the run folder is checked and locked (:func:`hmmrnn.runfolder.open_run_folder`:
    a folder holding another run is refused unless ``resume`` or ``overwrite``; a resumed run
    must have the same settings). The lock is held until the function returns.

    Args:
        config: the settings.
        out_dir: checkpoint folder; receives ``weights.npz`` (best model), ``config.json``,
            ``last.npz``, ``snapshots.npz`` (if enabled) and ``resume.npz``.
        resume: continue the run in ``out_dir`` (same settings; ``epochs`` may grow, never
            below the epochs already run); a folder without a run starts a new one.
        progress: tqdm bar; None shows it only when stderr is a terminal (never in notebooks).
        log: called with lines for a reader (None: silent): the run's settings and whether
            it compiles and why, before the first epoch; one line per validation (epoch,
            losses, s/epoch); without a bar, also after the first epoch and whenever the run
            has been quiet for :data:`QUIET_SECONDS`.
        stop_after: stop (as if killed) after this many epochs in this call — for tests.
        check: called after every validation (see :class:`CheckResult`); may record values
            in the history and end the run early (None: no check, the run as before).
        overwrite: replace the run ``out_dir`` holds (all its files, snapshots included).

    Returns:
        The checkpoint of the best model (by validation loss).

    Raises:
        ValueError: bad settings, a device this machine lacks, sizes that cannot fit in
            memory, settings that differ from the run being resumed, ``init_from`` of
            another target.
        hmmrnn.runfolder.RunFolderError: the folder is in use, holds another run, cannot be
            written, lacks room, or its resume file is unreadable.
        FloatingPointError: the training loss became non-finite (the resume file keeps the
            last good state).
    """
    config.validate()
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    hmm = config.target()
    seq_len = int(hmm.seq_len or 100)
    _check_memory(config, hmm.n_outputs, seq_len, device)
    lock = runfolder.open_run_folder(out_dir, resume=resume, overwrite=overwrite, need_bytes=run_bytes(config, hmm.n_outputs))
    try:
        saved = _load_and_check_resume(config, out_dir, device, log) if resume else None
        if saved is not None and saved[0].run is not None and saved[0].run.get("device"):
            device = torch.device(saved[0].run["device"]) if config.device == "auto" else device
        threads = torch.get_num_threads()
        if saved is not None and saved[0].run is not None and device.type == "cpu" and saved[0].run.get("threads") not in (None, threads):
            torch.set_num_threads(int(saved[0].run["threads"]))  # CPU results may depend on it: keep the run's
            if log:
                log(f"using {saved[0].run['threads']} CPU threads, as the run being resumed (this process had {threads})")
        try:
            return _train(config, out_dir, device, hmm, seq_len, saved, progress, log, stop_after, check)
        finally:
            torch.set_num_threads(threads)
    finally:
        lock.release()


def _load_and_check_resume(config: TrainConfig, out_dir: Path, device: torch.device,
                           log: Callable[[str], None] | None) -> "tuple[runfolder.RunState, Path, bool] | None":
    """The run in ``out_dir`` to resume, checked against ``config``: (state, its file, compiled).

    None when the folder holds no resume file (a new run). Raises ValueError naming each
    difference that would change the run's numbers or contradict its history.
    """
    path = runfolder.resume_path(out_dir)
    if path is None:
        if log:
            log(f"no resume file in {out_dir} yet: starting from scratch")
        return None
    state = runfolder.load_resume(path)
    saved, current = dict(state.config), config.as_dict()
    diffs = {key: (saved.get(key), current[key]) for key in current
             if key not in ("epochs", "device", "compile") and saved.get(key) != current[key]}
    if diffs:
        raise ValueError(f"cannot resume {path}: settings differ from the saved run (saved, now): {diffs}")
    if state.epoch > config.epochs:
        raise ValueError(f"cannot resume {path}: the run has already trained {state.epoch} epochs, more than "
                         f"epochs={config.epochs}; pass at least {state.epoch} (its history would disagree with its config)")
    if state.run is not None:
        compiled = bool(state.run["compiled"])
        if state.run.get("device") and config.device != "auto" and torch.device(state.run["device"]).type != device.type:
            raise ValueError(f"cannot resume {path}: the run trained on {state.run['device']}, this one would run on "
                             f"{device.type} and give other numbers; pass --device {state.run['device']} (or auto)")
        if state.run.get("device") and config.device == "auto":
            try:
                resolve_device(state.run["device"])  # the run's device must exist here
            except ValueError:
                raise ValueError(f"cannot resume {path}: the run trained on {state.run['device']}, which this machine "
                                 "lacks; on another device it would give other numbers") from None
    else:  # a legacy resume.pt: the rule of its time (compile for --epochs >= 50 with a compiler)
        old = saved.get("compile")
        compiled = bool(old) if old is not None else (int(saved.get("epochs", 0)) >= 50 and (
            device.type == "cuda" or bool(shutil.which("cc") or shutil.which("gcc"))))
    if state.run is not None:
        for library, version in (("torch", torch.__version__), ("numpy", np.__version__)):
            if state.run.get(library, version) != version:  # kernels (torch) and the data's sampler (numpy) may change
                raise ValueError(f"cannot resume {path}: the run was trained with {library} {state.run[library]}, this is "
                                 f"{library} {version}; its numbers could differ: resume it with {library} {state.run[library]}")
    if config.compile is not None and bool(config.compile) != compiled:
        raise ValueError(f"cannot resume {path}: the run was trained {'with' if compiled else 'without'} torch.compile, "
                         f"which changes its numbers in the last bits; drop --{'no-' if compiled else ''}compile to resume it as it was")
    return state, path, compiled


def _train(config: TrainConfig, out_dir: Path, device: torch.device, hmm: HMM, seq_len: int,
           saved: "tuple[runfolder.RunState, Path, bool] | None", progress: bool | None,
           log: Callable[[str], None] | None, stop_after: int | None,
           check: Callable[[int, RNNWeights, dict[str, list]], CheckResult] | None) -> ckpt.Checkpoint:
    """The training loop of :func:`train`, in a checked and locked folder."""
    resume_path = out_dir / runfolder.RESUME_NAME
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
        if not _same_target(start.hmm, hmm):
            raise ValueError(f"init_from {config.init_from!r} was trained on the target {start.hmm.name!r}, this run's is "
                             f"{hmm.name!r}: its history would be spliced into another target's run")
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
    stop_reason: str | None = None

    legacy_path: Path | None = None
    use_compile, why_compile = compile_reason(config, device)
    if saved is not None:
        state, path, use_compile = saved
        why_compile = "as the run being resumed was trained (the last bits of its numbers depend on it)"
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.model.items()})
        optimizer.load_state_dict(state.optimizer)
        noise_gen.set_state(torch.from_numpy(np.array(state.noise_gen, dtype=np.uint8)))
        history = state.history
        best = {"epoch": state.best_epoch, "val_loss": state.best_val_loss, "weights": state.best_weights}
        snap_epochs, snap_weights = list(state.snap_epochs), list(state.snap_weights)
        start_epoch = state.epoch
        stop_reason = state.stop_reason
        legacy_path = path if path.name == runfolder.LEGACY_RESUME_NAME else None
        if log:
            log(f"resumed {path} at epoch {start_epoch}" + (f" (stopped: {stop_reason})" if stop_reason else ""))
    if use_compile and device.type == "cpu" and not (shutil.which("cc") or shutil.which("gcc")):
        raise ValueError("this run compiles its loss (torch.compile) but no C compiler is found on this machine; "
                         "a run started here with --no-compile would train without one")
    # the loss implementation: "bptt" (hmmrnn.bptt.fast_loss) for new runs; a run resumed from a
    # file that does not name one was trained with "autograd" (_loss) and keeps it (same numbers)
    loss_impl = "bptt" if saved is None else (saved[0].run or {}).get("loss", "autograd")
    if loss_impl not in ("bptt", "autograd"):
        raise ValueError(f"cannot resume: unknown loss implementation {loss_impl!r} in the resume file")
    run_info = {"compiled": bool(use_compile), "device": device.type, "dtype": "float32", "threads": torch.get_num_threads(),
                "torch": torch.__version__, "numpy": np.__version__, "loss": loss_impl}
    if log:
        log(f"train {hmm.name}: H={config.hidden_size} D={config.input_size}, epochs {start_epoch + 1}..{config.epochs}, "
            f"{data.train.shape[0]} training sequences in batches of {config.batch_size}, {device.type}"
            f"{_threads_note(device)}, into {out_dir}")
        log(f"torch.compile: {'yes' if use_compile else 'no'}, {why_compile}")

    def lr_at(epoch: int) -> float:
        return config.lr * config.lr_gamma ** sum(epoch >= m for m in config.lr_milestones)

    workspace = Workspace()  # the step's big buffers, allocated once for the run (hmmrnn.workspace)
    if loss_impl == "bptt":
        def loss_fn(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return fast_loss(*args, compiled=bool(use_compile), workspace=workspace)
    else:
        loss_fn = torch.compile(_loss, dynamic=False) if use_compile else _loss

    def validate() -> float:
        gen = torch.Generator(device=device).manual_seed(val_seed)
        total, count = 0.0, 0
        with torch.inference_mode():
            for y, sched, y_self in zip(val_batches, val_schedules, val_self):
                n = y.shape[0]
                # torch.randn's numbers, drawn into a reused buffer (no fresh memory per batch)
                noise = workspace.take("noise", (n, seq_len, config.input_size), device=device).normal_(generator=gen)
                h0 = model.initial_state(n, gen)
                gumbel = sample_gumbel((n, seq_len, k), gen, device=device)
                if loss_impl == "bptt":
                    value = fast_divergence(model, noise, gumbel, h0, y, sched, y_self, config.tau, compiled=bool(use_compile),
                                            workspace=workspace)
                else:
                    onehot, _ = _generated_onehot(model, noise, gumbel, h0, config.tau)
                    value = sinkhorn_divergence(onehot.reshape(n, -1), y, eps_list=sched, y_self_term=y_self)
                total += float(value) * n
                count += n
        return total / count

    def save_resume(epoch: int) -> None:
        nonlocal legacy_path
        runfolder.save_resume(resume_path, runfolder.RunState(
            config=config.as_dict(), epoch=epoch, model=dict(model.state_dict()), optimizer=optimizer.state_dict(),
            noise_gen=noise_gen.get_state().numpy(), history=history, best_epoch=int(best["epoch"]),
            best_val_loss=float(best["val_loss"]), best_weights=best["weights"], snap_epochs=snap_epochs,
            snap_weights=snap_weights, stop_reason=stop_reason, run=run_info))
        if legacy_path is not None:  # the run now resumes from resume.npz
            legacy_path.unlink(missing_ok=True)
            legacy_path = None

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
    t_said = t_start  # when the last line was logged: without a bar, a line at least every QUIET_SECONDS
    last_epoch = start_epoch if stop_reason else config.epochs  # a run its check stopped is finished
    for epoch in range(start_epoch + 1, last_epoch + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch)
        model.train()
        losses = []
        for y, sched, y_self, pairs in zip(train_batches, schedules, train_self, train_pairs):
            n = y.shape[0]
            noise = workspace.take("noise", (n, seq_len, config.input_size), device=device).normal_(generator=noise_gen)
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
                t_said = time.perf_counter()
            if check is not None:
                outcome = check(epoch, model.weights(), history)
                history.setdefault("check_epoch", []).append(epoch)
                for key, value in outcome.values.items():
                    history.setdefault(f"check_{key}", []).append(float(value))
                if outcome.stop:
                    stop_reason = str(outcome.stop)
                    if log:
                        log(f"epoch {epoch:5d}  stopped: {stop_reason}")
        elif log and bar is None and (epochs_run == 0 or time.perf_counter() - t_said >= QUIET_SECONDS):
            # no validation this epoch and no bar: the first epoch, then a line whenever the
            # run has been quiet for QUIET_SECONDS, so a log file shows the run is alive
            rate = (time.perf_counter() - t_start) / (epochs_run + 1)
            log(f"epoch {epoch:5d}  train {train_loss:8.3f}  (validation every {config.val_every}; {rate:.1f} s/epoch)")
            t_said = time.perf_counter()
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss:.2f}", best=f"{best['val_loss']:.2f}")
            bar.update(1)
        epochs_run += 1
        if epoch % config.resume_every == 0 or epoch == config.epochs or stop_reason:
            save_resume(epoch)
        if stop_reason:
            break
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
            "loss": loss_impl,
            "threads": int(run_info["threads"]),
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
    if stop_reason:
        results["stop_reason"] = stop_reason
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


def _same_target(a: HMM, b: HMM) -> bool:
    """Same name and the same matrices (the training length may differ)."""
    return a.name == b.name and all(
        x.shape == y.shape and np.allclose(x, y, rtol=1e-9, atol=1e-12)
        for x, y in ((a.start, b.start), (a.transition, b.transition), (a.emission, b.emission)))


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
        shifted = [e + offset for e in values] if key in ("epoch", "val_epoch", "check_epoch") else list(values)
        combined[key] = before + shifted
    results = dict(results)
    results["best_epoch"] += offset
    results["final_epoch"] += offset
    results["phase_start_epoch"] = offset + 1
    training = dict(training)
    training["parent"] = {"init_from": str(init_from), "training": parent.training, "results": parent.results}
    return combined, results, training
