"""Tests of hmmrnn.train on a tiny configuration (a fraction of a second per run, CPU, no
compilation): seeding, resume after an interruption, the best model really being the best,
snapshots, settings validation and the auxiliary pair-statistics term."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from hmmrnn.checkpoints import load, load_snapshots
from hmmrnn.hmm import get_hmm, one_hot, output_pair_probabilities
from hmmrnn.model import RNNWeights
from hmmrnn.train import TrainConfig, make_dataset, pair_statistics, pair_statistics_kl, train

# lr 0.05 makes the weights (and the validation loss) move visibly within 6 epochs; with
# this seed the minimal validation loss is reached at epoch 5 of 6 (checked in the tests).
TINY = TrainConfig(
    hmm="linear2",
    hidden_size=8,
    input_size=4,
    n_sequences=60,
    batch_size=16,
    seq_len=10,
    epochs=6,
    val_every=1,
    resume_every=1,
    snapshot_every=2,
    lr=0.05,
    seed=0,
    compile=False,
    device="cpu",
)


def tiny(**changes) -> TrainConfig:
    return dataclasses.replace(TINY, **changes)


def npz(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def assert_same_arrays(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def run_outputs(folder):
    config = json.loads((folder / "config.json").read_text())
    return {
        "weights": npz(folder / "weights.npz"),
        "last": npz(folder / "last.npz"),
        "snapshots": npz(folder / "snapshots.npz") if (folder / "snapshots.npz").exists() else None,
        "history": config["history"],
        "results": config["results"],
    }


def assert_same_run(a, b):
    assert_same_arrays(a["weights"], b["weights"])
    assert_same_arrays(a["last"], b["last"])
    assert a["history"] == b["history"]
    assert a["results"] == b["results"]
    if a["snapshots"] is None:
        assert b["snapshots"] is None
    else:
        assert_same_arrays(a["snapshots"], b["snapshots"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of TINY."""
    folder = tmp_path_factory.mktemp("reference")
    checkpoint = train(TINY, folder, progress=False)
    return folder, checkpoint, run_outputs(folder)


# --------------------------------------------------------------------------- outputs of a run


def test_run_writes_a_valid_checkpoint(reference):
    folder, checkpoint, out = reference
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "last.npz", "resume.npz", "snapshots.npz", "weights.npz"]
    loaded = load(folder)
    np.testing.assert_array_equal(loaded.weights.W_rec, checkpoint.weights.W_rec)
    assert loaded.rnn == {"input_size": 4, "hidden_size": 8, "h0": "zeros"}
    assert loaded.hmm.name == "linear2" and loaded.hmm.seq_len == 10
    assert loaded.training["seed"] == 0 and loaded.training["seq_len"] == 10
    assert loaded.training["n_train"] == loaded.training["n_val"] == loaded.training["n_test"] == 20
    assert loaded.training["compiled"] is False
    assert set(loaded.training["versions"]) >= {"torch", "numpy", "geomloss", "python"}
    h = out["history"]
    assert h["epoch"] == [1, 2, 3, 4, 5, 6] and h["val_epoch"] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) and v > 0 for v in h["train_loss"] + h["val_loss"])
    assert h["lr"] == [0.05] * 6
    assert out["results"]["final_epoch"] == 6
    assert out["results"]["final_val_loss"] == h["val_loss"][-1]


def test_same_seed_same_weights_other_seed_other_weights(reference, tmp_path):
    _, _, ref = reference
    train(TINY, tmp_path / "same", progress=False)
    assert_same_run(ref, run_outputs(tmp_path / "same"))
    train(tiny(seed=1), tmp_path / "other", progress=False)
    other = run_outputs(tmp_path / "other")
    assert not np.array_equal(ref["last"]["W_rec"], other["last"]["W_rec"])


def test_best_model_is_the_minimal_validation_loss_not_the_last_epoch(tmp_path):
    folder = tmp_path / "best"
    checkpoint = train(tiny(snapshot_every=1), folder, progress=False)
    out = run_outputs(folder)
    val_epoch, val_loss = out["history"]["val_epoch"], out["history"]["val_loss"]
    best_epoch = out["results"]["best_epoch"]
    # the first epoch reaching the minimum (ties keep the earlier model)
    assert best_epoch == val_epoch[int(np.argmin(val_loss))]
    assert out["results"]["best_val_loss"] == min(val_loss)
    # the case that matters: the minimum is not at the last epoch (true for this seed)
    assert best_epoch < 6 and min(val_loss) < val_loss[-1]
    snaps = load_snapshots(folder / "snapshots.npz")
    np.testing.assert_array_equal(snaps.epochs, np.arange(7))
    index = int(np.flatnonzero(snaps.epochs == best_epoch)[0])
    assert_same_arrays(out["weights"], snaps.weights(index)._asdict())
    assert_same_arrays(out["last"], snaps.weights(6)._asdict())
    assert not np.array_equal(out["weights"]["W_rec"], out["last"]["W_rec"])
    np.testing.assert_array_equal(checkpoint.weights.W_rec, snaps.W_rec[index])


