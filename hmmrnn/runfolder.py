"""The folder of a training run: owned by one run, checked before the first epoch, resumable.

What a run folder (``train(config, out_dir)``, ``python -m hmmrnn train --out DIR``) guarantees:

* **one run.** While a run trains, it holds an exclusive lock on ``DIR/.hmmrnn-run.lock``
  (``fcntl.flock``; the file names the holder's pid, host and start time). A second run
  into the same folder fails at once with an error that names the holder. The kernel drops
  the lock when the process dies, so a killed run never leaves the folder locked.
* **no mixing.** A folder that already holds files is refused unless the run *resumes* the
  run it holds (``resume=True``, which needs its resume file and the same settings) or
  *overwrites* it (``overwrite=True``: every file of the earlier run is deleted first,
  snapshots included; a folder that holds anything else is never wiped).
* **early failure.** Before any data is drawn: the path is a directory (or can be made),
  a file can be written in it, and the file system has room for the run's files.
* **resumable, atomic.** ``resume.npz`` (arrays, plus the settings, history and optimizer
  scalars as JSON inside it; loaded with ``allow_pickle=False``) is written atomically,
  as every other file of the run (:func:`hmmrnn.checkpoints.atomic_write_bytes`). Nothing
  in a run folder is ever unpickled. A ``resume.pt`` from before this format is read only
  with ``torch.load(weights_only=True)`` and a short allow-list of plain types (NumPy
  arrays of numbers, :class:`~hmmrnn.model.RNNWeights`); anything else is refused.

:class:`RunState` is everything a resumed run needs; :func:`save_resume` /
:func:`load_resume` turn it into the resume file and back, bit for bit.
"""

from __future__ import annotations

import datetime
import fcntl
import io
import json
import os
import shutil
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import atomic_write_bytes
from .model import RNNWeights

__all__ = [
    "RunFolderError",
    "RunLock",
    "RunState",
    "LOCK_NAME",
    "RESUME_NAME",
    "LEGACY_RESUME_NAME",
    "RUN_FILES",
    "open_run_folder",
    "run_files_in",
    "save_resume",
    "load_resume",
    "resume_path",
]

LOCK_NAME = ".hmmrnn-run.lock"
RESUME_NAME = "resume.npz"
LEGACY_RESUME_NAME = "resume.pt"
RUN_FILES = ("weights.npz", "config.json", "snapshots.npz", "last.npz", RESUME_NAME, LEGACY_RESUME_NAME)
RESUME_FORMAT = 1
_META_KEY = "__meta_json__"


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked (in use, not empty, not writable, full, bad resume file)."""


# --------------------------------------------------------------------------- ownership

def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "a process that has not yet written its name"
    return f"pid {info.get('pid')} on host {info.get('host', '?')}, started {info.get('started', '?')}"


class RunLock:
    """An exclusive, non-blocking lock on a run folder (``flock`` on ``folder/.hmmrnn-run.lock``).

    Use as a context manager or call :meth:`release`. The lock file is removed on release;
    a lock left by a killed process is free (the kernel drops ``flock`` locks with the process).

    Raises:
        RunFolderError: the folder is locked by another run (named in the message).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        for _ in range(10):  # retry if the file we locked was removed by its last holder meanwhile
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(
                    f"{self.folder} is in use by another training run ({_holder_text(self.path)}); "
                    "wait for it to end or choose another --out"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                break
            os.close(fd)
        else:  # pragma: no cover - needs a pathological race
            raise RunFolderError(f"could not lock {self.path}: it keeps being replaced")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode(), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _is_temporary(name: str) -> bool:
    """A temporary file of :func:`~hmmrnn.checkpoints.atomic_write_bytes` left by a killed write."""
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES)


def run_files_in(folder: str | Path) -> tuple[list[str], list[str]]:
    """(files a run writes, anything else) in ``folder``, sorted by name (the lock file is neither)."""
    run, other = [], []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name == LOCK_NAME:
            continue
        if entry.is_file() and (entry.name in RUN_FILES or _is_temporary(entry.name)):
            run.append(entry.name)
        else:
            other.append(entry.name)
    return run, other


