"""The A/B summaries of two training loops (hmmrnn.loops) on hand-made curves."""

import json

import numpy as np
import pytest

from hmmrnn import loops
from hmmrnn.checkpoints import CheckpointError


def curve(losses, start=5, step=5, label="run"):
    epochs = np.arange(start, start + step * len(losses), step)
    return loops.LossCurve(label, epochs, np.asarray(losses, dtype=float))


def test_summary_of_a_hand_curve():
    # plateau 10, exit below 9 at epoch 20, best 3 at epoch 30; later epochs ignored
    c = curve([10.0, 9.5, 9.2, 8.0, 5.0, 3.0, 4.0, 1.0])
    s = loops.summarise(c, upto=35, exit_fraction=0.9, at=(10, 30, 33))
    assert s.first == 10.0 and s.best == 3.0 and s.best_epoch == 30
    assert s.exit_epoch == 20
    assert s.at == {10: 9.5, 30: 3.0}  # 33 was not validated


def test_no_exit_is_none_and_exit_is_strict():
    s = loops.summarise(curve([10.0, 9.0, 9.0]), upto=15, exit_fraction=0.9)
    assert s.exit_epoch is None  # 9.0 is not < 0.9 * 10


def test_summary_refuses_a_run_not_that_far():
    with pytest.raises(ValueError, match="only up to epoch 15, not 150"):
        loops.summarise(curve([10.0, 9.0, 8.0]), upto=150)


def test_curve_refuses_non_finite_and_unsorted():
    with pytest.raises(ValueError, match="not finite at epoch 10"):
        curve([10.0, float("nan"), 8.0])
    with pytest.raises(ValueError, match="not increasing"):
        loops.LossCurve("x", np.array([5, 5]), np.array([1.0, 2.0]))


def test_agreement_rule_widens_the_seed_range_by_its_width():
    ref = [loops.summarise(curve([10.0, b], label=f"r{i}"), upto=10) for i, b in enumerate([2.0, 2.5, 3.0])]
    inside = loops.summarise(curve([10.0, 3.9], label="a"), upto=10)
    outside = loops.summarise(curve([10.0, 4.1], label="b"), upto=10)
    verdict = loops.loops_agree(ref, [inside, outside])
    assert (verdict.low, verdict.high) == pytest.approx((1.0, 4.0))
    assert verdict.inside == {"a": True, "b": False} and not verdict.agree
    assert loops.loops_agree(ref, [inside]).agree
    with pytest.raises(ValueError, match="at least 2 reference seeds"):
        loops.loops_agree(ref[:1], [inside])


def test_loaders_read_both_history_formats(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "history.json").write_text(json.dumps(
        {"val_epoch": [5, 10], "val_loss_weighted": [3.0, 2.0], "val_loss_unweighted": [3.1, 2.1], "seconds": 12.5}))
    a = loops.load_authors_history(tmp_path / "a" / "history.json", label="authors")
    assert a.label == "authors" and a.val_loss.tolist() == [3.0, 2.0] and a.seconds == 12.5
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps({"history": {"val_epoch": [5, 10], "val_loss": [4.0, 1.0]}}))
    r = loops.load_run_history(tmp_path / "r")
    assert r.epochs.tolist() == [5, 10] and r.val_loss.tolist() == [4.0, 1.0]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        loops.load_authors_history(tmp_path / "bad.json")
    with pytest.raises(CheckpointError, match="not a history of scripts/authors_loop.py"):
        loops.load_authors_history(tmp_path / "r" / "config.json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        loops.load_run_history(tmp_path / "missing")
