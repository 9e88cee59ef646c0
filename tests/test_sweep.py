"""Tests of the sweep engine (hmmrnn.sweep) and the seed-search rule (hmmrnn.search).

The rule is tested on hand-made histories (exact epochs and verdicts) and as a real
``train`` check; the engine runs tiny sweeps (|h| = 8, d = 4, 30 sequences of 10 steps,
3 epochs) on a two-worker ``LocalCluster``: the table, a restart that skips finished runs
and resumes one interrupted mid-way (its weights equal an uninterrupted run's), and a
search that stops at its K-th success."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hmmrnn import sweep
from hmmrnn.__main__ import main
from hmmrnn.checkpoints import load
from hmmrnn.search import BifurcationRule, plateau_window, training_bifurcation
from hmmrnn.train import CheckResult, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"n_sequences": 30, "batch_size": 16, "seq_len": 10, "epochs": 3, "val_every": 1, "resume_every": 1,
         "lr": 0.05, "compile": False, "device": "cpu"}
STOP = {"early": [0, 1], "final_count": 1, "n_traj": 2, "n_steps": 50, "burn_in": 10}
EVALUATE = {"n": 50, "length": 10}
TINY = TrainConfig(hmm="linear2", hidden_size=8, input_size=4, **{k: v for k, v in TRAIN.items()})


def tiny_spec(out: Path, **sections) -> dict:
    return {"out": str(out), "train": dict(TRAIN), "stop": dict(STOP), "evaluate": dict(EVALUATE), **sections}


def npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------- the rule

# a plateau at 0.7 from epoch 5 to 55, then 0.08 from epoch 60 (validation every 5 epochs)
EPOCHS = np.arange(5, 105, 5)
DROP = np.where(EPOCHS < 60, 0.7, 0.08)


def test_training_bifurcation_on_a_hand_made_history():
    b = training_bifurcation(EPOCHS, DROP, early=(10, 30), final_count=5)
    # early level 0.7, final 0.08, midpoint 0.39: first crossed at epoch 60
    assert b == (True, 60.0, 0.7, 0.08, 10.0, False)
    flat = training_bifurcation(EPOCHS, np.full(EPOCHS.shape, 0.7), early=(10, 30), final_count=5)
    assert not flat.found and math.isnan(flat.epoch) and flat.early_level == 0.7 == flat.final_level
    # a drop to 0.4 is not below half the plateau (0.35): not a bifurcation
    assert not training_bifurcation(EPOCHS, np.where(EPOCHS < 60, 0.7, 0.4), early=(10, 30), final_count=5).found
    # undecided while fewer than final_count checks lie after the early window (35, 40, 45, 50)
    undecided = training_bifurcation(EPOCHS[:10], DROP[:10], early=(10, 30), final_count=5)
    assert not undecided.found and math.isnan(undecided.epoch) and math.isnan(undecided.final_level)
    assert undecided.early_level == 0.7  # the plateau is measured already
    # a diverged network (NaN rates at the end) is undecided, never a bifurcation; its plateau is kept
    diverged = training_bifurcation(EPOCHS, np.where(EPOCHS < 80, 0.7, np.nan), early=(10, 30), final_count=5)
    assert not diverged.found and diverged.early_level == 0.7 and math.isnan(diverged.final_level)



# the history of grid run linear3-h50-d100-s1 (10 trajectories x 500 steps per check):
# flickering at 0.49, silent (no switch: 1/500) at epochs 15-25, flickering again, silent at
# 50-60, then the HMM's slow switching from epoch 70
SILENT = 1 / 500
GRID_EPOCHS = np.arange(5, 105, 5)
GRID_RATES = np.array([0.495, 0.493, SILENT, SILENT, SILENT, 0.325, 0.295, 0.223, 0.1, SILENT, 0.03, SILENT, 0.04,
                       0.063, 0.07, 0.083, 0.08, 0.075, 0.07, 0.075])


def test_silent_checks_are_left_out_of_the_rule():
    # kept, the silent checks make the plateau 0.002, and no drop below it is possible
    assert not training_bifurcation(GRID_EPOCHS, GRID_RATES).found
    # left out: plateau = median(0.493, 0.325) = 0.409 (epochs 10 and 30), final = median of the
    # last 5 = 0.075, midpoint 0.242: first crossed at epoch 40 (0.223)
    b = training_bifurcation(GRID_EPOCHS, GRID_RATES, silent_rate=SILENT)
    assert b.found and b.epoch == 40.0 and b.early_level == pytest.approx(0.409) and b.final_level == 0.075
    assert BifurcationRule(n_steps=500).bifurcation(GRID_EPOCHS, GRID_RATES) == b
    # a run that never flickered has no plateau: undecided
    never = np.full(GRID_EPOCHS.shape, SILENT)
    quiet = training_bifurcation(GRID_EPOCHS, never, silent_rate=SILENT)
    assert not quiet.found and math.isnan(quiet.early_level) and math.isnan(quiet.plateau_from) and not quiet.plateau_moved
    # a run that first flickers at epoch 95: its plateau window (95-115) is not filled yet
    late = training_bifurcation(GRID_EPOCHS, np.where(GRID_EPOCHS < 95, SILENT, 0.03), silent_rate=SILENT)
    assert not late.found and late.early_level == 0.03 and late.plateau_from == 95.0 and math.isnan(late.final_level)
    assert late.plateau_moved and not b.plateau_moved
    # a slightly higher rate (one switch in 5,000 steps) is a measurement, not silence
    assert training_bifurcation(GRID_EPOCHS, GRID_RATES + 1e-4, silent_rate=SILENT).early_level == pytest.approx(0.0021)
    with pytest.raises(ValueError, match="silent_rate"):
        training_bifurcation(GRID_EPOCHS, GRID_RATES, silent_rate=-1.0)


# the history of grid run linear3-h150-d1-s0 to epoch 200: one silent check, the driven runs
# diverge at every check of epochs 10-55, silent at 60-70, flickering at 0.16-0.24 over
# epochs 75-95, then the HMM's slow switching (~0.06-0.1) from epoch 100
D1_EPOCHS = np.arange(5, 205, 5)
D1_RATES = np.array([SILENT, *[np.nan] * 10, SILENT, SILENT, SILENT, 0.202, 0.238, 0.179, 0.243, 0.163, 0.098, 0.109,
                     0.079, 0.076, 0.074, 0.080, 0.069, 0.066, 0.069, 0.068, 0.070, 0.067, 0.069, 0.064, 0.062, 0.066,
                     0.064, 0.061, 0.063, 0.059, 0.063])


def test_a_plateau_after_a_silent_or_diverged_early_window():
    rule = BifurcationRule(n_steps=500)
    # no check of epochs 10-30 flickers: the plateau window moves to the first flickering check (75-95)
    assert plateau_window(D1_EPOCHS, np.where(D1_RATES <= SILENT, np.nan, D1_RATES), (10, 30)) == (75.0, 95.0)
    b = rule.bifurcation(D1_EPOCHS, D1_RATES)
    # plateau = median(0.202, 0.238, 0.179, 0.243, 0.163) = 0.202; final = median of the last 5
    # (0.064, 0.061, 0.063, 0.059, 0.063) = 0.063; midpoint 0.1325: first crossed after 95 at 100
    assert b.found and b.plateau_from == 75.0 and b.plateau_moved and b.early_level == pytest.approx(0.202)
    assert b.final_level == pytest.approx(0.063) and b.epoch == 100.0
    # the same verdict as the fixed rule given the moved window
    fixed = training_bifurcation(D1_EPOCHS, np.where(D1_RATES <= SILENT, np.nan, D1_RATES), early=(75, 95))
    assert fixed == b._replace(plateau_moved=False)  # that rule's own window: not moved
    # one flickering check inside epochs 10-30 keeps the fixed window (its plateau, however short)
    one = D1_RATES.copy()
    one[3] = 0.5  # epoch 20
    kept = rule.bifurcation(D1_EPOCHS, one)
    assert kept.plateau_from == 10.0 and not kept.plateau_moved and kept.early_level == 0.5 and kept.found and kept.epoch == 75.0  # 0.202 < (0.5 + 0.063) / 2
    # before the moved window is filled and followed by final_count checks, undecided
    assert not rule.bifurcation(D1_EPOCHS[:23], D1_RATES[:23]).found  # 4 checks after epoch 95
    assert rule.bifurcation(D1_EPOCHS[:24], D1_RATES[:24]).found


def test_a_finished_row_takes_the_verdict_of_todays_rule(tmp_path):
    """The table re-derives the rule's columns from the recorded checks (config.json history)."""
    folder = tmp_path / "linear3-h50-d100-s1"
    folder.mkdir()
    rule = BifurcationRule(n_steps=500).as_dict()
    stale = {"name": folder.name, "search": None, "bifurcated": False, "bifurcation_epoch": None, "rate_early": 0.002,
             "rate_final": 0.075, "best_val_loss": 4.0, "stop_reason": "completed"}
    result = {"name": folder.name, "settings": {"rule": rule}, "row": stale}
    (folder / "config.json").write_text(json.dumps({"history": {"check_epoch": GRID_EPOCHS.tolist(),
                                                                "check_rate": GRID_RATES.tolist()}}))
    row = sweep.current_row(folder, result)
    assert row["bifurcated"] is True and row["bifurcation_epoch"] == 40.0 and row["rate_early"] == pytest.approx(0.409)
    assert row["best_val_loss"] == 4.0 and row["search_success"] is None  # the rest is the stored row
    assert result["row"] is stale and stale["bifurcated"] is False  # not changed in place
    # a search try's success needs the rule's bifurcation and a secondary drop of its validation loss
    try_result = {**result, "row": {**stale, "search": "linear3-h50-d100"}}
    assert sweep.current_row(folder, try_result)["search_success"] is False  # no validation curve recorded: no drop
    val_epoch = list(range(5, 505, 5))  # 100 points; 12, 11, 10.5 (the initial fall), 10 to epoch 200, then 8
    val_loss = [12.0, 11.0, 10.5] + [10.0] * 37 + [8.0] * 60
    for loss, drop, success in ((val_loss, 205, True), ([12.0, 11.0, 10.5] + [10.0] * 97, None, False)):
        (folder / "config.json").write_text(json.dumps({"history": {"check_epoch": GRID_EPOCHS.tolist(), "check_rate": GRID_RATES.tolist(),
                                                                    "val_epoch": val_epoch, "val_loss": loss}}))
        tried = sweep.current_row(folder, try_result)
        # running median of 5 points: first below the midpoint 9 of plateau 10 and final 8 at epoch 205
        assert (tried["bifurcated"], tried["loss_drop_epoch"], tried["search_success"]) == (True, drop, success)
    assert sweep.current_row(folder, result)["loss_drop_epoch"] is None and sweep.current_row(folder, result)["search_success"] is None
    # a validation loss that is not finite is named, not read as a curve
    (folder / "config.json").write_text(json.dumps({"history": {"check_epoch": GRID_EPOCHS.tolist(), "check_rate": GRID_RATES.tolist(),
                                                                "val_epoch": val_epoch, "val_loss": val_loss[:50] + [float("nan")] + val_loss[51:]}}))
    with pytest.raises(ValueError, match=r"linear3-h50-d100-s1: the validation loss is not finite at epoch\(s\) \[255\]"):
        sweep.current_row(folder, try_result)
    # ... but a run that is no search try does not read its loss curve
    assert sweep.current_row(folder, result)["loss_drop_epoch"] is None
    # a run that diverged has no checkpoint: its stored row stands
    diverged = {**stale, "stop_reason": "non-finite loss"}
    assert sweep.current_row(folder, {**result, "row": diverged}) == diverged


