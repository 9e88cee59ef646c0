"""The campaign's seed tables (hmmrnn.campaign) on hand-made results rows."""

import csv
import math

import pytest

from hmmrnn import campaign, paper


def row(target, seed, best, bif_epoch=None, **extra):
    r = {"target": target, "seed": seed, "epochs_run": 1000, "stop_reason": "completed", "best_val_loss": best,
         "best_epoch": 900, "bifurcated": bif_epoch is not None, "bifurcation_epoch": bif_epoch,
         "max_sq_transition_error": 0.0011, "lability": 0.0591862, "lability_hmm": 0.086445,
         "matched_distance": 0.89, "matched_distance_baseline": 1.353, "fit_passes": True, "rate_early": 0.45}
    r.update(extra)
    return r


RECORDS = [row("fully3", 1, 1.70807, 55), row("fully3", 0, 2.02736, None, fit_passes=False),
           row("fully3", 2, 1.75, 60), row("linear5", 3, 7.60507, 120)]


def test_spread_per_target():
    s = campaign.seed_spread(RECORDS)
    assert list(s) == ["fully3", "linear5"]
    f = s["fully3"]
    assert (f.n_runs, f.n_bifurcated) == (3, 2)
    assert f.best_losses == (2.02736, 1.70807, 1.75)  # seed order
    assert f.bifurcation_epochs == (55, 60)


def test_spread_table_beside_the_paper():
    t = campaign.spread_table(RECORDS)
    assert list(t.rows[0]) == ["fully3", "3", "2", "1.71-2.03", "1.8-1.9", "55, 60", "-", "-"]
    lo, hi = paper.BIFURCATION_EPOCH["linear5"]
    assert list(t.rows[1]) == ["linear5", "1", "1", "7.61", "7.6-7.9", "120", f"{lo}-{hi}", "-"]


def search_try(seed, best, bif_epoch, n):
    """A try of the linear5 seed search, as the table writes it (search_success: here, that it bifurcated)."""
    return row("linear5", seed, best, bif_epoch, search="linear5-h150-d100", search_try=n,
               search_success=bif_epoch is not None)


def test_failed_tries_of_a_seed_search_are_counted_not_spread():
    # the paper's ranges are over the seeds its authors kept (they re-seeded until a run bifurcated)
    records = [search_try(3, 7.60507, 120, 1), search_try(4, 9.914, None, 2), search_try(5, 9.90, None, 3),
               search_try(6, 7.70, 300, 4), row("fully3", 0, 2.02736, None)]
    s = campaign.seed_spread(records)
    assert (s["linear5"].n_runs, s["linear5"].best_losses, s["linear5"].bifurcation_epochs) == (2, (7.60507, 7.70), (120, 300))
    assert (s["linear5"].search_tries, s["linear5"].failed_tries) == (4, 2)
    assert (s["fully3"].n_runs, s["fully3"].search_tries, s["fully3"].failed_tries) == (1, 0, 0)  # no search: every run
    rows = {r[0]: list(r) for r in campaign.spread_table(records).rows}
    assert rows["linear5"][1:4] == ["2", "2", "7.61-7.70"] and rows["linear5"][7] == "2 of 4"
    # a search whose every try failed has no spread yet; csv text reads the same
    as_text = [{k: ("" if v is None else str(v)) for k, v in search_try(4, 9.914, None, 2).items()}]
    only_failed = campaign.seed_spread(as_text)["linear5"]
    assert (only_failed.n_runs, only_failed.search_tries, only_failed.failed_tries) == (0, 1, 1)
    assert list(campaign.spread_table(as_text).rows[0][1:4]) == ["0", "0", "-"]
    assert len(campaign.seed_table(records).rows) == 5  # every try stays a row of the seed table