def test_snapshot_epochs(reference, tmp_path):
    _, _, ref = reference
    np.testing.assert_array_equal(ref["snapshots"]["epochs"], [0, 2, 4, 6])
    # snapshot 0 is the initialisation: it differs from every later one
    assert not np.array_equal(ref["snapshots"]["W_rec"][0], ref["snapshots"]["W_rec"][1])
    train(tiny(snapshot_every=1, snapshot_until=3, epochs=5), tmp_path / "until", progress=False)
    np.testing.assert_array_equal(npz(tmp_path / "until" / "snapshots.npz")["epochs"], [0, 1, 2, 3])
    train(tiny(snapshot_every=0, epochs=2), tmp_path / "none", progress=False)
    assert not (tmp_path / "none" / "snapshots.npz").exists()


def test_snapshot_zero_is_the_seeded_initialisation(reference, tmp_path):
    """Epoch-0 snapshot = NoiseRNN initialised from the seed's init generator (independent of data)."""
    _, _, ref = reference
    train(tiny(epochs=1, snapshot_every=1, n_sequences=90), tmp_path / "init", progress=False)
    other = npz(tmp_path / "init" / "snapshots.npz")
    for name in RNNWeights._fields:
        np.testing.assert_array_equal(other[name][0], ref["snapshots"][name][0])


@pytest.mark.parametrize("resume_every, stop_after", [(1, 3), (2, 3)])
def test_interrupted_and_resumed_run_equals_uninterrupted(reference, tmp_path, resume_every, stop_after):
    """Stopped after 3 epochs (the resume file is from epoch 3, or from epoch 2 when it is
    written every 2 epochs, so epoch 3 is redone), then resumed: identical to one run."""
    _, _, ref = reference
    config = tiny(resume_every=resume_every)
    if resume_every != 1:
        train(config, tmp_path / "ref", progress=False)
        ref = run_outputs(tmp_path / "ref")
    folder = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(config, folder, progress=False, stop_after=stop_after)
    assert (folder / "resume.npz").exists() and not (folder / "weights.npz").exists()
    lines: list[str] = []
    train(config, folder, resume=True, progress=False, log=lines.append)
    assert any(line.startswith("resumed") and f"at epoch {stop_after - stop_after % resume_every}" in line for line in lines)
    assert_same_run(ref, run_outputs(folder))


def test_resume_can_extend_the_number_of_epochs(tmp_path):
    train(tiny(epochs=4), tmp_path / "a", progress=False)
    train(tiny(epochs=6), tmp_path / "a", resume=True, progress=False)
    train(tiny(epochs=6), tmp_path / "b", progress=False)
    assert_same_run(run_outputs(tmp_path / "a"), run_outputs(tmp_path / "b"))


def test_resume_without_a_resume_file_starts_from_scratch(reference, tmp_path):
    _, _, ref = reference
    lines: list[str] = []
    train(TINY, tmp_path / "fresh", resume=True, progress=False, log=lines.append)
    assert any("starting from scratch" in line for line in lines)
    assert_same_run(ref, run_outputs(tmp_path / "fresh"))


@pytest.mark.parametrize("change", [{"lr": 0.01}, {"seed": 3}, {"hidden_size": 9}, {"betas": (0.9, 0.99)}])
def test_resume_refuses_changed_settings(tmp_path, change):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TINY, folder, progress=False, stop_after=1)
    key = next(iter(change))
    with pytest.raises(ValueError, match=rf"settings differ.*'{key}'"):
        train(tiny(**change), folder, resume=True, progress=False)


def test_lr_milestones(tmp_path):
    checkpoint = train(tiny(epochs=4, lr_milestones=(3,), lr_gamma=0.1, snapshot_every=0), tmp_path / "lr", progress=False)
    assert checkpoint.history["lr"] == pytest.approx([0.05, 0.05, 0.005, 0.005])