def test_the_loss_drop_skips_the_first_50_epochs_whatever_val_every():
    # a fall from 12 to 10 over epochs 1-40, then flat: no secondary drop ...
    fall = {e: 12.0 - 2.0 * min(e, 40) / 40 for e in range(1, 501)}
    assert sweep._loss_drop_epoch({"val_epoch": list(fall), "val_loss": list(fall.values())}) is None
    every5 = [e for e in fall if e % 5 == 0]
    assert sweep._loss_drop_epoch({"val_epoch": every5, "val_loss": [fall[e] for e in every5]}) is None
    # ... which a skip of 10 points on the per-epoch curve would take for one (the plateau then is 11.5)
    from hmmrnn.metrics import secondary_drop_epoch
    assert secondary_drop_epoch(np.array(list(fall)), np.array(list(fall.values())), skip=10) is not None
    # a real drop after the skip is dated at either sampling: 10 to epoch 200, 8 after
    dropped = {e: (v if e <= 200 else 8.0) for e, v in fall.items()}
    assert sweep._loss_drop_epoch({"val_epoch": list(dropped), "val_loss": list(dropped.values())}) == 201
    assert sweep._loss_drop_epoch({"val_epoch": every5, "val_loss": [dropped[e] for e in every5]}) == 205
    assert sweep._loss_drop_epoch({"val_epoch": [5], "val_loss": [9.0]}) is None
    with pytest.raises(ValueError, match="2 validation epochs but 1 validation losses"):
        sweep._loss_drop_epoch({"val_epoch": [5, 10], "val_loss": [9.0]})

