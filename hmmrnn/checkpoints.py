"""Checkpoints: a folder with ``weights.npz`` and ``config.json`` (plus optional ``snapshots.npz``).

Layout of a checkpoint folder::

    weights.npz     float32 arrays W_in (H, D), W_rec (H, H), W_out (K, H); loaded with allow_pickle=False
    config.json     {"hmm": {...}, "rnn": {...}, "training": {...}, "results": {...}, "history": {...}}
    snapshots.npz   optional: epochs (S,), W_in (S, H, D), W_rec (S, H, H), W_out (S, K, H)

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted write never leaves a half-written checkpoint. Loading checks shapes,
dtypes, finiteness and that the config agrees with the weights, and says what is wrong.
Shipped checkpoints live in ``hmmrnn/checkpoints/<name>/`` and load by name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .hmm import HMM, TARGET_NAMES, HMMError, get_hmm
from .model import H0_MODES, NoiseRNN, RNNWeights

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Snapshots",
    "SHIPPED_DIR",
    "shipped_names",
    "load",
    "save",
    "load_snapshots",
    "save_snapshots",
    "atomic_write_bytes",
]

SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
WEIGHT_NAMES = RNNWeights._fields
CONFIG_SECTIONS = ("hmm", "rnn", "training", "results", "history")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or inconsistent."""


@dataclass
class Checkpoint:
    """A trained network and everything needed to reproduce and judge it.

    Attributes:
        weights: the network's weights (the best model by validation loss).
        hmm: the target HMM (with ``seq_len`` = training sequence length).
        rnn: ``{"input_size": D, "hidden_size": H, "h0": "zeros" | "normal"}``.
        training: the settings of the run (seed, epochs, batch, lr, ...; software versions).
        results: ``{"best_epoch", "best_val_loss", "final_val_loss", ...}``.
        history: per-epoch curves, e.g. ``{"epoch": [...], "train_loss": [...],
            "val_epoch": [...], "val_loss": [...]}``.
        path: the folder it was loaded from (None if not saved).
    """

    weights: RNNWeights
    hmm: HMM
    rnn: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.hmm.name

    def model(self, device: str = "cpu") -> "NoiseRNN":
        """A fresh torch model holding a copy of the weights."""
        return NoiseRNN.from_weights(self.weights, h0=self.rnn["h0"], device=device)

    def snapshots(self) -> "Snapshots | None":
        """The training snapshots saved beside the checkpoint, or None.

        A checkpoint made from another one without further training (a readout calibration,
        ``training["calibration"]["source"]``) shares its source's training run: its
        snapshots are the source's.

        Raises:
            CheckpointError: the chain of calibration sources leads back to a folder already
                visited (e.g. a checkpoint calibrated into its own source's folder).
        """
        seen: list[Path] = []
        checkpoint: Checkpoint = self
        while True:
            if checkpoint.path is not None:
                here = checkpoint.path.resolve()
                if here in seen:
                    raise CheckpointError(f"{self.path}: its calibration sources lead back to {checkpoint.path}; "
                                          "the snapshots of its training run cannot be found")
                seen.append(here)
                if (checkpoint.path / "snapshots.npz").exists():
                    return load_snapshots(checkpoint.path / "snapshots.npz", self.weights)
            calibration = checkpoint.training.get("calibration")
            source = calibration.get("source") if isinstance(calibration, dict) else None
            if not source:
                return None
            checkpoint = load(source)

    def config(self) -> dict[str, Any]:
        """The JSON config (all five sections)."""
        return {
            "hmm": self.hmm.to_dict(),
            "rnn": dict(self.rnn),
            "training": self.training,
            "results": self.results,
            "history": self.history,
        }


class Snapshots(NamedTuple):
    """Weights saved during training.

    Fields:
        epochs: (S,) epoch of each snapshot (0 = initialisation, e = after e epochs).
        W_in: (S, H, D); W_rec: (S, H, H); W_out: (S, K, H).
    """

    epochs: np.ndarray
    W_in: np.ndarray
    W_rec: np.ndarray
    W_out: np.ndarray

    def weights(self, index: int) -> RNNWeights:
        """The weights of snapshot ``index``."""
        return RNNWeights(self.W_in[index], self.W_rec[index], self.W_out[index])

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.epochs.shape[0])