def test_init_from_starts_at_the_given_weights(reference, tmp_path):
    folder, checkpoint, _ = reference
    train(tiny(epochs=1, snapshot_every=1, seed=5, init_from=str(folder)), tmp_path / "init", progress=False)
    snaps = load_snapshots(tmp_path / "init" / "snapshots.npz")
    assert_same_arrays(snaps.weights(0)._asdict(), checkpoint.weights._asdict())
    with pytest.raises(ValueError, match="other sizes"):
        train(tiny(epochs=1, hidden_size=9, init_from=str(folder)), tmp_path / "bad", progress=False)


def test_stats_weight_changes_training(reference, tmp_path):
    _, _, ref = reference
    checkpoint = train(tiny(epochs=2, stats_weight=1.0, snapshot_every=0), tmp_path / "stats", progress=False)
    assert all(math.isfinite(v) for v in checkpoint.history["train_loss"])
    plain = train(tiny(epochs=2, snapshot_every=0), tmp_path / "plain", progress=False)
    assert not np.array_equal(npz(tmp_path / "stats" / "last.npz")["W_rec"], npz(tmp_path / "plain" / "last.npz")["W_rec"])
    # the logged train loss is the Sinkhorn divergence alone, so the plain run matches the reference's first epochs
    assert plain.history["train_loss"] == ref["history"]["train_loss"][:2]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "change, match",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"input_size": -1}, "input_size"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"val_every": 0}, "val_every"),
        ({"resume_every": 0}, "resume_every"),
        ({"n_sequences": 2}, "n_sequences"),
        ({"seq_len": 0}, "seq_len"),
        ({"h0": "ones"}, "h0"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"blur": -0.2}, "blur"),
        ({"tau": float("inf")}, "tau"),
        ({"grad_clip": 0}, "grad_clip"),
        ({"lr_gamma": 0}, "lr_gamma"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"betas": (0.9,)}, "betas"),
        ({"stats_weight": -1.0}, "stats_weight"),
        ({"stats_weight": float("nan")}, "stats_weight"),
        ({"snapshot_every": -1}, "snapshot_every"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_validate_rejects_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        tiny(**change).validate()


def test_validate_accepts_defaults_and_unknown_hmm_raises_key_error():
    assert TrainConfig().validate() is not None
    assert TINY.validate() is TINY
    with pytest.raises(KeyError, match="linear2"):
        tiny(hmm="linear7").validate()


def test_target_uses_seq_len_override():
    assert TrainConfig(hmm="linear3").target().seq_len == 30
    assert TrainConfig(hmm="linear3", seq_len=12).target().seq_len == 12


# --------------------------------------------------------------------------- data and pair statistics


def test_make_dataset_split_and_encoding():
    hmm = get_hmm("cyclic4")
    data = make_dataset(hmm, 31, 7, np.random.default_rng(0))
    again = make_dataset(hmm, 31, 7, np.random.default_rng(0))
    assert data.train.shape == (10, 21) and data.val.shape == (10, 21) and data.test.shape == (11, 21)
    assert data.outputs.shape == (31, 7)
    np.testing.assert_array_equal(data.outputs, again.outputs)
    flat = np.concatenate([data.train.numpy(), data.val.numpy(), data.test.numpy()])
    np.testing.assert_array_equal(flat, one_hot(data.outputs, 3).reshape(31, 21))
    assert data.train.dtype == torch.float32


def test_pair_statistics_exact_on_hand_built_sequences():
    outputs = np.array([[0, 0, 1, 2], [2, 2, 2, 0]])
    stats = pair_statistics(torch.from_numpy(one_hot(outputs, 3))).numpy()
    expected = np.zeros((3, 3))
    for row in outputs:
        for a, b in zip(row[:-1], row[1:]):
            expected[a, b] += 1
    np.testing.assert_allclose(stats, expected / 6, rtol=0, atol=1e-7)
    assert stats.sum() == pytest.approx(1.0)


def test_pair_statistics_of_hmm_samples_converge_to_exact():
    hmm = get_hmm("linear3")
    data = make_dataset(hmm, 3 * 4000, 20, np.random.default_rng(1))
    stats = pair_statistics(data.train.reshape(-1, 20, 3)).double().numpy()
    # 4000 i.i.d. sequences x 19 pairs; entries <= 0.5: SE < sqrt(0.25 / 4000) even with full
    # within-sequence correlation, so 0.04 is a > 5-sigma bound
    np.testing.assert_allclose(stats, output_pair_probabilities(hmm), atol=0.04)


def test_pair_statistics_kl_zero_when_matching_and_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 12, 3, generator=gen, dtype=torch.float64)
    model_pairs = pair_statistics(torch.softmax(logits, dim=-1))
    assert float(pair_statistics_kl(logits, model_pairs)) == pytest.approx(0.0, abs=1e-12)

    other = torch.tensor([[0.5, 0.05, 0.05], [0.05, 0.05, 0.05], [0.05, 0.05, 0.15]], dtype=torch.float64)
    kl = float(pair_statistics_kl(logits, other))
    p, q = other.numpy(), model_pairs.numpy()
    assert kl == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-10)  # KL(data || model)
    assert kl > 0.01

    # the gradient pushes the model's pair statistics towards the data's
    x = logits.clone().requires_grad_(True)
    loss = pair_statistics_kl(x, other)
    loss.backward()
    with torch.no_grad():
        assert float(pair_statistics_kl(x - 0.5 * x.grad, other)) < float(loss)