def test_rule_stops_a_run_only_without_a_bifurcation_by_epoch_e():
    rule = BifurcationRule(no_bifurcation_by=60, early=(10, 30), final_count=5).validate()
    flat = np.full(EPOCHS.shape, 0.7)
    upto = lambda e: EPOCHS <= e  # noqa: E731
    assert rule.decide(EPOCHS[upto(55)], flat[upto(55)])[1] is None  # before E: go on
    assert rule.decide(EPOCHS[upto(60)], flat[upto(60)])[1] == "no bifurcation by epoch 60"
    status, stop = rule.decide(EPOCHS[upto(100)], DROP[upto(100)])
    assert status.found and stop is None
    # at epoch 60 itself the drop is one check old: the final level (median of the last 5) is
    # still the plateau, so the run is stopped; one check later than E it would have been found
    assert rule.decide(EPOCHS[upto(60)], DROP[upto(60)])[1] == "no bifurcation by epoch 60"
    assert rule.decide(EPOCHS[upto(85)], DROP[upto(85)])[0].found
    # found at an earlier check, the rate back up now: not stopped
    back_up = np.where(EPOCHS < 80, DROP, 0.7)
    assert rule.decide(EPOCHS, back_up, found_before=True)[1] is None
    assert BifurcationRule().decide(EPOCHS, flat)[1] is None  # no E: only watches