def test_seed_table_rows_flags_and_shipped():
    t = campaign.seed_table(RECORDS, shipped={"fully3": 1})
    assert [list(r[:2]) for r in t.rows] == [["fully3", "0"], ["fully3", "1"], ["fully3", "2"], ["linear5", "3"]]
    assert list(t.rows[0][3:5]) == ["2.027 @ 900", "none"] and t.rows[0][8] == "no"
    assert t.rows[1][4] == "55" and t.rows[1][9] == "shipped" and t.rows[2][9] == ""
    assert t.rows[0][6] == "0.059 (0.086)" and t.rows[0][7] == "0.89 (1.35)"
    assert list(t.flagged) == [0]


def test_a_run_without_an_early_plateau_is_told_apart_from_one_that_never_dropped():
    # cyclic4 seed 0 of the campaign: silent (1/500) through epochs 10-30, so no early level
    quiet = row("cyclic4", 0, 5.498, None, rate_early=None, fit_passes=False)
    # fully3 seed 0: a plateau (0.57), then its driven runs diverged (no final level): "none"
    runaway = row("fully3", 0, 2.03, None, rate_early=0.57, rate_final=None)
    diverged = row("fully3", 1, 2.03, None, rate_early=None, stop_reason="non-finite loss")
    t = campaign.seed_table([quiet, runaway, diverged, row("cyclic4", 1, 5.5, None)])
    assert [r[4] for r in t.rows] == ["no plateau", "none", "none", "none"]
    assert list(t.flagged) == [0, 1, 2, 3]
    assert campaign.seed_table([row("cyclic4", 0, 5.498, None, rate_early="")]).rows[0][4] == "no plateau"  # csv text
    # a plateau the rule measured later than its window (no check of epochs 10-30 flickered)
    # (the rule writes plateau_moved; the table does not compare plateau_from with a default window)
    late = row("linear3", 0, 4.05, 100, plateau_from=75.0, plateau_moved=True)
    flat = row("linear3", 1, 4.05, None, rate_early=0.03, plateau_from="95", plateau_moved="True")  # csv text
    on_time = row("linear3", 2, 4.05, 40, plateau_from=10.0, plateau_moved=False)
    own_rule = row("linear3", 3, 4.05, 60, plateau_from=20.0, plateau_moved="False")  # a rule whose window starts at 20
    assert [r[4] for r in campaign.seed_table([late, flat, on_time, own_rule]).rows] == [
        "100 (plateau from 75)", "none (plateau from 95)", "40", "60"]
    with pytest.raises(ValueError, match="no plateau_moved column.*write_table"):
        campaign.seed_table([row("linear3", 0, 4.05, 100, plateau_from=75.0)])


def test_records_as_pandas_and_csv_give_them():
    # pandas: NaN for an empty cell; csv: strings "True"/"False" and ""
    nan_row = row("linear3", 0, 4.03, None, bifurcated=float("nan"), bifurcation_epoch=float("nan"))
    t = campaign.seed_table([nan_row])
    assert t.rows[0][4] == "-"
    as_text = {k: ("" if v is None else str(v)) for k, v in row("linear3", 1, 4.05, 50).items()}
    assert campaign.seed_spread([as_text])["linear3"].bifurcation_epochs == (50,)
    assert campaign.missing("") and campaign.missing(math.nan) and not campaign.missing(0.0)


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"row 0 has no column\(s\) \['best_val_loss'\]"):
        campaign.seed_table([{k: v for k, v in row("fully3", 0, 2.0).items() if k != "best_val_loss"}])
    with pytest.raises(ValueError, match="not finite"):
        campaign.seed_spread([row("fully3", 0, float("inf"))])
    with pytest.raises(ValueError, match="not a boolean cell"):
        campaign.seed_spread([row("fully3", 0, 2.0, bifurcated="yes")])


def test_the_shipped_campaign_table_reads(tmp_path):
    # the committed results table of the campaign is read as it is
    with open("sweeps/campaign/results.csv", newline="") as f:
        records = list(csv.DictReader(f))
    s = campaign.seed_spread(records)
    assert s["linear5"].n_bifurcated >= 1
    assert all(math.isfinite(v) for sp in s.values() for v in sp.best_losses)