def resume_path(folder: str | Path) -> Path | None:
    """The resume file in ``folder`` (``resume.npz``, else a legacy ``resume.pt``), or None."""
    for name in (RESUME_NAME, LEGACY_RESUME_NAME):
        path = Path(folder) / name
        if path.exists():
            return path
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def open_run_folder(folder: str | Path, *, resume: bool = False, overwrite: bool = False,
                    need_bytes: int = 0) -> RunLock:
    """Check ``folder`` for a new run (or the resumption of the run it holds) and lock it.

    In order: ``folder`` is a directory or can be made; a file can be written in it; no
    other run holds it; it is empty, or ``resume`` (and the run files it holds include a
    resume file; files of the caller's own, e.g. a sweep's notes, may lie beside them), or
    ``overwrite`` (the earlier run's files are deleted; anything else in it is refused);
    the file system has ``need_bytes`` free.

    Args:
        folder: the run folder (created with its parents if missing).
        resume: continue the run the folder holds (an empty folder starts a new one).
        overwrite: replace the run the folder holds.
        need_bytes: room the run's files need (see ``train``'s estimate).

    Returns:
        The held :class:`RunLock` (release it when the run ends).

    Raises:
        RunFolderError: naming what is wrong and what to do.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise RunFolderError("resume and overwrite exclude each other: resume continues the run in the folder, overwrite replaces it")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} exists and is not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {folder}: {exc.strerror or exc}") from None
    probe = folder / f".{LOCK_NAME}.probe.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"cannot write in the run folder {folder}: {exc.strerror or exc}") from None
    lock = RunLock(folder)
    try:
        run, other = run_files_in(folder)
        if run or other:
            if overwrite:
                if other:
                    raise RunFolderError(
                        f"{folder} holds files that are not part of a training run ({', '.join(other[:5])}"
                        f"{', ...' if len(other) > 5 else ''}); --overwrite replaces only a run folder: remove them or choose another --out"
                    )
                for name in run:
                    (folder / name).unlink()
            elif resume:  # the caller's own files beside a run are fine; a run without its resume file is not
                if run and resume_path(folder) is None:
                    raise RunFolderError(
                        f"cannot resume: {folder} holds {', '.join((run + other)[:5])} but no {RESUME_NAME}; "
                        "pass --overwrite to replace it, or choose another --out"
                    )
            else:
                raise RunFolderError(
                    f"{folder} already holds a run ({', '.join((run + other)[:5])}); pass --resume to continue it, "
                    "--overwrite to replace it (its snapshots included), or choose another --out"
                )
        free = shutil.disk_usage(folder).free
        if need_bytes > free:
            raise RunFolderError(f"{folder}: the run's files need about {_gib(need_bytes)}, the file system has {_gib(free)} free")
    except BaseException:
        lock.release()
        raise
    return lock


# --------------------------------------------------------------------------- the resume file

@dataclass
class RunState:
    """Everything a resumed run needs, in plain types (arrays and JSON-able values).

    Attributes:
        config: ``TrainConfig.as_dict()`` of the run.
        epoch: epochs completed.
        model: parameter name -> array (``NoiseRNN.state_dict()`` as NumPy).
        optimizer: ``torch.optim.Optimizer.state_dict()`` (tensors inside ``state``).
        noise_gen: (n,) uint8 state of the training-noise generator.
        history: the run's curves (lists of numbers).
        best_epoch, best_val_loss, best_weights: the best model so far.
        snap_epochs, snap_weights: the snapshots so far.
        stop_reason: why a check ended the run (None: not stopped).
        run: what decides the run's numbers beyond ``config``: ``{"compiled": bool,
            "device": "cpu" | "cuda", "dtype": "float32", "threads": int, "torch": version,
            "numpy": version}`` (None for a legacy ``resume.pt``, which did not record them).
    """

    config: dict[str, Any]
    epoch: int
    model: dict[str, np.ndarray]
    optimizer: dict[str, Any]
    noise_gen: np.ndarray
    history: dict[str, list]
    best_epoch: int
    best_val_loss: float
    best_weights: RNNWeights
    snap_epochs: list[int] = field(default_factory=list)
    snap_weights: list[RNNWeights] = field(default_factory=list)
    stop_reason: str | None = None
    run: dict[str, Any] | None = None


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return np.asarray(value).copy()


def save_resume(path: str | Path, state: RunState) -> None:
    """Write ``state`` to ``path`` (an ``.npz``; the non-array parts as JSON inside it), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.model.items():
        arrays[f"model/{name}"] = _array(value)
    opt_scalars: dict[str, dict[str, Any]] = {}
    for index, slot in state.optimizer["state"].items():
        opt_scalars[str(index)] = {}
        for key, value in slot.items():
            if isinstance(value, torch.Tensor):
                arrays[f"optimizer/{index}/{key}"] = _array(value)
            else:
                opt_scalars[str(index)][key] = value
    arrays["noise_gen"] = _array(state.noise_gen).astype(np.uint8)
    for name, value in state.best_weights._asdict().items():
        arrays[f"best/{name}"] = np.asarray(value, dtype=np.float32)
    if state.snap_weights:
        for name in RNNWeights._fields:
            arrays[f"snapshots/{name}"] = np.stack([np.asarray(getattr(w, name), dtype=np.float32) for w in state.snap_weights])
    meta = {
        "format": RESUME_FORMAT,
        "config": state.config,
        "epoch": int(state.epoch),
        "optimizer": {"param_groups": state.optimizer["param_groups"], "scalars": opt_scalars},
        "history": state.history,
        "best_epoch": int(state.best_epoch),
        "best_val_loss": float(state.best_val_loss),
        "snap_epochs": [int(e) for e in state.snap_epochs],
        "stop_reason": state.stop_reason,
        "run": state.run,
    }
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_resume(path: str | Path) -> RunState:
    """Read a resume file: ``resume.npz`` (no pickles), or a legacy ``resume.pt`` (``weights_only``).

    Raises:
        RunFolderError: the file is corrupt, of an unknown format, or (legacy) holds anything
            but tensors, numbers, strings, lists, dicts, NumPy number arrays and RNNWeights.
    """
    path = Path(path)
    if path.suffix == ".pt":
        return _load_legacy(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not a readable resume file ({type(exc).__name__}: {exc}); "
                             "pass --overwrite to start the run again") from None
    if not isinstance(meta, dict) or meta.get("format") != RESUME_FORMAT:
        raise RunFolderError(f"{path} has an unknown resume format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    try:
        model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        opt_state: dict[int, dict[str, Any]] = {}
        for index, scalars in meta["optimizer"]["scalars"].items():
            opt_state[int(index)] = dict(scalars)
        for key, value in arrays.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                opt_state.setdefault(int(index), {})[name] = torch.from_numpy(value)
        groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["optimizer"]["param_groups"]]
        best = RNNWeights(*(arrays[f"best/{n}"] for n in RNNWeights._fields))
        snap_epochs = list(meta["snap_epochs"])
        snaps = [RNNWeights(*(arrays[f"snapshots/{n}"][i] for n in RNNWeights._fields)) for i in range(len(snap_epochs))]
        return RunState(
            config=meta["config"], epoch=int(meta["epoch"]), model=model,
            optimizer={"state": opt_state, "param_groups": groups}, noise_gen=arrays["noise_gen"],
            history=meta["history"], best_epoch=int(meta["best_epoch"]), best_val_loss=float(meta["best_val_loss"]),
            best_weights=best, snap_epochs=snap_epochs, snap_weights=snaps, stop_reason=meta.get("stop_reason"),
            run=meta.get("run"),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RunFolderError(f"{path} is an incomplete resume file ({type(exc).__name__}: {exc}); "
                             "pass --overwrite to start the run again") from None


def _legacy_safe_globals() -> list[Any]:
    from numpy._core.multiarray import _reconstruct  # what pickled NumPy arrays are rebuilt with

    return [np.ndarray, _reconstruct, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType,
            np.dtypes.Int64DType, RNNWeights]


def _load_legacy(path: Path) -> RunState:
    """A ``resume.pt`` written before ``resume.npz``: ``torch.load(weights_only=True)``, plain types only."""
    try:
        with torch.serialization.safe_globals(_legacy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunFolderError(
            f"refusing to resume from {path}: it does not load as plain tensors and numbers "
            f"(torch.load(weights_only=True): {first[:200]}); it is not a resume file hmmrnn wrote, and "
            "hmmrnn never unpickles code. Pass --overwrite to start the run again"
        ) from None
    try:
        best = state["best"]
        weights = [RNNWeights(*w) for w in state["snap_weights"]]
        for w in [best["weights"], *weights]:
            for a in w:
                if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"):
                    raise TypeError(f"weights of type {type(a).__name__} {getattr(a, 'dtype', '')}")
        return RunState(
            config=dict(state["config"]), epoch=int(state["epoch"]),
            model={k: v.numpy() for k, v in state["model"].items()}, optimizer=state["optimizer"],
            noise_gen=state["noise_gen"].numpy(), history=state["history"], best_epoch=int(best["epoch"]),
            best_val_loss=float(best["val_loss"]), best_weights=RNNWeights(*best["weights"]),
            snap_epochs=[int(e) for e in state["snap_epochs"]], snap_weights=weights,
            stop_reason=state.get("stop_reason"), run=None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RunFolderError(f"{path} is an incomplete resume file ({type(exc).__name__}: {exc}); "
                             "pass --overwrite to start the run again") from None