@pytest.mark.parametrize("change, match", [
    ({"no_bifurcation_by": 30}, "after the early window"),
    ({"drop": 1.0}, "drop"),
    ({"final_count": 0}, "final_count"),
    ({"early": (30, 10)}, "early"),
])
def test_rule_rejects_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        BifurcationRule(**change).validate()
    with pytest.raises(ValueError, match="unknown stopping-rule settings"):
        BifurcationRule.from_dict({"no_bifurcation": 100})


def test_train_check_stops_a_run_and_a_resumed_stopped_run_trains_no_further(tmp_path):
    def check(epoch, weights, history):
        return CheckResult({"norm": float(np.abs(weights.W_rec).sum())}, "enough" if epoch == 2 else None)

    first = train(TINY, tmp_path / "a", check=check)
    assert first.results["stop_reason"] == "enough" and first.results["final_epoch"] == 2
    assert first.history["check_epoch"] == [1, 2] and len(first.history["check_norm"]) == 2
    assert first.history["epoch"] == [1, 2]
    again = train(TINY, tmp_path / "a", resume=True, check=check)
    assert again.history["epoch"] == [1, 2] and again.results["stop_reason"] == "enough"
    assert_weights_equal(tmp_path / "a", first)


def assert_weights_equal(folder: Path, checkpoint) -> None:
    for name, array in npz(folder / "weights.npz").items():
        np.testing.assert_array_equal(array, getattr(checkpoint.weights, name))


def test_bifurcation_rule_as_a_check_records_rates_and_leaves_training_unchanged(tmp_path):
    rule = BifurcationRule.from_dict(STOP)
    watched = train(TINY, tmp_path / "watched", check=rule)
    plain = train(TINY, tmp_path / "plain")
    for name in ("W_in", "W_rec", "W_out"):
        np.testing.assert_array_equal(getattr(watched.weights, name), getattr(plain.weights, name))
    assert watched.history["check_epoch"] == [1, 2, 3]
    last = npz(tmp_path / "watched" / "last.npz")  # the final epoch's weights: its check's rate
    from hmmrnn.model import RNNWeights

    assert watched.history["check_rate"][-1] == rule.transition_rate(RNNWeights(last["W_in"], last["W_rec"], last["W_out"]))
    assert all(0 < r <= 1 for r in watched.history["check_rate"])
    assert "stop_reason" not in watched.results


# --------------------------------------------------------------------------- the spec

def test_spec_cross_product_explicit_runs_and_paper_defaults(tmp_path):
    spec = sweep.parse_spec({
        "out": str(tmp_path), "train": {"val_every": 5},
        "grid": [{"target": ["linear2", "fully3"], "hidden": [50, 150], "input": 100, "seed": [0, 1]}],
        "runs": [{"target": "linear2", "hidden": 50, "input": 100, "seed": 0},  # a duplicate of the grid's
                 {"target": "cyclic4", "hidden": 8, "input": 4, "seed": 3, "train": {"epochs": 7}}],
    })
    names = [r.name for r in spec.runs]
    assert len(names) == 9 == len(set(names))
    assert names[0] == "linear2-h50-d100-s0" and names[-1] == "cyclic4-h8-d4-s3"
    by_name = {r.name: r for r in spec.runs}
    assert by_name["fully3-h150-d100-s1"].config["epochs"] == 1000 and by_name["fully3-h150-d100-s1"].config["grad_clip"] == 0.3
    assert by_name["linear2-h150-d100-s1"].config["epochs"] == 500 and by_name["linear2-h150-d100-s1"].config["grad_clip"] == 0.9
    assert by_name["cyclic4-h8-d4-s3"].config["epochs"] == 7 and by_name["cyclic4-h8-d4-s3"].config["val_every"] == 5
    assert by_name["linear2-h50-d100-s0"].rule == BifurcationRule().as_dict()  # watched, never stopped
    assert sweep.parse_spec({"out": "x", "runs": [{"target": "linear2", "hidden": 8, "input": 4, "seed": 0}]},
                            device="cuda").runs[0].config["device"] == "cuda"


