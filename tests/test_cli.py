"""Tests of the command line (``python -m hmmrnn``): bad arguments exit with code 2 and name the
argument on stderr; ``list`` shows the six targets. Run as real subprocesses (the way users
call it); a few more argument checks run in-process through ``main`` to keep the suite fast.
The happy path of ``evaluate`` is tested with the metrics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hmmrnn.__main__ import build_parser, main
from hmmrnn.hmm import TARGET_NAMES, get_hmm


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HMMRNN_NO_TCMALLOC="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "hmmrnn", *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize(
    "args, argument, detail",
    [
        (["--hmm", "linear9"], "--hmm", "invalid choice: 'linear9'"),
        (["--hmm", "linear2", "--epochs", "-1"], "--epochs", "expected a positive integer, got -1"),
        (["--hmm", "linear2", "--hidden", "abc"], "--hidden", "expected a positive integer, got 'abc'"),
    ],
)
def test_train_bad_arguments_exit_2_naming_the_argument(tmp_path, args, argument, detail):
    out = tmp_path / "run"
    result = run_cli("train", *args, "--out", str(out))
    assert result.returncode == 2
    assert f"argument {argument}: {detail}" in result.stderr
    assert result.stdout == ""
    assert not out.exists()  # nothing was started


def test_train_setting_rejected_by_config_validation_exits_2(tmp_path):
    # passes argparse (a float) but not TrainConfig.validate
    out = tmp_path / "run"
    result = run_cli("train", "--hmm", "linear2", "--stats-weight", "nan", "--out", str(out))
    assert result.returncode == 2
    assert "stats_weight" in result.stderr
    assert not out.exists()


def test_list_shows_the_six_targets():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in TARGET_NAMES:
        hmm = get_hmm(name)
        assert f"{name}: {hmm.n_states} states, L={hmm.seq_len}" in result.stdout
    assert "shipped checkpoints:" in result.stdout


def test_evaluate_missing_checkpoint_exits_2(tmp_path):
    result = run_cli("evaluate", "no_such_checkpoint", cwd=tmp_path)
    assert result.returncode == 2
    assert "no checkpoint folder 'no_such_checkpoint'" in result.stderr
    assert "shipped checkpoints:" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- in-process argument checks


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--hmm", "linear2"], "the following arguments are required: --out"),
        (["train", "--out", "x"], "the following arguments are required: --hmm"),
        (["train", "--hmm", "linear2", "--out", "x", "--seed", "-3"], "argument --seed: expected a non-negative integer"),
        (["train", "--hmm", "linear2", "--out", "x", "--lr", "0"], "argument --lr: expected a positive number"),
        (["train", "--hmm", "linear2", "--out", "x", "--h0", "ones"], "argument --h0: invalid choice"),
        (["evaluate", "linear2", "--n", "0"], "argument --n: expected a positive integer"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: command"),
    ],
)
def test_parser_errors_in_process(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_parser_defaults_are_the_papers():
    args = build_parser().parse_args(["train", "--hmm", "linear2", "--out", "x"])
    assert (args.hidden, args.input, args.epochs, args.batch, args.n_sequences) == (150, 100, 500, 4096, 30000)
    assert (args.lr, args.beta2, args.blur, args.tau, args.seq_len, args.h0) == (1e-3, 0.9, 0.2, 1.0, None, "zeros")
    assert args.clip is None  # resolved per target: 0.9, or 0.3 for fully3 / cyclic4


def _all_actions(parser, name="hmmrnn"):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _all_actions(sub, f"{name} {sub_name}")
        else:
            yield name, action


def test_every_flag_and_argument_has_help_text():
    import argparse

    missing = [(name, action.option_strings or action.dest) for name, action in _all_actions(build_parser())
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_train_help_describes_the_flags():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for flag, words in [("--epochs", "epochs to train"), ("--seed", "seed of the data"), ("--batch", "sequences per batch"),
                        ("--lr", "learning rate"), ("--val-every", "validate")]:
        assert flag in result.stdout and words in result.stdout, flag


def test_train_talks_when_its_output_is_a_file(tmp_path):
    """Output to a pipe (not a terminal): the settings, whether it compiles and why, a line per validation."""
    result = run_cli("train", "--hmm", "linear2", "--hidden", "8", "--input", "4", "--epochs", "3", "--n-sequences", "60",
                     "--batch", "20", "--seq-len", "10", "--val-every", "2", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("train linear2: H=8 D=4, epochs 1..3, 20 training sequences in batches of 20")
    assert lines[1] == ("torch.compile: no, batches of 20 sequences are below 1024, where compiling would not pay off "
                        "(--compile forces it)")
    assert [line.split()[1] for line in lines[2:5]] == ["1", "2", "3"]  # the first epoch, then validations
    assert all(line.endswith("s/epoch)") for line in lines[2:5])
    assert lines[5].startswith('{"out": ')
