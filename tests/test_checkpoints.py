"""Tests of hmmrnn.checkpoints: round trip, atomic writes, and a clear CheckpointError for
every way a checkpoint folder can be broken."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from hmmrnn import checkpoints as ckpt
from hmmrnn.checkpoints import (
    Checkpoint,
    CheckpointError,
    atomic_write_bytes,
    load,
    load_snapshots,
    save,
    save_snapshots,
    shipped_names,
)
from hmmrnn.hmm import get_hmm
from hmmrnn.model import NoiseRNN, RNNWeights

H, D, K = 6, 4, 3


def make_weights(seed=0, h=H, d=D, k=K) -> RNNWeights:
    rng = np.random.default_rng(seed)
    return RNNWeights(
        rng.standard_normal((h, d)).astype(np.float32),
        rng.standard_normal((h, h)).astype(np.float32),
        rng.standard_normal((k, h)).astype(np.float32),
    )


def make_checkpoint(seed=0) -> Checkpoint:
    return Checkpoint(
        weights=make_weights(seed),
        hmm=get_hmm("linear3"),
        rnn={"input_size": D, "hidden_size": H, "h0": "normal"},
        training={"seed": seed, "lr": 1e-3, "betas": [0.9, 0.9], "epochs": 5},
        results={"best_epoch": 3, "best_val_loss": 4.25, "final_val_loss": 4.5},
        history={"epoch": [1, 2, 3], "train_loss": [5.0, 4.5, 4.0], "val_epoch": [3], "val_loss": [4.25]},
    )


@pytest.fixture
def saved(tmp_path) -> Path:
    folder = tmp_path / "ck"
    save(make_checkpoint(), folder)
    return folder


def write_npz(path: Path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def edit_config(folder: Path, fn) -> None:
    config = json.loads((folder / "config.json").read_text())
    fn(config)
    (folder / "config.json").write_text(json.dumps(config))


# --------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_exact(saved):
    original = make_checkpoint()
    loaded = load(saved)
    for name in RNNWeights._fields:
        a, b = getattr(original.weights, name), getattr(loaded.weights, name)
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert a.tobytes() == b.tobytes()  # bit-exact, not just close
    assert loaded.rnn == original.rnn
    assert loaded.training == original.training
    assert loaded.results == original.results
    assert loaded.history == original.history
    assert loaded.path == saved
    assert loaded.name == "linear3" and loaded.hmm.seq_len == 30
    for attr in ("start", "transition", "emission"):
        np.testing.assert_array_equal(getattr(loaded.hmm, attr), getattr(original.hmm, attr))
    config = json.loads((saved / "config.json").read_text())
    assert set(config) == {"hmm", "rnn", "training", "results", "history"}
    # the model built from the checkpoint holds the weights and its h0 mode
    model = loaded.model()
    assert isinstance(model, NoiseRNN) and model.h0_mode == "normal"
    np.testing.assert_array_equal(model.weights().W_rec, original.weights.W_rec)
    assert loaded.snapshots() is None


def test_weights_file_is_plain_npz_readable_with_numpy_alone(saved):
    with np.load(saved / "weights.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["W_in", "W_out", "W_rec"]
        assert data["W_rec"].shape == (H, H) and data["W_rec"].dtype == np.float32


def test_save_converts_numpy_values_and_float64_weights(tmp_path):
    c = make_checkpoint()
    c.weights = RNNWeights(*(w.astype(np.float64) for w in c.weights))
    c.results = {"best_epoch": np.int64(4), "best_val_loss": np.float32(1.5), "curve": np.arange(3)}
    save(c, tmp_path / "x")
    loaded = load(tmp_path / "x")
    assert loaded.weights.W_in.dtype == np.float32
    assert loaded.results == {"best_epoch": 4, "best_val_loss": 1.5, "curve": [0, 1, 2]}


def test_save_refuses_inconsistent_checkpoint(tmp_path):
    c = make_checkpoint()
    c.rnn = {"input_size": D + 1, "hidden_size": H, "h0": "zeros"}
    with pytest.raises(CheckpointError, match="W_in has shape"):
        save(c, tmp_path / "x")
    assert not (tmp_path / "x" / "weights.npz").exists()


def test_files_written_atomically_and_readable(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["config.json", "weights.npz"]  # no temporary files left behind
    for p in saved.iterdir():
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & stat.S_IRUSR and mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_atomic_write_bytes_replaces_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.bin"]

    # a failure during the write leaves the old file intact and no temporary file behind
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"third")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.bin"]


# --------------------------------------------------------------------------- load errors


def test_missing_folder_lists_shipped_names(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / "nope")
    message = str(info.value)
    assert "nope" in message and "shipped checkpoints" in message
    for name in shipped_names():
        assert name in message
    with pytest.raises(CheckpointError, match="no checkpoint folder 'not-a-shipped-name'"):
        load("not-a-shipped-name")


def test_missing_weights(saved):
    (saved / "weights.npz").unlink()
    with pytest.raises(CheckpointError, match=r"weights\.npz is missing"):
        load(saved)


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load(saved)


def test_truncated_weights(saved):
    data = (saved / "weights.npz").read_bytes()
    (saved / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"weights\.npz is corrupt"):
        load(saved)


def test_garbage_weights(saved):
    (saved / "weights.npz").write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(CheckpointError, match=r"weights\.npz is corrupt"):
        load(saved)


def test_empty_weights_file(saved):
    (saved / "weights.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"weights\.npz is corrupt"):
        load(saved)


def test_object_array_is_refused_without_unpickling(saved):
    w = make_weights()
    obj = np.empty((H, H), dtype=object)
    obj[:] = 1.0
    write_npz(saved / "weights.npz", W_in=w.W_in, W_rec=obj, W_out=w.W_out)
    with pytest.raises(CheckpointError, match=r"corrupt.*(pickle|[Oo]bject)"):
        load(saved)


def test_float64_weights_are_refused(saved):
    w = make_weights()
    write_npz(saved / "weights.npz", W_in=w.W_in, W_rec=w.W_rec.astype(np.float64), W_out=w.W_out)
    with pytest.raises(CheckpointError, match="W_rec has dtype float64, expected float32"):
        load(saved)


def test_wrong_shape_vs_config(saved):
    w = make_weights(h=H + 1)
    write_npz(saved / "weights.npz", **w._asdict())
    with pytest.raises(CheckpointError, match=r"W_in has shape \(7, 4\) but the config says \(6, 4\)"):
        load(saved)
    edit_config(saved, lambda c: c["rnn"].update(hidden_size=H + 1, input_size=D + 2))
    with pytest.raises(CheckpointError, match=r"W_in has shape \(7, 4\) but the config says \(7, 6\)"):
        load(saved)


def test_wrong_number_of_outputs_vs_hmm(saved):
    w = make_weights(k=2)
    write_npz(saved / "weights.npz", **w._asdict())
    with pytest.raises(CheckpointError, match=r"W_out has shape \(2, 6\)"):
        load(saved)


def test_non_2d_weights(saved):
    w = make_weights()
    write_npz(saved / "weights.npz", W_in=w.W_in, W_rec=w.W_rec[None], W_out=w.W_out)
    with pytest.raises(CheckpointError, match="W_rec must be 2-D"):
        load(saved)


def test_missing_or_extra_arrays(saved):
    w = make_weights()
    write_npz(saved / "weights.npz", W_in=w.W_in, W_rec=w.W_rec)
    with pytest.raises(CheckpointError, match=r"must hold exactly.*found \['W_in', 'W_rec'\]"):
        load(saved)
    write_npz(saved / "weights.npz", extra=w.W_in, **w._asdict())
    with pytest.raises(CheckpointError, match="must hold exactly"):
        load(saved)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights(saved, bad):
    w = make_weights()
    w_out = w.W_out.copy()
    w_out[1, 2] = bad
    write_npz(saved / "weights.npz", W_in=w.W_in, W_rec=w.W_rec, W_out=w_out)
    with pytest.raises(CheckpointError, match="W_out has 1 non-finite entries"):
        load(saved)


@pytest.mark.parametrize("section", ["hmm", "rnn", "training", "results", "history"])
def test_missing_config_section(saved, section):
    edit_config(saved, lambda c: c.pop(section))
    with pytest.raises(CheckpointError, match=rf"lacks the section\(s\) \['{section}'\]"):
        load(saved)


@pytest.mark.parametrize("section, value", [("rnn", 5), ("hmm", [1, 2]), ("results", [1]), ("training", "x"), ("history", None)])
def test_config_section_not_an_object(saved, section, value):
    edit_config(saved, lambda c: c.update({section: value}))
    with pytest.raises(CheckpointError, match=rf"section\(s\) \['{section}'\] must be JSON objects"):
        load(saved)


def test_missing_rnn_key(saved):
    edit_config(saved, lambda c: c["rnn"].pop("h0"))
    with pytest.raises(CheckpointError, match="'rnn' lacks 'h0'"):
        load(saved)


def test_bad_h0_in_config(saved):
    edit_config(saved, lambda c: c["rnn"].update(h0="ones"))
    with pytest.raises(CheckpointError, match="rnn.h0 must be one of"):
        load(saved)


def test_invalid_json(saved):
    (saved / "config.json").write_text('{"hmm": [1, 2,')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(saved)
    (saved / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(saved)


def test_config_not_an_object(saved):
    (saved / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load(saved)


def test_invalid_hmm_rows_in_config(saved):
    def break_row(config):
        config["hmm"]["transition"][1] = [0.5, 0.2, 0.2]

    edit_config(saved, break_row)
    with pytest.raises(CheckpointError, match=r"invalid 'hmm' section: transition row 1 sums to 0\.9"):
        load(saved)


def test_hmm_section_lacking_matrices(saved):
    edit_config(saved, lambda c: c["hmm"].pop("emission"))
    with pytest.raises(CheckpointError, match="invalid 'hmm' section.*emission"):
        load(saved)


def test_inconsistent_history(saved):
    edit_config(saved, lambda c: c["history"].update(val_loss=[1.0, 2.0]))
    with pytest.raises(CheckpointError, match="'val_epoch' has 1 entries but 'val_loss' has 2"):
        load(saved)


def test_errors_are_value_errors():
    assert issubclass(CheckpointError, ValueError)


# --------------------------------------------------------------------------- snapshots


def test_snapshots_round_trip(saved):
    weights = [make_weights(seed) for seed in range(3)]
    save_snapshots(saved / "snapshots.npz", [0, 10, 20], weights)
    snaps = load_snapshots(saved / "snapshots.npz", like=weights[0])
    assert len(snaps) == 3
    np.testing.assert_array_equal(snaps.epochs, [0, 10, 20])
    assert snaps.epochs.dtype == np.int64
    assert snaps.W_rec.shape == (3, H, H) and snaps.W_in.dtype == np.float32
    for i, w in enumerate(weights):
        for name in RNNWeights._fields:
            np.testing.assert_array_equal(getattr(snaps.weights(i), name), getattr(w, name))
    # reachable from the checkpoint too
    from_ckpt = load(saved).snapshots()
    assert from_ckpt is not None and len(from_ckpt) == 3
    np.testing.assert_array_equal(from_ckpt.W_out[2], weights[2].W_out)
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "snapshots.npz", "weights.npz"]


def test_save_snapshots_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match="2 epochs but 1 weight sets"):
        save_snapshots(tmp_path / "s.npz", [0, 1], [make_weights()])


def test_snapshots_shape_checks(tmp_path):
    path = tmp_path / "s.npz"
    weights = [make_weights(seed) for seed in range(2)]
    save_snapshots(path, [0, 5], weights)
    with pytest.raises(CheckpointError, match=r"W_in snapshots have shape \(6, 4\), the checkpoint \(6, 5\)"):
        load_snapshots(path, like=make_weights(d=D + 1))
    # S disagreeing between arrays
    arrays = {"epochs": np.array([0, 5, 10]), **{n: np.stack([getattr(w, n) for w in weights]) for n in RNNWeights._fields}}
    write_npz(path, **arrays)
    with pytest.raises(CheckpointError, match=r"W_in must be \(S=3"):
        load_snapshots(path)
    # not 3-D
    write_npz(path, epochs=np.array([0]), W_in=weights[0].W_in, W_rec=weights[0].W_rec[None], W_out=weights[0].W_out[None])
    with pytest.raises(CheckpointError, match=r"W_in must be \(S=1"):
        load_snapshots(path)
    # missing array
    write_npz(path, epochs=np.array([0]), W_in=weights[0].W_in[None])
    with pytest.raises(CheckpointError, match=r"lacks \['W_rec', 'W_out'\]"):
        load_snapshots(path)
    # non-finite
    bad = np.stack([w.W_rec for w in weights])
    bad[1, 0, 0] = np.nan
    write_npz(path, epochs=np.array([0, 5]), W_in=np.stack([w.W_in for w in weights]), W_rec=bad,
              W_out=np.stack([w.W_out for w in weights]))
    with pytest.raises(CheckpointError, match="W_rec has non-finite entries"):
        load_snapshots(path)
    # missing / corrupt file
    with pytest.raises(CheckpointError, match="missing"):
        load_snapshots(tmp_path / "none.npz")
    path.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_snapshots(path)


def test_shipped_checkpoints_load_and_are_consistent():
    """Every shipped checkpoint loads, validates, and its best epoch is one of its val epochs."""
    for name in shipped_names():
        c = load(name)
        assert c.path == ckpt.SHIPPED_DIR / name
        assert c.weights.W_rec.shape == (c.rnn["hidden_size"],) * 2
        if c.history.get("val_epoch"):
            assert c.results["best_epoch"] in c.history["val_epoch"]
            best = c.history["val_loss"][c.history["val_epoch"].index(c.results["best_epoch"])]
            assert best == pytest.approx(c.results["best_val_loss"])
            assert best == pytest.approx(min(c.history["val_loss"]))