@pytest.mark.parametrize("change, match", [
    ({"grid": {"target": "linear9", "hidden": 8, "input": 4, "seed": 0}}, "unknown target 'linear9'"),
    ({"grid": {"target": "linear2", "hidden": 8, "seed": 0}}, "grid\\[0\\]: missing 'input'"),
    ({"grid": {"target": "linear2", "hidden": 0, "input": 4, "seed": 0}}, "hidden must be an integer >= 1"),
    ({"train": {"epoch": 3}}, "unknown keys \\['epoch'\\]"),
    ({"train": {"lr": -1}}, "lr must be a positive number"),
    ({"stop": {"no_bifurcation_by": 5}}, "after the early window"),
    ({"evaluate": {"n": 0}}, "n must be a positive integer"),
    ({"evaluate": {"matched": "yes"}}, "matched true or false"),
    ({"runs": [{"target": "linear2", "hidden": 8, "input": 4, "seed": 0, "train": {"epochs": 9}}]}, "also defined with other settings"),
    ({"search": [{"target": "linear5", "hidden": 8, "input": 4, "successes": 3, "max_tries": 2}]}, "cannot exceed max_tries"),
    ({"sweep": 1}, "unknown keys \\['sweep'\\]"),
    ({"done_in": "sweeps/campaign"}, "done_in must be a list of sweep folders"),
    ({"done_in": ["x"]}, "done_in names the sweep's own folder 'x'"),
    ({"grid": None}, "defines no runs"),
])
def test_spec_errors_name_the_problem(change, match):
    spec = {"out": "x", "grid": {"target": "linear2", "hidden": 8, "input": 4, "seed": 0}}
    spec.update(change)
    with pytest.raises(sweep.SpecError, match=match):
        sweep.parse_spec(spec)


def test_repository_specs():
    grid = sweep.load_spec(REPO / "sweeps" / "grid.yaml")
    assert len(grid.runs) == 144 and not grid.searches
    cells = {(r.config["hmm"], r.config["hidden_size"], r.config["input_size"]) for r in grid.runs}
    assert cells == {(f"linear{m}", h, d) for m in (2, 3, 4, 5) for h in (50, 150, 200) for d in (1, 10, 100, 200)}
    assert {r.config["seed"] for r in grid.runs} == {0, 1, 2}
    assert all(r.config["epochs"] == 500 and r.config["seq_len"] is None and r.rule["no_bifurcation_by"] is None for r in grid.runs)
    assert all(r.evaluation == {"n": 5000, "length": None, "seed": 0, "matched": True} for r in grid.runs)
    cpu = sweep.load_spec(REPO / "sweeps" / "grid-cpu-slice.yaml")
    cells = {(r.config["hidden_size"], r.config["input_size"]) for r in cpu.runs}
    assert len(cpu.runs) == 18 and cells == {(150, 1), (150, 10), (150, 100), (150, 200), (50, 100), (200, 100)}
    full = {r.name: r.settings() for r in grid.runs}
    assert cpu.out == grid.out and all(full[r.name] == r.settings() for r in cpu.runs)  # its rows are rows of the grid
    assert cpu.done_in == (Path("sweeps/campaign"),)  # the cell |h| = 150, d = 100 is the campaign's
    campaign = sweep.load_spec(REPO / "sweeps" / "campaign.yaml")
    assert {r.config["hmm"] for r in campaign.runs} == {"linear2", "linear3", "linear4", "fully3", "cyclic4"}
    assert len(campaign.runs) == 15 and all(r.config["hidden_size"] == 150 and r.config["input_size"] == 100 for r in campaign.runs)
    (search,) = campaign.searches
    assert (search.cell, search.successes) == ("linear5-h150-d100", 3)
    assert search.template.rule["no_bifurcation_by"] is not None


def test_select_keeps_the_matching_part_of_a_spec_and_refuses_a_pattern_that_matches_nothing():
    grid = sweep.load_spec(REPO / "sweeps" / "grid.yaml")
    part = sweep.select(grid, ["linear3-h50-*", "*-h200-d1-s2"])
    assert sorted(r.name for r in part.runs) == sorted(
        [f"linear3-h50-d{d}-s{s}" for d in (1, 10, 100, 200) for s in (0, 1, 2)] + [f"linear{m}-h200-d1-s2" for m in (2, 3, 4, 5)])
    assert part.out == grid.out and sweep.select(grid, []) is grid
    campaign = sweep.load_spec(REPO / "sweeps" / "campaign.yaml")
    only_search = sweep.select(campaign, ["linear5-*"])
    assert not only_search.runs and [s.cell for s in only_search.searches] == ["linear5-h150-d100"]
    with pytest.raises(sweep.SpecError, match="matches no run"):
        sweep.select(grid, ["linear6-*"])


# --------------------------------------------------------------------------- the search