def test_shipped_seed_is_found_by_its_weights(tmp_path):
    from hmmrnn.checkpoints import load, save

    ship = load("linear5-paper")
    other = load("linear5")  # same W_in, W_rec, another readout: not the shipped network
    save(ship, tmp_path / "linear5-h150-d100-s3")
    save(other, tmp_path / "linear5-h150-d100-s4")
    records = [row("linear5", 3, 7.6, 120, name="linear5-h150-d100-s3"), row("linear5", 4, 7.7, 100, name="linear5-h150-d100-s4")]
    assert campaign.shipped_seeds(records, tmp_path, {"linear5": "linear5-paper"}) == {"linear5": 3}
    assert campaign.shipped_seeds(records[1:], tmp_path, {"linear5": "linear5-paper"}) == {}


def test_success_rate_interval_is_clopper_pearson():
    # the exact interval's ends are quantiles of beta distributions (an independent formula) ...
    from scipy.stats import beta
    r = campaign.success_rate(3, 21)
    assert (r.successes, r.tries, r.level) == (3, 21, 0.95) and r.rate == pytest.approx(1 / 7)
    assert r.low == pytest.approx(beta.ppf(0.025, 3, 19), rel=1e-9)
    assert r.high == pytest.approx(beta.ppf(0.975, 4, 18), rel=1e-9)
    # ... and at the edges they have closed forms: 0 of n -> [0, 1 - (a/2)^(1/n)], n of n -> [(a/2)^(1/n), 1]
    none = campaign.success_rate(0, 5)
    assert none.low == 0.0 and none.high == pytest.approx(1 - 0.025 ** (1 / 5), rel=1e-9)
    every = campaign.success_rate(4, 4, level=0.9)
    assert every.high == 1.0 and every.low == pytest.approx(0.05 ** (1 / 4), rel=1e-9)
    assert str(campaign.success_rate(1, 4)) == "1 in 4 (25.0 %; 95 % interval 0.6-80.6 %)"


@pytest.mark.parametrize("args, message", [
    ((4, 3), "cannot exceed tries"), ((0, 0), "at least one try"), ((-1, 3), "non-negative integer"),
    ((1.5, 3), "non-negative integer"), ((True, 3), "non-negative integer"), ((1, 3, 1.0), "level must lie in"),
])
def test_success_rate_names_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        campaign.success_rate(*args)


def test_authors_re_seeding_is_read_as_sequential_tries():
    # seeds 4, 19 and 20 kept: tries of seeds 0-20, three of them successes (PAPER.md section 3: "about 3 times in 21")
    assert paper.RESEED_SEEDS[("linear5", 150, 100)] == (4, 19, 20)
    r = campaign.authors_success_rate("linear5", 150, 100)
    assert (r.successes, r.tries) == (3, 21)
    assert campaign.authors_success_rate("linear5", 50, 10).tries == 6
    assert campaign.authors_success_rate("linear3", 150, 100) is None


def test_compare_success_rates_is_fishers_exact_test():
    a, b = campaign.success_rate(1, 5), campaign.success_rate(3, 21)
    assert campaign.compare_success_rates(a, a) == pytest.approx(1.0)
    # by hand: 2x2 table [[0, 10], [10, 0]] -> only the observed table is as extreme, each way:
    # p = 2 / C(20, 10)
    p = campaign.compare_success_rates(campaign.success_rate(0, 10), campaign.success_rate(10, 10))
    assert p == pytest.approx(2 / math.comb(20, 10), rel=1e-9)
    assert campaign.compare_success_rates(a, b) == pytest.approx(campaign.compare_success_rates(b, a))


def test_a_try_that_bifurcated_without_its_loss_drop_is_a_failed_try():
    # linear5 seed 8: the rule dated a bifurcation (170), its validation loss never dropped: no success
    false_success = row("linear5", 8, 9.901, 170, search="linear5-h150-d100", search_try=6, search_success=False)
    records = [search_try(3, 7.60507, 120, 1), false_success]
    s = campaign.seed_spread(records)["linear5"]
    assert (s.n_runs, s.best_losses, s.bifurcation_epochs, s.failed_tries) == (1, (7.60507,), (120,), 1)
    t = campaign.seed_table(records)
    assert [r[-1] for r in t.rows] == ["", "search try failed (no loss drop)"] and list(t.flagged) == [1]
    no_bif = campaign.seed_table([search_try(4, 9.914, None, 2)])
    assert no_bif.rows[0][-1] == "search try failed" and list(no_bif.flagged) == [0]
    assert t.rows[1][4] == "170"  # the rule's own verdict stays in its column


