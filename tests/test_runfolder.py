"""Tests of the run folder (hmmrnn.runfolder and its use by hmmrnn.train): one run per folder
(a lock naming its holder), a non-empty folder refused unless resumed or overwritten, checks
before the first epoch, the resume file without pickles (and the legacy ``resume.pt`` read
only as plain types), and what decides a run's numbers kept by a resumed run, so that a run
trained in segments equals the uninterrupted one. Tiny runs (a fraction of a second each)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import socket
from collections import OrderedDict

import numpy as np
import pytest
import torch

from hmmrnn import runfolder
from hmmrnn import train as train_module
from hmmrnn.checkpoints import load
from hmmrnn.runfolder import LOCK_NAME, RunFolderError, RunLock, load_resume
from hmmrnn.train import TrainConfig, run_bytes, train

TINY = TrainConfig(hmm="linear2", hidden_size=8, input_size=4, n_sequences=60, batch_size=16, seq_len=10, epochs=6,
                   val_every=1, resume_every=1, snapshot_every=2, lr=0.05, seed=0, compile=False, device="cpu")


def tiny(**changes) -> TrainConfig:
    return dataclasses.replace(TINY, **changes)


def files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def run_outputs(folder: pathlib.Path) -> dict:
    """Everything a run leaves that must be equal between equal runs (weights bit for bit)."""
    out = {}
    for name in ("weights.npz", "last.npz", "snapshots.npz"):
        if (folder / name).exists():
            with np.load(folder / name, allow_pickle=False) as data:
                out[name] = {k: data[k] for k in data.files}
    config = json.loads((folder / "config.json").read_text())
    out["history"], out["results"] = config["history"], config["results"]
    return out


def assert_same_run(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], dict) and all(isinstance(v, np.ndarray) for v in a[key].values()):
            assert sorted(a[key]) == sorted(b[key])
            for name in a[key]:
                np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{key}/{name}")
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("reference")
    train(TINY, folder, progress=False)
    return run_outputs(folder)


# --------------------------------------------------------------------------- one run per folder


def test_a_second_run_into_a_locked_folder_fails_at_once_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with RunLock(folder):
        holder = json.loads((folder / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunFolderError, match=rf"in use by another training run \(pid {os.getpid()} on host "):
            train(TINY, folder, progress=False)
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing was written
    assert list(folder.iterdir()) == []  # the lock file goes with the lock
    train(tiny(epochs=1), folder, progress=False)  # free again
    assert not (folder / LOCK_NAME).exists()


def test_a_lock_left_by_a_dead_holder_is_free(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": "then"}))
    with RunLock(folder) as lock:  # flock is not held by anyone: the stale file is taken over
        assert lock.held and json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_folder_holding_a_run_is_refused_and_left_untouched(tmp_path, reference):
    folder = tmp_path / "run"
    train(tiny(snapshot_every=1), folder, progress=False)
    before = files(folder)
    with pytest.raises(RunFolderError, match=r"already holds a run .*pass --resume to continue it, --overwrite to replace it"):
        train(tiny(seed=5), folder, progress=False)
    assert files(folder) == before


def test_overwrite_replaces_the_whole_run_snapshots_included(tmp_path, reference):
    folder = tmp_path / "run"
    train(tiny(seed=3, snapshot_every=1), folder, progress=False)
    assert (folder / "snapshots.npz").exists()
    (folder / ".weights.npz.abc123.tmp").write_bytes(b"left by a killed write")
    train(tiny(snapshot_every=0), folder, progress=False, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "last.npz", "resume.npz", "weights.npz"]
    assert load(folder).training["seed"] == 0
    # the new run is exactly a fresh run of its settings
    fresh = tmp_path / "fresh"
    train(tiny(snapshot_every=0), fresh, progress=False)
    assert_same_run(run_outputs(folder), run_outputs(fresh))


def test_overwrite_never_wipes_a_folder_holding_other_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    (folder / "weights.npz").write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"holds files that are not part of a training run \(notes.txt\)"):
        train(TINY, folder, progress=False, overwrite=True)
    assert sorted(files(folder)) == ["notes.txt", "weights.npz"]


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(RunFolderError, match="exclude each other"):
        train(TINY, tmp_path / "run", resume=True, overwrite=True, progress=False)


def test_resume_in_a_folder_without_run_files_starts_a_new_run(tmp_path, reference):
    """A caller's own files (a sweep's settings, a log) do not stop a new run under resume=True."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "settings.json").write_text("{}")
    lines: list[str] = []
    train(TINY, folder, resume=True, progress=False, log=lines.append)
    assert any("starting from scratch" in line for line in lines)
    assert_same_run(run_outputs(folder), reference)
    assert (folder / "settings.json").read_text() == "{}"


def test_resume_of_a_run_without_resume_file_is_refused(tmp_path):
    folder = tmp_path / "run"
    train(tiny(epochs=2), folder, progress=False)
    (folder / "resume.npz").unlink()
    with pytest.raises(RunFolderError, match="cannot resume: .* but no resume.npz"):
        train(tiny(epochs=4), folder, resume=True, progress=False)