def fake_finished(out: Path, run: sweep.RunSpec, success: bool) -> None:
    """A finished try written by hand (no training): only its verdict matters to the driver."""
    row = {"name": run.name, "target": run.config["hmm"], "hidden": run.config["hidden_size"], "input": run.config["input_size"],
           "seed": run.config["seed"], "epochs": run.config["epochs"], "epochs_run": 3, "stop_reason": "completed",
           "best_val_loss": 1.0, "best_epoch": 3, "bifurcated": success, "bifurcation_epoch": 2.0 if success else None,
           "search": run.search, "search_try": run.search_try, "search_success": success, "wall_s": 0.0}
    (out / run.name).mkdir(parents=True)
    (out / run.name / sweep.RESULT_FILE).write_text(json.dumps({"name": run.name, "settings": run.settings(), "row": row}))


def test_search_stops_after_k_successes_and_records_every_try(tmp_path):
    spec = sweep.parse_spec(tiny_spec(tmp_path, search=[{"target": "linear5", "hidden": 8, "input": 4, "successes": 2,
                                                         "max_tries": 6, "first_seed": 3}]))
    (search,) = spec.searches
    verdicts = [False, True, False, True, True, True]  # seeds 3..8: the 2nd success is seed 6
    for i, ok in enumerate(verdicts):
        fake_finished(tmp_path, search.attempt(i), ok)
    lines = []
    outcome = sweep.run_sweep(spec, client=None, echo=lines.append)  # every try needed is finished: nothing runs
    assert [r["seed"] for r in outcome.rows] == [3, 4, 5, 6]
    assert [r["search_try"] for r in outcome.rows] == [1, 2, 3, 4]
    assert lines[-1] == "search linear5-h8-d4: 2 of 2 successes in 4 tries (seeds 3-6; successful: [4, 6]; failure rate 2/4)"
    table = pd.read_csv(outcome.table)
    assert len(table) == 6  # the table holds every run folder, the two tries past the search too
    failures = table[table.seed <= 6].groupby("search").search_success.agg(lambda s: int((~s).sum()))
    assert failures.to_dict() == {"linear5-h8-d4": 2}
    # max_tries ends a search that never succeeds
    spec_b = sweep.parse_spec(tiny_spec(tmp_path / "b", search=[{"target": "linear5", "hidden": 8, "input": 4, "max_tries": 3}]))
    for i in range(3):
        fake_finished(tmp_path / "b", spec_b.searches[0].attempt(i), False)
    outcome_b = sweep.run_sweep(spec_b, client=None, echo=lines.append)
    assert len(outcome_b.rows) == 3 and lines[-1].startswith("search linear5-h8-d4: 0 of 1 successes in 3 tries")


def test_search_progress_reads_a_search_from_the_table_as_the_driver_counts_it(tmp_path):
    spec = sweep.parse_spec(tiny_spec(tmp_path, search=[{"target": "linear5", "hidden": 8, "input": 4, "successes": 2,
                                                         "max_tries": 5, "first_seed": 3}]))
    (search,) = spec.searches

    def progress():
        records = pd.read_csv(sweep.write_table(tmp_path)).to_dict("records")  # the table as a chapter reads it
        ((found, done, line),) = sweep.search_progress(spec, records)
        assert found is search
        return done, line

    fake_finished(tmp_path, search.attempt(0), True)
    assert progress() == (False, "search linear5-h8-d4: 1 of 2 successes in 1 try (seed 3; successful: [3]; failure rate 0/1)")
    fake_finished(tmp_path, search.attempt(2), True)  # try 2 has no row: try 3 is not counted yet
    assert progress()[1].startswith("search linear5-h8-d4: 1 of 2 successes in 1 try")
    fake_finished(tmp_path, search.attempt(1), False)
    assert progress() == (True, "search linear5-h8-d4: 2 of 2 successes in 3 tries (seeds 3-5; successful: [3, 5]; failure rate 1/3)")
    fake_finished(tmp_path, search.attempt(3), True)  # a try past the K-th success is not counted
    assert progress()[1].endswith("in 3 tries (seeds 3-5; successful: [3, 5]; failure rate 1/3)")
    records = pd.read_csv(sweep.write_table(tmp_path)).to_dict("records")
    assert sweep.search_tallies(spec, records) == [(search, 2, 3)]  # the same count, as numbers
    assert sweep.search_tallies(spec, []) == [(search, 0, 0)]
    # max_tries ends a search without its successes
    spec_b = sweep.parse_spec(tiny_spec(tmp_path / "b", search=[{"target": "linear5", "hidden": 8, "input": 4, "max_tries": 2}]))
    for i in range(2):
        fake_finished(tmp_path / "b", spec_b.searches[0].attempt(i), False)
    records = pd.read_csv(sweep.write_table(tmp_path / "b")).to_dict("records")
    assert [(done, line) for _, done, line in sweep.search_progress(spec_b, records)] == [
        (True, "search linear5-h8-d4: 0 of 1 successes in 2 tries (seeds 0-1; successful: none; failure rate 2/2)")]
    assert sweep.search_progress(spec_b, []) == [(spec_b.searches[0], False, "search linear5-h8-d4: no tries")]


