"""Faults a user can run into (issue 16): each ends in one clear message and a non-zero exit,
never a traceback, and nothing is silently wrong. Non-finite states are reported (how many,
from which step) and never counted as an output; the CLI keeps exit code 1 for "the fit
fails the bar" and uses 2 for errors. Most checks call ``main`` in-process (fast); the lock
of a run folder is checked between two real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hmmrnn
from hmmrnn import checkpoints as ckpt
from hmmrnn import dynamics as dyn
from hmmrnn.__main__ import main
from hmmrnn.checkpoints import CheckpointError
from hmmrnn.metrics import evaluate, fit_report, heldout_sinkhorn, sample_rnn_outputs
from hmmrnn.model import NONFINITE_OUTPUT, NonFiniteStates, NonFiniteStatesError, NoiseRNN
from hmmrnn.runfolder import LOCK_NAME, RunLock

TINY_ARGS = ["--hmm", "linear2", "--hidden", "8", "--input", "4", "--n-sequences", "60", "--batch", "16",
             "--seq-len", "10", "--no-compile", "--device", "cpu", "--val-every", "1"]


@pytest.fixture(autouse=True)
def _no_reexec(monkeypatch):
    monkeypatch.setenv("HMMRNN_NO_TCMALLOC", "1")  # `main(["train", ...])` must not re-exec pytest


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def copy_checkpoint(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in ("weights.npz", "config.json"):
        shutil.copy(ckpt.SHIPPED_DIR / name / f, folder / f)
    return folder


def edit_config(folder: Path, fn) -> None:
    config = json.loads((folder / "config.json").read_text())
    fn(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def exploding(tmp_path_factory) -> Path:
    """linear2 with W_rec x 50: its states overflow within a few steps."""
    source = hmmrnn.load("linear2")
    folder = tmp_path_factory.mktemp("exploding")
    w = source.weights
    checkpoint = ckpt.Checkpoint(hmmrnn.RNNWeights(w.W_in, w.W_rec * 50, w.W_out), source.hmm, dict(source.rnn),
                                 dict(source.training), dict(source.results), {})
    ckpt.save(checkpoint, folder)
    return folder


# --------------------------------------------------------------------------- non-finite states


def test_nonfinite_states_from_a_hand_built_mask():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1, 3:] = True
    mask[3, 5] = True
    states = NonFiniteStates.from_mask(mask)
    assert states == NonFiniteStates(sequences=2, steps=4, n_sequences=4, length=6, first_step=4)
    assert states and not NonFiniteStates.from_mask(np.zeros((2, 3), dtype=bool))
    assert states.describe() == "2 of 4 sequences have non-finite states (4 of 24 steps, 16.7%), the first from step 4"


def test_rollout_marks_nonfinite_steps_and_never_gives_them_an_output(exploding):
    model = hmmrnn.load(exploding).model()
    run = model.rollout(64, 100, torch.Generator().manual_seed(0))
    bad = ~torch.isfinite(run.logits).all(-1)
    assert bad.any() and not bad.all()  # the case of the issue: most, not all, steps overflow
    assert torch.equal(run.outputs == NONFINITE_OUTPUT, bad)
    assert bool(((run.outputs[~bad] >= 0) & (run.outputs[~bad] < 3)).all())
    steps = bad.numpy()
    assert run.nonfinite == NonFiniteStates(int(steps.any(1).sum()), int(steps.sum()), 64, 100,
                                            int(np.flatnonzero(steps.any(0))[0]) + 1)


def test_driven_run_marks_nonfinite_outputs_and_dominant(exploding):
    weights = hmmrnn.load(exploding).weights
    run = dyn.driven_run(weights, 50, torch.Generator().manual_seed(1), n_traj=8, burn_in=0)
    bad = ~np.isfinite(run.logits).all(-1)
    assert bad.any()
    np.testing.assert_array_equal(run.outputs == NONFINITE_OUTPUT, bad)
    np.testing.assert_array_equal(run.dominant == NONFINITE_OUTPUT, bad)
    np.testing.assert_array_equal(run.dominant[~bad], run.logits[~bad].argmax(-1))
    assert run.nonfinite.steps == int(bad.sum())


def test_modulated_runs_mark_nonfinite_dominant_outputs():
    """A condition whose activity overflows (all neurons' activity x 20) has no output where
    its states are not finite; the nominal condition is untouched."""
    from hmmrnn import circuits

    weights = hmmrnn.load("linear2").weights
    h = weights.hidden_size
    mods = circuits.stack_modulations([circuits.modulation(h), circuits.modulation(h, np.arange(h), 20.0)])
    noise = circuits.shared_noise(weights, 4, 60, torch.Generator().manual_seed(0))
    runs = circuits.simulate_modulations(weights, mods, noise, keep_hidden=True)
    logits = (torch.from_numpy(runs.hidden) @ torch.from_numpy(weights.W_out).T).numpy()  # float32, as simulated
    bad = ~np.isfinite(logits).all(-1)
    assert not bad[0].any() and bad[1].any()
    np.testing.assert_array_equal(runs.dominant == NONFINITE_OUTPUT, bad)
    assert runs.nonfinite.steps == int(bad.sum()) and runs.runaway()[1]


def test_evaluate_says_how_many_states_are_nonfinite_and_from_which_step(exploding):
    model = hmmrnn.load(exploding).model()
    reference = model.rollout(200, 100, torch.Generator().manual_seed(0))  # what evaluate draws first
    with pytest.raises(NonFiniteStatesError) as info:
        evaluate(exploding, n=200, length=100, seed=0, matched=False)
    states = info.value.states
    assert states == reference.nonfinite
    assert f"{states.sequences} of 200 sequences have non-finite states" in str(info.value)
    assert f"the first from step {states.first_step}" in str(info.value)
    with pytest.raises(NonFiniteStatesError):
        sample_rnn_outputs(model, 50, 30, torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteStatesError):
        heldout_sinkhorn(model, np.zeros((20, 30), dtype=np.int64), torch.Generator().manual_seed(0))


def test_fit_statistics_refuse_outputs_marked_nonfinite():
    hmm = hmmrnn.get_hmm("linear2")
    outputs = np.zeros((3, 5), dtype=np.int64)
    outputs[2, 4] = NONFINITE_OUTPUT
    with pytest.raises(NonFiniteStatesError, match="rnn_outputs: 1 of 3 sequences .* the first from step 5"):
        fit_report(hmm, outputs, np.zeros((3, 5), dtype=np.int64))


def test_cli_evaluate_of_an_exploding_network_fails_the_bar_and_says_why(capsys, exploding):
    code, out, err = cli(capsys, "evaluate", str(exploding), "--n", "200")
    assert code == 1
    assert out == ""  # no fit table, no PASS
    assert err.startswith(f"FAIL: {exploding}: the network's sampled sequences: ")
    assert "have non-finite states" in err and "the first from step" in err


# --------------------------------------------------------------------------- bad input: one message, exit 2


def test_train_into_a_file_or_below_one_fails_at_once(capsys, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    code, out, err = cli(capsys, "train", *TINY_ARGS, "--epochs", "2", "--out", str(path))
    assert code == 2 and "exists and is not a folder" in err and out == ""


def test_train_into_a_used_folder_exit_2_and_overwrite(capsys, tmp_path):
    folder = tmp_path / "run"
    assert cli(capsys, "train", *TINY_ARGS, "--epochs", "2", "--out", str(folder))[0] == 0
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--epochs", "2", "--seed", "5", "--out", str(folder))
    assert code == 2 and "already holds a run" in err
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--epochs", "1", "--resume", "--out", str(folder))
    assert code == 2 and "already trained 2 epochs, more than epochs=1" in err
    assert cli(capsys, "train", *TINY_ARGS, "--epochs", "2", "--seed", "5", "--overwrite", "--out", str(folder))[0] == 0
    assert hmmrnn.load(folder).training["seed"] == 5
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--resume", "--overwrite", "--out", str(folder))
    assert code == 2 and "not allowed with argument" in err


def test_train_init_from_another_target_exit_2(capsys, tmp_path):
    assert cli(capsys, "train", *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path / "a"))[0] == 0
    args = [a if a != "linear2" else "linear3" for a in TINY_ARGS]
    code, _, err = cli(capsys, "train", *args, "--epochs", "1", "--init-from", str(tmp_path / "a"), "--out", str(tmp_path / "b"))
    assert code == 2 and "was trained on the target 'linear2', this run's is 'linear3'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_a_gpu_exit_2(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--hmm", "linear2", "--device", "cuda", "--out", str(tmp_path / "run"))
    assert code == 2 and err.strip() == "error: device 'cuda' requested but CUDA is not available on this machine (use --device cpu or auto)"
    assert not (tmp_path / "run").exists()


def test_train_absurd_size_exit_2(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--hmm", "linear2", "--hidden", "10000000", "--out", str(tmp_path / "run"))
    assert code == 2 and "hidden_size=10000000" in err and "GiB" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed, detail", [("1e23", "expected a non-negative integer, got '1e23'"),
                                          (str(10**23), "expected a seed <= 2**63 - 1")])
def test_unusable_seeds_exit_2(capsys, seed, detail):
    for command in (["evaluate", "linear2"], ["train", "--hmm", "linear2", "--out", "x"], ["calibrate", "linear2", "--out", "x"]):
        code, _, err = cli(capsys, *command, "--seed", seed)
        assert code == 2 and f"argument --seed: {detail}" in err


def test_evaluate_length_1_exit_2(capsys):
    code, _, err = cli(capsys, "evaluate", "linear2", "--length", "1")
    assert code == 2 and "argument --length: expected an integer >= 2 (transitions need pairs of steps), got 1" in err


def test_config_naming_another_target_is_refused(capsys, tmp_path):
    folder = copy_checkpoint("linear2", tmp_path / "ck")
    edit_config(folder, lambda c: c["hmm"].update(name="fully3"))
    code, out, err = cli(capsys, "evaluate", str(folder), "--n", "50")
    assert code == 2 and "named 'fully3' but its matrices are not fully3's" in err and "PASS" not in out


@pytest.mark.parametrize("change, message", [
    (lambda c: c["hmm"].update(transition="abc"), "'hmm.transition' must be an array of numbers"),
    (lambda c: c["hmm"].update(seq_len=True), "'hmm.seq_len' must be a positive integer or null, got True"),
    (lambda c: c["hmm"].update(name=3), "'hmm.name' must be a string"),
])
def test_config_values_of_the_wrong_type_exit_2(capsys, tmp_path, change, message):
    folder = copy_checkpoint("linear2", tmp_path / "ck")
    edit_config(folder, change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hmmrnn.load(folder)
    code, _, err = cli(capsys, "evaluate", str(folder))
    assert code == 2 and message in err


def test_config_json_that_is_a_folder_exit_2(capsys, tmp_path):
    folder = tmp_path / "ck"
    (folder / "config.json").mkdir(parents=True)
    code, _, err = cli(capsys, "evaluate", str(folder))
    assert code == 2 and "config.json is not a file" in err


def test_calibrate_into_its_own_source_is_refused(capsys, tmp_path):
    folder = copy_checkpoint("linear2-paper", tmp_path / "ck")
    before = (folder / "weights.npz").read_bytes()
    code, _, err = cli(capsys, "calibrate", str(folder), "--out", str(folder))
    assert code == 2 and "is the source checkpoint's folder" in err
    assert (folder / "weights.npz").read_bytes() == before


def test_snapshots_of_a_calibration_cycle_end_with_a_message(tmp_path):
    folder = copy_checkpoint("linear2", tmp_path / "ck")
    edit_config(folder, lambda c: c["training"]["calibration"].update(source=str(folder)))
    with pytest.raises(CheckpointError, match="calibration sources lead back to"):
        hmmrnn.load(folder).snapshots()


def test_list_with_a_broken_checkpoint_folder_lists_the_rest(capsys, tmp_path, monkeypatch):
    copy_checkpoint("linear2", tmp_path / "shipped" / "good")
    broken = tmp_path / "shipped" / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    monkeypatch.setattr(ckpt, "SHIPPED_DIR", tmp_path / "shipped")
    code, out, err = cli(capsys, "list")
    assert code == 2
    assert "  broken: cannot be loaded: " in out and "is not valid JSON" in out
    assert "  good: H=150 D=100" in out
    assert "1 shipped checkpoint folder(s) cannot be loaded" in err


# --------------------------------------------------------------------------- two processes, one folder


def test_two_runs_into_one_folder_the_second_fails_naming_the_first(tmp_path):
    folder = tmp_path / "run"
    env = dict(os.environ, HMMRNN_NO_TCMALLOC="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "hmmrnn", "train", *TINY_ARGS, "--val-every", "1000", "--epochs", "1000000", "--out", str(folder)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "resume.npz").exists():  # the first run is training
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert f"is in use by another training run (pid {first.pid} on host " in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()  # as kill -9: the kernel drops the lock
        first.wait()
    assert (folder / LOCK_NAME).exists()  # left by the killed run, but not held
    with RunLock(folder) as lock:
        assert lock.held


def test_kick_neurons_of_an_exploding_network_exit_2_saying_why(capsys, exploding):
    code, out, err = cli(capsys, "kick-neurons", str(exploding))
    assert code == 2 and out == ""
    assert err.startswith("error: the run whose outputs are tracked: ") and "have non-finite states" in err


def test_recorded_run_of_an_exploding_network_marks_its_nonfinite_states(exploding):
    from hmmrnn import regions

    run = regions.recorded_run(hmmrnn.load(exploding).weights, 200, torch.Generator().manual_seed(0), burn_in=0)
    bad = ~np.isfinite(run.logits).all(-1)
    assert bad.any()
    np.testing.assert_array_equal(run.outputs == NONFINITE_OUTPUT, bad)
    np.testing.assert_array_equal(run.outputs[~bad], run.logits[~bad].argmax(-1))
    assert run.nonfinite == NonFiniteStates(1, int(bad.sum()), 1, 200, int(np.flatnonzero(bad)[0]) + 1)