# --------------------------------------------------------------------------- writing

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _format_json(value: Any, indent: int = 0) -> str:
    """JSON with one key per line but every list of scalars (or of such lists) on one line."""
    pad = " " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {_format_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return json.dumps(value, allow_nan=True)


def save(checkpoint: Checkpoint, folder: str | Path) -> Path:
    """Write ``checkpoint`` to ``folder`` (created if needed), each file atomically."""
    folder = Path(folder)
    weights = RNNWeights(*(np.asarray(a, dtype=np.float32) for a in checkpoint.weights)).validate()
    _check_consistency(weights, checkpoint.hmm, checkpoint.rnn, where=str(folder))
    atomic_write_bytes(folder / "weights.npz", _npz_bytes(weights._asdict()))
    text = _format_json(_to_jsonable(checkpoint.config()))
    atomic_write_bytes(folder / "config.json", (text + "\n").encode())
    checkpoint.path = folder
    return folder


def save_snapshots(path: str | Path, epochs: list[int], weights: list[RNNWeights]) -> None:
    """Write training snapshots (float32) to ``path`` atomically."""
    if len(epochs) != len(weights):
        raise ValueError(f"{len(epochs)} epochs but {len(weights)} weight sets")
    arrays = {"epochs": np.asarray(epochs, dtype=np.int64)}
    for name in WEIGHT_NAMES:
        arrays[name] = np.stack([np.asarray(getattr(w, name), dtype=np.float32) for w in weights])
    atomic_write_bytes(Path(path), _npz_bytes(arrays))


# --------------------------------------------------------------------------- reading

def shipped_names() -> list[str]:
    """Names of the checkpoints shipped with the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").exists())


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and "/" not in name_or_path and (SHIPPED_DIR / name_or_path).is_dir():
        return SHIPPED_DIR / name_or_path
    known = ", ".join(shipped_names()) or "none"
    raise CheckpointError(f"no checkpoint folder {str(name_or_path)!r}; shipped checkpoints: {known}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"{path} is corrupt or not an .npz file ({type(exc).__name__}: {exc})") from exc


def _check_consistency(weights: RNNWeights, hmm: HMM, rnn: dict[str, Any], where: str) -> None:
    for key in ("input_size", "hidden_size", "h0"):
        if key not in rnn:
            raise CheckpointError(f"{where}: config 'rnn' lacks {key!r}")
    h, d, k = rnn["hidden_size"], rnn["input_size"], hmm.n_outputs
    expected = {"W_in": (h, d), "W_rec": (h, h), "W_out": (k, h)}
    for name, shape in expected.items():
        actual = tuple(getattr(weights, name).shape)
        if actual != shape:
            raise CheckpointError(
                f"{where}: {name} has shape {actual} but the config says {shape} "
                f"(hidden_size={h}, input_size={d}, outputs={k})"
            )
    if rnn["h0"] not in H0_MODES:
        raise CheckpointError(f"{where}: rnn.h0 must be one of {H0_MODES}, got {rnn['h0']!r}")


def _hmm_from_config(spec: dict[str, Any], where: Path) -> HMM:
    """The ``hmm`` section as an :class:`HMM`, every field of the right type; a registry name
    (``"linear2"``, ...) must come with that target's matrices (its training length may differ)."""
    name = spec.get("name", "custom")
    if not isinstance(name, str):
        raise CheckpointError(f"{where}: 'hmm.name' must be a string, got {name!r}")
    seq_len = spec.get("seq_len")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise CheckpointError(f"{where}: 'hmm.seq_len' must be a positive integer or null, got {seq_len!r}")
    for key in ("start", "transition", "emission"):
        if key in spec:
            try:
                array = np.asarray(spec[key], dtype=np.float64)
            except (ValueError, TypeError):
                raise CheckpointError(f"{where}: 'hmm.{key}' must be an array of numbers, got {str(spec[key])[:60]!r}") from None
            if array.ndim == 0:
                raise CheckpointError(f"{where}: 'hmm.{key}' must be an array of numbers, got {spec[key]!r}")
    try:
        hmm = HMM.from_dict(spec)
    except HMMError as exc:
        raise CheckpointError(f"{where}: invalid 'hmm' section: {exc}") from exc
    if name in TARGET_NAMES:
        ref = get_hmm(name)
        same = all(a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in
                   ((hmm.start, ref.start), (hmm.transition, ref.transition), (hmm.emission, ref.emission)))
        if not same:
            raise CheckpointError(f"{where}: the 'hmm' section is named {name!r} but its matrices are not {name}'s; "
                                  f"the network would be compared with {name}'s numbers (rename it, e.g. 'custom')")
    return hmm


def load(name_or_path: str | Path) -> Checkpoint:
    """Load a checkpoint by shipped name (``"linear2"``) or folder path, validating it.

    Raises:
        CheckpointError: missing folder or file, corrupt file, wrong dtype/shape, non-finite
            weights, invalid HMM, or config that disagrees with the weights.
    """
    folder = _resolve(name_or_path)
    config_path = folder / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{config_path} is missing")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} is not a file")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc})") from exc
    except OSError as exc:
        raise CheckpointError(f"{config_path} cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    missing = [s for s in CONFIG_SECTIONS if s not in config]
    if missing:
        raise CheckpointError(f"{config_path} lacks the section(s) {missing}")
    not_objects = [s for s in CONFIG_SECTIONS if not isinstance(config[s], dict)]
    if not_objects:
        raise CheckpointError(f"{config_path}: the section(s) {not_objects} must be JSON objects")
    hmm = _hmm_from_config(config["hmm"], config_path)

    arrays = _read_npz(folder / "weights.npz")
    if set(arrays) != set(WEIGHT_NAMES):
        raise CheckpointError(f"{folder / 'weights.npz'} must hold exactly {list(WEIGHT_NAMES)}, found {sorted(arrays)}")
    for name, arr in arrays.items():
        if arr.dtype != np.float32:
            raise CheckpointError(f"{folder / 'weights.npz'}: {name} has dtype {arr.dtype}, expected float32")
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{folder / 'weights.npz'}: {name} has {int((~np.isfinite(arr)).sum())} non-finite entries")
        if arr.ndim != 2:
            raise CheckpointError(f"{folder / 'weights.npz'}: {name} must be 2-D, got shape {arr.shape}")
    weights = RNNWeights(**arrays)
    _check_consistency(weights, hmm, config["rnn"], where=str(config_path))
    history = config["history"]
    if isinstance(history, dict):
        lengths = {k: len(v) for k, v in history.items() if isinstance(v, list)}
        for a, b in (("epoch", "train_loss"), ("val_epoch", "val_loss")):
            if a in lengths and b in lengths and lengths[a] != lengths[b]:
                raise CheckpointError(f"{config_path}: history {a!r} has {lengths[a]} entries but {b!r} has {lengths[b]}")
    return Checkpoint(weights, hmm, dict(config["rnn"]), config["training"], config["results"], history, folder)


def load_snapshots(path: str | Path, like: RNNWeights | None = None) -> Snapshots:
    """Load ``snapshots.npz``; if ``like`` is given, check the shapes agree with it."""
    path = Path(path)
    arrays = _read_npz(path)
    missing = [k for k in ("epochs", *WEIGHT_NAMES) if k not in arrays]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}")
    snaps = Snapshots(arrays["epochs"], arrays["W_in"], arrays["W_rec"], arrays["W_out"])
    count = snaps.epochs.shape[0]
    for name in WEIGHT_NAMES:
        arr = getattr(snaps, name)
        if arr.ndim != 3 or arr.shape[0] != count:
            raise CheckpointError(f"{path}: {name} must be (S={count}, ., .), got {arr.shape}")
        if like is not None and arr.shape[1:] != getattr(like, name).shape:
            raise CheckpointError(f"{path}: {name} snapshots have shape {arr.shape[1:]}, the checkpoint {getattr(like, name).shape}")
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{path}: {name} has non-finite entries")
    return snaps