def _try(seed, best, outcome, wall=1000.0, **extra):
    # one try of a search: "win" (bifurcated, loss drop), "stop" (stopped at 500), "dip" (trained to the end, no
    # bifurcation) or "rule" (trained to the end, bifurcated by the rule without a loss drop)
    fields = {"win": dict(bifurcated=True, bifurcation_epoch=120, search_success=True),
              "stop": dict(epochs_run=500, stop_reason="no bifurcation by epoch 500", bifurcated=False, search_success=False),
              "dip": dict(bifurcated=False, search_success=False),
              "rule": dict(bifurcated=True, bifurcation_epoch=170, search_success=False)}[outcome]
    return row("linear5", seed, best, **({"name": f"linear5-s{seed}", "search": "linear5-h150-d100", "wall_s": wall,
                                          "resumed_from": 0} | fields | extra))


def test_search_record_groups_tries_by_outcome_with_their_epochs_and_hours():
    records = [_try(4, 9.914, "stop", 1800.0), _try(3, 7.605, "win", 9000.0), _try(5, 9.909, "dip", 3600.0),
               _try(7, 9.888, "stop", 1800.0), _try(8, 9.901, "rule", 3600.0),
               row("fully3", 0, 2.03, name="fully3-s0", wall_s=5000.0)]  # no search: left out
    rows = [list(r) for r in campaign.search_record_table(records).rows]
    assert rows == [
        ["linear5-h150-d100", "succeeded", "1", "3", "7.605", "1000", "2.5"],
        ["linear5-h150-d100", "failed: stopped at epoch 500", "2", "4, 7", "9.888-9.914", "1000", "1.0"],
        ["linear5-h150-d100", "failed: trained to the end, bifurcation by the rule but no loss drop", "1", "8", "9.901",
         "1000", "1.0"],
        ["linear5-h150-d100", "failed: trained to the end, no bifurcation", "1", "5", "9.909", "1000", "1.0"],
        ["linear5-h150-d100", "all tries", "5", "3, 4, 5, 7, 8", "7.605-9.914", "4000", "5.5"],
    ]


def test_search_record_scales_a_resumed_try_and_rejects_a_missing_time():
    # resumed at epoch 400 of 500: its last task's 500 s of training stand for 100 of the 500 epochs
    resumed = _try(4, 9.914, "stop", 600.0, resumed_from=400, train_s=500.0, eval_s=100.0)
    assert list(campaign.search_record_table([resumed]).rows[0])[-1] == f"{(500.0 * 5 + 100.0) / 3600:.1f}"
    with pytest.raises(ValueError, match="wall_s is empty"):
        campaign.search_record_table([_try(4, 9.914, "stop", float("nan"))])
    with pytest.raises(ValueError, match="best_val_loss is not finite"):
        campaign.search_record_table([_try(4, float("inf"), "stop")])


def test_search_record_shows_a_try_past_the_searchs_end_apart_from_its_totals():
    # the search counted 3 tries (its K-th success was try 3); try 4 was running then and finished
    records = [_try(3, 7.6, "win", search_try=1), _try(4, 9.9, "stop", search_try=2), _try(5, 7.7, "win", search_try=3),
               _try(6, 9.91, "stop", search_try=4)]
    rows = [list(r)[1:4] for r in campaign.search_record_table(records, counted={"linear5-h150-d100": 3}).rows]
    assert rows == [["succeeded", "2", "3, 5"], ["failed: stopped at epoch 500", "1", "4"], ["all tries", "3", "3, 4, 5"],
                    ["ran past the search's end (not counted)", "1", "6"]]
    assert [list(r)[2] for r in campaign.search_record_table(records).rows] == ["2", "2", "4"]  # default: all count