# --------------------------------------------------------------------------- checks before the first epoch


def test_out_that_is_a_file_fails_before_training(tmp_path, monkeypatch):
    path = tmp_path / "file"
    path.write_text("not a folder")
    monkeypatch.setattr(train_module, "make_dataset", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(RunFolderError, match="exists and is not a folder"):
        train(TINY, path, progress=False)
    with pytest.raises(RunFolderError, match="cannot create the run folder"):
        train(TINY, path / "below", progress=False)


def test_unwritable_folder_fails_before_training(tmp_path, monkeypatch):
    real = pathlib.Path.write_bytes

    def refuse(self, data):
        if self.parent == tmp_path / "ro":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    monkeypatch.setattr(train_module, "make_dataset", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(RunFolderError, match="cannot write in the run folder .*ro: Permission denied"):
        train(TINY, tmp_path / "ro", progress=False)


def test_free_space_is_checked_before_training(tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(train_module, "make_dataset", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(RunFolderError, match=r"the run's files need about 1\.\d MiB, the file system has 0\.0 MiB free"):
        train(TINY, tmp_path / "run", progress=False)


def test_run_bytes_covers_the_files_a_run_writes(tmp_path):
    for config in (TINY, tiny(snapshot_every=1, epochs=8, hidden_size=20)):
        folder = tmp_path / f"run{config.hidden_size}"
        train(config, folder, progress=False)
        written = sum(p.stat().st_size for p in folder.iterdir())
        largest = max(p.stat().st_size for p in folder.iterdir())
        assert written + largest <= run_bytes(config, 3) <= written + largest + 2**20 + 2**16


def test_absurd_sizes_are_refused_before_anything_is_allocated(tmp_path):
    with pytest.raises(ValueError, match=r"hidden_size=10000000.*need at least \d+\.\d GiB; this machine has"):
        train(tiny(hidden_size=10_000_000), tmp_path / "big", progress=False)
    assert not (tmp_path / "big").exists()


# --------------------------------------------------------------------------- resuming


def test_resume_with_fewer_epochs_than_run_is_refused(tmp_path):
    folder = tmp_path / "run"
    train(tiny(epochs=6), folder, progress=False)
    before = files(folder)
    with pytest.raises(ValueError, match="already trained 6 epochs, more than epochs=4"):
        train(tiny(epochs=4), folder, resume=True, progress=False)
    assert files(folder) == before


def test_segmented_run_equals_uninterrupted_across_the_old_compile_threshold(tmp_path, monkeypatch):
    """The issue's case: --epochs 40, then --resume --epochs 60, vs one 60-epoch run, compile
    left to the default. The decision no longer depends on --epochs, and a resumed run keeps
    the one recorded in its resume file, even where the default would now say otherwise."""
    config = tiny(compile=None, epochs=60, val_every=5, resume_every=10, snapshot_every=10, lr=0.01)
    device = torch.device("cpu")
    assert train_module.compile_decision(dataclasses.replace(config, epochs=40), device) == \
        train_module.compile_decision(config, device) is False  # a 16-sequence batch: never worth compiling
    train(config, tmp_path / "once", progress=False)
    train(dataclasses.replace(config, epochs=40), tmp_path / "segments", progress=False)
    # the default would compile now (threshold lowered): the resumed run keeps its recorded "not compiled"
    monkeypatch.setattr(train_module, "COMPILE_MIN_BATCH", 1)
    monkeypatch.setattr(train_module.shutil, "which", lambda name: "/usr/bin/cc")
    assert train_module.compile_decision(config, device) is True
    train(config, tmp_path / "segments", resume=True, progress=False)
    assert_same_run(run_outputs(tmp_path / "once"), run_outputs(tmp_path / "segments"))
    assert load(tmp_path / "segments").training["compiled"] is False
    run = load_resume(tmp_path / "segments" / "resume.npz").run
    assert {k: run[k] for k in ("compiled", "device", "dtype", "threads", "torch", "numpy")} == {
        "compiled": False, "device": "cpu", "dtype": "float32", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "numpy": np.__version__}


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile on the CPU needs a C compiler")
def test_a_compiled_run_in_segments_equals_the_uninterrupted_compiled_run(tmp_path):
    """The other side of the threshold: a run that compiled its loss, resumed where the default
    would not compile (a 16-sequence batch), keeps compiling and ends bit for bit as the
    compiled run trained at once (about 10 s: the compilation)."""
    config = tiny(compile=True, epochs=6, val_every=2, resume_every=2, snapshot_every=2)
    assert train_module.compile_decision(dataclasses.replace(config, compile=None), torch.device("cpu")) is False
    train(config, tmp_path / "once", progress=False)
    train(dataclasses.replace(config, epochs=4), tmp_path / "segments", progress=False)
    train(dataclasses.replace(config, compile=None), tmp_path / "segments", resume=True, progress=False)
    assert_same_run(run_outputs(tmp_path / "once"), run_outputs(tmp_path / "segments"))
    assert load(tmp_path / "segments").training["compiled"] is True
    assert load_resume(tmp_path / "segments" / "resume.npz").run["compiled"] is True


def test_resume_refuses_another_compile_or_device(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=2)
    with pytest.raises(ValueError, match="trained without torch.compile"):
        train(tiny(compile=True), folder, resume=True, progress=False)
    with pytest.raises(ValueError, match="the run trained on cpu, this one would run on cuda"):
        train_module._load_and_check_resume(tiny(device="cuda"), folder, torch.device("cuda"), None)


def test_resumed_run_uses_the_thread_count_it_was_run_with(tmp_path, reference):
    folder = tmp_path / "run"
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=3)
    torch.set_num_threads(threads + 1)
    try:
        lines: list[str] = []
        train(TINY, folder, resume=True, progress=False, log=lines.append)
        assert any(f"using {threads} CPU threads, as the run being resumed (this process had {threads + 1})" in l for l in lines)
        assert torch.get_num_threads() == threads + 1  # restored afterwards
    finally:
        torch.set_num_threads(threads)
    assert_same_run(run_outputs(folder), reference)


def test_init_from_another_target_is_refused(tmp_path):
    train(tiny(epochs=1), tmp_path / "parent", progress=False)
    with pytest.raises(ValueError, match="was trained on the target 'linear2', this run's is 'linear3'"):
        train(tiny(hmm="linear3", epochs=1, init_from=str(tmp_path / "parent")), tmp_path / "child", progress=False)


# --------------------------------------------------------------------------- no pickles


def test_resume_file_is_arrays_and_json_readable_without_pickle(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=3)
    with np.load(folder / "resume.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
        meta = json.loads(data["__meta_json__"].tobytes())
    assert meta["epoch"] == 3 and meta["config"]["seed"] == 0 and meta["history"]["epoch"] == [1, 2, 3]


def test_no_module_loads_with_weights_only_false():
    package = pathlib.Path(train_module.__file__).parent
    offenders = [p.name for p in package.glob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []


class _Payload:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_resume_pt_is_refused_and_runs_nothing(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"config": _Payload(marker), "epoch": 1}, folder / "resume.pt")
    with pytest.raises(RunFolderError, match=r"refusing to resume from .*resume\.pt: it does not load as plain tensors"):
        train(TINY, folder, resume=True, progress=False)
    assert not marker.exists()


def test_a_corrupt_resume_npz_is_refused(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=2)
    (folder / "resume.npz").write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="is not a readable resume file"):
        train(TINY, folder, resume=True, progress=False)


def test_a_legacy_resume_pt_resumes_the_same_run(tmp_path):
    """A resume.pt as the earlier code wrote it (torch.save of tensors, NumPy arrays and
    RNNWeights) is read with weights_only=True and continues the run as a resume.npz of the
    same state does (both with the autograd loss the earlier code trained with); it is then
    replaced by resume.npz."""
    expected = tmp_path / "npz"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, expected, progress=False, stop_after=3)
    state = load_resume(expected / "resume.npz")
    state.run["loss"] = "autograd"  # what a legacy file implies
    runfolder.save_resume(expected / "resume.npz", state)
    train(TINY, expected, resume=True, progress=False)
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=3)
    state = load_resume(folder / "resume.npz")
    legacy = {
        "config": state.config, "epoch": state.epoch,
        "model": OrderedDict((k, torch.from_numpy(v)) for k, v in state.model.items()),
        "optimizer": state.optimizer, "noise_gen": torch.from_numpy(state.noise_gen),
        "history": state.history,
        "best": {"epoch": state.best_epoch, "val_loss": state.best_val_loss, "weights": state.best_weights},
        "snap_epochs": state.snap_epochs, "snap_weights": [tuple(w) for w in state.snap_weights],
        "stop_reason": state.stop_reason,
    }
    torch.save(legacy, folder / "resume.pt")
    (folder / "resume.npz").unlink()
    lines: list[str] = []
    train(TINY, folder, resume=True, progress=False, log=lines.append)
    assert any("resume.pt at epoch 3" in line for line in lines)
    assert_same_run(run_outputs(folder), run_outputs(expected))
    assert (folder / "resume.npz").exists() and not (folder / "resume.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_trained_on_cuda_is_not_resumed_on_the_cpu(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(device="auto"), folder, progress=False, stop_after=2)
    state = load_resume(folder / "resume.npz")
    state.run["device"] = "cuda"  # as if it had been trained on a GPU
    runfolder.save_resume(folder / "resume.npz", state)
    with pytest.raises(ValueError, match="the run trained on cuda, which this machine lacks"):
        train(tiny(device="auto"), folder, resume=True, progress=False)
    with pytest.raises(ValueError, match="the run trained on cuda, this one would run on cpu"):
        train(tiny(device="cpu"), folder, resume=True, progress=False)


def test_a_run_is_not_resumed_with_other_library_versions(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=2)
    state = load_resume(folder / "resume.npz")
    state.run["torch"] = "1.0.0"
    runfolder.save_resume(folder / "resume.npz", state)
    with pytest.raises(ValueError, match=rf"trained with torch 1\.0\.0, this is torch {re.escape(torch.__version__)}"):
        train(TINY, folder, resume=True, progress=False)