def test_a_run_finished_in_a_done_in_folder_with_the_same_recipe_is_not_trained_again(tmp_path):
    grid = {"target": "linear2", "hidden": 8, "input": 4, "seed": [0, 1]}
    other = sweep.parse_spec(tiny_spec(tmp_path / "campaign", grid=grid, train={**TRAIN, "snapshot_every": 1}))
    for run in other.runs:
        fake_finished(tmp_path / "campaign", run, True)
    spec = sweep.parse_spec(tiny_spec(tmp_path / "grid", grid=grid, done_in=[str(tmp_path / "campaign")]))
    assert sweep.select(spec, ["*-s0"]).done_in == spec.done_in
    run = spec.runs[0]
    assert sweep.run_state(spec.out, run) == ("new", None)
    where, row = sweep.done_elsewhere(spec.done_in, run)
    assert where == tmp_path / "campaign" and row["seed"] == 0 and row["bifurcated"] is True
    lines = []
    outcome = sweep.run_sweep(spec, client=None, echo=lines.append)  # nothing to train: no client needed
    assert [r["seed"] for r in outcome.rows] == [0, 1] and outcome.skipped == [r.name for r in spec.runs]
    assert lines[0] == f"linear2-h8-d4-s0: finished in {tmp_path / 'campaign'} with the same recipe, not trained here"
    assert not (tmp_path / "grid" / run.name).exists()  # its row stays in the campaign's table
    # another recipe there (more epochs) is another run: it would be trained here
    longer = sweep.parse_spec(tiny_spec(tmp_path / "grid", grid=grid, train={**TRAIN, "epochs": 4},
                                        done_in=[str(tmp_path / "campaign")]))
    assert sweep.done_elsewhere(longer.done_in, longer.runs[0]) is None
    assert sweep.done_elsewhere([tmp_path / "nowhere"], run) is None


def test_cli_dry_run_names_the_folder_a_run_was_done_in(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HMMRNN_NO_TCMALLOC", "1")  # main() must not re-exec the test process
    grid = {"target": "linear2", "hidden": 8, "input": 4, "seed": [0, 1]}
    fake_finished(tmp_path / "campaign", sweep.parse_spec(tiny_spec(tmp_path / "campaign", grid=grid)).runs[1], True)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(tmp_path / "grid", grid=grid, done_in=[str(tmp_path / "campaign")])))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"sweep {path}: 2 runs (1 done), 0 seed searches -> {tmp_path / 'grid'}",
                   "  linear2-h8-d4-s0: new", f"  linear2-h8-d4-s1: done (in {tmp_path / 'campaign'})"]


# --------------------------------------------------------------------------- the engine on a cluster