def test_hmm_validation_floor_equals_batched_geomloss_reference():
    """The floor is the batch-size-weighted geomloss divergence between two HMM samples."""
    from hmmrnn.hmm import sample
    from hmmrnn.sinkhorn import geomloss_divergence
    from hmmrnn.train import hmm_validation_floor

    target = get_hmm("linear3")
    floor = hmm_validation_floor(target, np.random.default_rng(5), seq_len=8, n_val=300, batch_size=128)
    rng = np.random.default_rng(5)
    clouds = [torch.from_numpy(one_hot(sample(target, 300, 8, rng)[1], 3).reshape(300, -1)) for _ in range(2)]
    parts = [(float(geomloss_divergence(clouds[0][i:i + 128], clouds[1][i:i + 128])), min(128, 300 - i))
             for i in range(0, 300, 128)]
    reference = sum(v * n for v, n in parts) / 300
    assert floor == pytest.approx(reference, rel=1e-3)
    assert floor > 0  # two samples of the same law are apart at any finite size


def test_hmm_validation_floor_shrinks_with_the_batch_and_rejects_bad_sizes():
    from hmmrnn.train import hmm_validation_floor

    target = get_hmm("fully3")
    small = hmm_validation_floor(target, np.random.default_rng(0), seq_len=10, n_val=512, batch_size=64)
    large = hmm_validation_floor(target, np.random.default_rng(0), seq_len=10, n_val=512, batch_size=512)
    assert large < small
    with pytest.raises(ValueError, match="batch_size"):
        hmm_validation_floor(target, np.random.default_rng(0), batch_size=0)


def test_log_says_settings_and_compile_decision_then_a_line_per_validation(tmp_path):
    lines: list[str] = []
    train(tiny(epochs=4, val_every=2), tmp_path / "run", progress=False, log=lines.append)
    assert lines[0].startswith("train linear2: H=8 D=4, epochs 1..4, 20 training sequences in batches of 16, cpu")
    assert lines[1] == "torch.compile: no, asked not to (--no-compile)"
    # epoch 1 (the first, to show the time per epoch), then the validations at 2 and 4
    assert [line.split()[1] for line in lines[2:]] == ["1", "2", "4"]
    assert "(validation every 2;" in lines[2] and lines[2].endswith("s/epoch)")
    for line in lines[3:]:
        assert re.fullmatch(r"epoch +\d+  train +[\d.]+  val +[\d.]+  best +[\d.]+ @ \d+  \([\d.]+ s/epoch\)", line), line


def test_log_speaks_at_least_every_quiet_seconds_without_a_bar(tmp_path, monkeypatch):
    import hmmrnn.train as train_module

    monkeypatch.setattr(train_module, "QUIET_SECONDS", 0.0)  # every epoch is "quiet for long enough"
    lines: list[str] = []
    train(tiny(epochs=4, val_every=3), tmp_path / "run", progress=False, log=lines.append)
    assert [line.split()[1] for line in lines[2:]] == ["1", "2", "3", "4"]
    assert [" val " in line for line in lines[2:]] == [False, False, True, True]


def test_compile_reason_names_the_rule():
    from hmmrnn.train import COMPILE_MIN_BATCH, compile_reason

    cpu = torch.device("cpu")
    assert compile_reason(tiny(compile=True), cpu) == (True, "asked for (--compile)")
    small, why = compile_reason(tiny(compile=None, batch_size=COMPILE_MIN_BATCH - 1), cpu)
    assert small is False and f"below {COMPILE_MIN_BATCH}" in why
    big, why = compile_reason(tiny(compile=None, batch_size=COMPILE_MIN_BATCH), cpu)
    assert "C compiler" in why and big is bool(shutil.which("cc") or shutil.which("gcc"))