@pytest.fixture(scope="module")
def client():
    c = sweep.make_client(workers=2, dashboard=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def test_tiny_sweep_on_a_local_cluster_table_restart_and_resume(client, tmp_path):
    out = tmp_path / "sweep"
    grid = {"target": "linear2", "hidden": 8, "input": 4, "seed": [0, 1]}
    search = [{"target": "linear3", "hidden": 8, "input": 4, "successes": 1, "max_tries": 3},
              {"target": "linear4", "hidden": 8, "input": 4, "successes": 1, "max_tries": 2, "in_flight": 2}]
    spec = sweep.parse_spec(tiny_spec(out, grid=grid, search=search))
    first = sweep.run_sweep(spec, client, echo=lambda m: None)
    assert not first.failed and not first.skipped
    table = pd.read_csv(out / sweep.TABLE_FILE)
    assert list(table.columns[:9]) == ["name", "target", "hidden", "input", "seed", "seq_len", "epochs", "epochs_run", "stop_reason"]
    assert {"marginal_0", "marginal_2", "marginal_hmm_1", "max_sq_transition_error", "matched_distance", "wall_s"} <= set(table.columns)
    plain = table[table.search.isna()].set_index("name")
    assert list(plain.index) == ["linear2-h8-d4-s0", "linear2-h8-d4-s1"]
    for name, row in plain.iterrows():  # each row is its run folder's numbers
        ck = load(out / name)
        assert row.best_val_loss == pytest.approx(ck.results["best_val_loss"], rel=1e-5)
        assert (row.epochs_run, row.stop_reason, row.resumed_from) == (3, "completed", 0)
        assert row.marginal_0 + row.marginal_1 + row.marginal_2 == pytest.approx(1.0, abs=1e-5)
        assert row.marginal_hmm_1 == pytest.approx(0.01, abs=1e-9)
    tries = table[table.search == "linear3-h8-d4"].sort_values("search_try")
    # seeds in order from 0; every try but the last failed; the last succeeded or was the 3rd
    assert list(tries.seed) == list(range(len(tries))) and list(tries.search_try) == list(range(1, len(tries) + 1))
    assert not tries.search_success.iloc[:-1].any() and (tries.search_success.iloc[-1] or len(tries) == 3)
    # 3-epoch runs have too few validations for a loss drop, so no try succeeds here: the success
    # path is tested on recorded histories (test_a_finished_row_takes_the_verdict_of_todays_rule)
    assert (~tries.search_success | tries.bifurcated).all()  # a success bifurcated (and its loss dropped)
    assert (~tries.search_success | tries.loss_drop_epoch.notna()).all()
    # two tries in flight at once: both run and both are recorded, whatever the first's verdict
    assert sorted(table[table.search == "linear4-h8-d4"].seed) == [0, 1]

    # a third run is interrupted mid-way (each task ends as if killed after 1 epoch)...
    spec2 = sweep.parse_spec(tiny_spec(out, grid={**grid, "seed": [0, 1, 2]}, search=search))
    stamps = {p: p.read_bytes() for p in out.glob(f"*/{sweep.RESULT_FILE}")}
    cut = sweep.run_sweep(spec2, client, echo=lambda m: None, stop_after=1)
    assert list(cut.failed) == ["linear2-h8-d4-s2"] and "RunInterrupted" in cut.failed["linear2-h8-d4-s2"]
    assert sweep.run_state(out, spec2.runs[2])[0] == "partial"
    # ...and the restarted sweep skips every finished run and resumes it
    lines = []
    again = sweep.run_sweep(spec2, client, echo=lines.append)
    assert not again.failed
    assert sorted(again.skipped) == sorted(set(table.name))
    assert {p: p.read_bytes() for p in stamps} == stamps  # finished runs untouched
    assert sum("done before" in line for line in lines) == len(table)
    resumed = pd.read_csv(out / sweep.TABLE_FILE).set_index("name").loc["linear2-h8-d4-s2"]
    assert (resumed.resumed_from, resumed.epochs_run) == (1, 3)
    reference = copy.deepcopy(spec2.runs[2])
    sweep.run_one(reference, str(tmp_path / "uninterrupted"), threads=torch.get_num_threads())
    for name, array in npz(tmp_path / "uninterrupted" / reference.name / "weights.npz").items():
        np.testing.assert_array_equal(array, npz(out / "linear2-h8-d4-s2" / "weights.npz")[name])
    assert json.loads((out / "sweep" / "linear2-h8-d4-s2.json").read_text())["settings"] == spec2.runs[2].settings()

    # a folder of other settings is refused before anything runs
    other = tiny_spec(out, grid=grid)
    other["train"]["lr"] = 0.01
    with pytest.raises(ValueError, match="holds a run with other settings"):
        sweep.run_sweep(sweep.parse_spec(other), client, echo=lambda m: None)


def test_a_non_finite_loss_is_a_finished_run_reported_as_such(tmp_path, monkeypatch):
    import hmmrnn.train

    def diverging(*args, **kwargs):
        raise FloatingPointError("training loss became nan at epoch 2")

    monkeypatch.setattr(hmmrnn.train, "train", diverging)
    (run,) = sweep.parse_spec(tiny_spec(tmp_path, runs=[{"target": "linear2", "hidden": 8, "input": 4, "seed": 0}])).runs
    row = sweep.run_one(run, str(tmp_path), threads=torch.get_num_threads())
    assert (row["status"], row["stop_reason"], row["bifurcated"]) == ("ran", "non-finite loss", False)
    assert row.get("best_val_loss") is None and row.get("max_sq_transition_error") is None
    assert sweep.run_state(tmp_path, run) == ("done", {k: v for k, v in row.items() if k != "status"})
    assert "non-finite loss: training loss became nan at epoch 2" in (tmp_path / "sweep" / f"{run.name}.log").read_text()
    table = pd.read_csv(sweep.write_table(tmp_path))
    assert table.stop_reason.tolist() == ["non-finite loss"] and table.best_val_loss.isna().all()


def test_cli_dry_run_and_bad_spec(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HMMRNN_NO_TCMALLOC", "1")  # main() must not re-exec the test process
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(tmp_path / "out", grid={"target": "linear2", "hidden": 8, "input": 4, "seed": [0, 1]},
                                             search=[{"target": "linear5", "hidden": 8, "input": 4, "max_tries": 4}])))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["  linear2-h8-d4-s0: new", "  linear2-h8-d4-s1: new",
                       "  search linear5-h8-d4: seeds 0, 1, ... until 1 succeed (at most 4 tries, 1 at a time)"]
    assert not (tmp_path / "out").exists()
    path.write_text(yaml.safe_dump({"out": "x", "grid": {"target": "linear2", "hidden": 8, "input": 4}}))
    assert main(["sweep", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}: grid[0]: missing 'seed' (a value or a list)\n"
