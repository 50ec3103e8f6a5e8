"""Selection, paired statistics and robustness metrics against hand-made tables worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.analysis import expected_best_of_k, grid, scored, summarize
from study.paired import adjust, compare_cells, holm, paired_p
from study.verdict import classify, verdict


def table(cells, val=None):
    """cells: {(arm, lr, wd): [test acc per seed]}; val: same keys, validation acc (default: = test)."""
    rows = []
    for (arm, lr, wd), values in cells.items():
        for seed, acc in enumerate(values):
            v = (val or cells)[(arm, lr, wd)][seed]
            rows.append({"arm": arm, "variant": arm.split(":")[0], "lr": lr, "weight_decay": wd, "seed": seed,
                         "status": "TERMINATED", "dataset": "digits", "test_acc_at_best_val": acc,
                         "best_val_acc": v, "diverged": 0})
    return pd.DataFrame(rows)


def by_arm(summary):
    return {r["arm"]: r for _, r in summary.iterrows()}


# test accuracies; validation agrees except where noted
TEST = {("wd", 1e-3, 0.0): [0.90], ("wd", 1e-3, 0.1): [0.80], ("wd", 1e-2, 0.0): [0.95], ("wd", 1e-2, 0.1): [0.99],
        ("lpwd", 1e-3, 0.0): [0.90], ("lpwd", 1e-3, 0.1): [0.935], ("lpwd", 1e-2, 0.0): [0.95],
        ("lpwd", 1e-2, 0.1): [0.945]}
# wd's 99 on test is a lucky cell: on validation it is only 0.91, and (1e-2, 0.0) is best there
VAL = {**TEST, ("wd", 1e-2, 0.1): [0.91]}


def test_the_best_cell_is_chosen_on_validation_and_reported_on_test():
    wd = by_arm(summarize(table(TEST, VAL)))["wd"]
    assert (wd["best_lr"], wd["best_weight_decay"]) == (1e-2, 0.0)
    assert wd["best"] == pytest.approx(95.0)  # not the test-best 99
    # the reference of near-optimal areas is the validation-best cell over all arms (95, a tie of wd and lpwd)
    assert wd["near_optimal_1pt"] == pytest.approx(2 / 4)  # 95 and 99 are within 1 point of 95
    lp = by_arm(summarize(table(TEST, VAL)))["lpwd"]
    assert lp["near_optimal_1pt"] == pytest.approx(2 / 4)  # 95 and 94.5
    assert lp["near_optimal_2pt"] == pytest.approx(3 / 4)  # and 93.5
    # lambda-spread along the validation-best learning rate (1e-2): 95 and 99 for wd, 95 and 94.5 for lpwd
    assert wd["decay_spread"] == pytest.approx(4.0) and lp["decay_spread"] == pytest.approx(0.5)
    assert wd["worst"] == pytest.approx(80) and wd["grid_mean"] == pytest.approx((90 + 80 + 95 + 99) / 4)


def test_ties_on_validation_share_the_win():
    tied = table({("wd", 1e-3, 0.0): [0.90], ("wd", 1e-3, 0.1): [0.80]},
                 val={("wd", 1e-3, 0.0): [0.85], ("wd", 1e-3, 0.1): [0.85]})
    wd = by_arm(summarize(tied))["wd"]
    assert wd["best"] == pytest.approx(85.0) and wd["best_tied_cells"] == 2


def test_expected_best_of_k_picks_on_validation_and_scores_on_test():
    val, test = np.array([1.0, 2.0, 3.0]), np.array([30.0, 10.0, 20.0])
    curve = expected_best_of_k(val, test)
    # k=1: mean test; k=2: P(max val is cell i) = (i/3)^2 - ((i-1)/3)^2 = 1/9, 3/9, 5/9
    assert curve[0] == pytest.approx(20.0)
    assert curve[1] == pytest.approx((30 * 1 + 10 * 3 + 20 * 5) / 9)
    assert curve[-1] < 30  # never the test-best 30: it loses every validation comparison it is in


def test_diverged_trials_count_as_chance_and_unfinished_are_counted():
    t = table(TEST)
    t.loc[t["arm"] == "wd", "diverged"] = [0, 0, 0, 1]
    t.loc[(t["arm"] == "lpwd") & (t["lr"] == 1e-3) & (t["weight_decay"] == 0.0), "status"] = "ERROR"
    df = scored(t, "test_acc_at_best_val")
    assert df[df["diverged"] == 1]["score"].tolist() == [10.0]
    s = by_arm(summarize(t))
    assert s["wd"]["worst"] == pytest.approx(10.0) and s["wd"]["diverged_cells"] == 1
    assert s["lpwd"]["cells"] == 3 and s["lpwd"]["errored_trials"] == 1 and s["lpwd"]["cells_planned"] == 4


def test_paired_p_values_match_scipy():
    a = np.array([91.0, 92.5, 90.2, 93.1])
    b = np.array([90.4, 92.0, 90.1, 92.2])
    assert paired_p(a - b, "t") == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p(a - b, "wilcoxon") == pytest.approx(stats.wilcoxon(a, b).pvalue)
    # exact sign-flip: all 16 sign patterns of the 4 differences, two-sided on the mean
    d = a - b
    flips = np.array([[1 if (m >> i) & 1 else -1 for i in range(4)] for m in range(16)])
    means = (flips * d).mean(axis=1)
    assert paired_p(d, "signflip") == pytest.approx(np.mean(np.abs(means) >= abs(d.mean()) - 1e-12))
    # the paired test sees what an unpaired one cannot: a consistent small gain over noisy seeds
    gain = np.array([90.3, 85.3, 95.3]) - np.array([90.0, 85.0, 95.0]) + np.array([0.01, -0.01, 0.0])
    assert paired_p(gain, "t") < 0.01 < stats.ttest_ind([90.3, 85.3, 95.3], [90.0, 85.0, 95.0]).pvalue


def test_zero_spread_uses_the_exact_sign_flip_test():
    assert paired_p(np.array([0.28, 0.28, 0.28]), "t") == pytest.approx(2 / 2**3)  # not 0.0
    assert paired_p(np.zeros(3), "t") == 1.0
    assert math.isnan(paired_p(np.array([1.0]), "t"))


def test_holm_and_bh_corrections():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # Holm by hand: sorted 0.01*4 = .04; 0.03*3 = .09; 0.04*2 = .08 -> .09 (monotone); 0.2*1 = .2
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert adjust(p, "bh") == pytest.approx(stats.false_discovery_control(p, method="bh"))
    assert np.isnan(adjust(np.array([np.nan, 0.01]), "holm")[0])


def test_a_grid_of_cells_is_corrected_before_a_cell_is_significant():
    rng = np.random.default_rng(1)
    cells = {}
    for lr in (1e-3, 1e-2):
        for wd in (0.0, 0.1, 1.0):
            base = rng.normal(90, 1, 5)
            cells[("wd", lr, wd)] = list(base / 100)
            cells[("lpwd", lr, wd)] = list((base + rng.normal(0, 0.5, 5)) / 100)
    cells[("lpwd", 1e-3, 0.1)] = [x + 0.012 for x in cells[("wd", 1e-3, 0.1)]]  # +1.2 pt, with jitter below
    cells[("lpwd", 1e-3, 0.1)][0] += 0.001
    df = scored(table(cells), "test_acc_at_best_val")
    cmp = compare_cells(grid(df), "lpwd", "wd", "t", "holm")
    raw = compare_cells(grid(df), "lpwd", "wd", "t", "none")
    assert cmp["p_adj"].tolist() == pytest.approx(holm(raw["p"].to_numpy()).tolist())
    assert (cmp["p_adj"] >= cmp["p"]).all()
    best = cmp[(cmp["lr"] == 1e-3) & (cmp["weight_decay"] == 0.1)].iloc[0]
    assert best["significant"] and best["diff"] == pytest.approx(1.22, abs=0.01)
    assert best["ci_low"] < best["diff"] < best["ci_high"]


def simulated_study(rng, seeds, gap):
    """Two arms on 4 cells; lpwd's true grid mean is ``gap`` points above wd's; seed effects shared."""
    cells = {}
    truth = {1e-3: 90.0, 1e-2: 85.0}
    for lr, mu in truth.items():
        for wd in (0.0, 1.0):
            shared = rng.normal(0, 2, seeds)  # the seed's init and split move both arms together
            cells[("wd", lr, wd)] = list((mu + shared + rng.normal(0, 0.5, seeds)) / 100)
            cells[("lpwd", lr, wd)] = list((mu + gap + shared + rng.normal(0, 0.5, seeds)) / 100)
    return table(cells)


def test_bootstrap_intervals_cover_the_truth_at_about_their_nominal_rate():
    rng = np.random.default_rng(7)
    hits, widths = 0, []
    runs = 150
    for _ in range(runs):
        s = by_arm(summarize(simulated_study(rng, seeds=20, gap=0.5), resamples=400))["lpwd"]
        hits += s["diff_grid_mean_lo"] <= 0.5 <= s["diff_grid_mean_hi"]
        widths.append(s["diff_grid_mean_hi"] - s["diff_grid_mean_lo"])
    assert 0.88 <= hits / runs <= 0.99, hits / runs  # nominal 95%
    # pairing: the interval of the difference is far narrower than the seed effect (sd 2) would make it
    assert np.median(widths) < 0.6


def test_one_seed_gives_no_interval_and_the_verdict_says_untested():
    s = summarize(table(TEST))
    lp = by_arm(s)["lpwd"]
    assert math.isnan(lp["diff_worst_lo"]) and lp["cells_tested"] == 0
    assert classify(lp) == "untested"
    assert "untested" in verdict(s)


def test_the_verdict_is_written_from_the_numbers():
    rng = np.random.default_rng(3)
    t = simulated_study(rng, seeds=6, gap=3.0)
    s = summarize(t, effective_decay={"wd": 1.0, "lpwd": 0.67})
    lp = by_arm(s)["lpwd"]
    text = verdict(s, {"dataset": "digits"})
    assert classify(lp) == "more robust" and text.startswith("lpwd vs wd: more robust")
    assert f"grid mean {lp['grid_mean']:.1f} vs {by_arm(s)['wd']['grid_mean']:.1f}" in text
    assert f"[{lp['diff_grid_mean_lo']:+.1f}, {lp['diff_grid_mean_hi']:+.1f}]" in text
    assert "6 seeds per cell" in text and "67% of wd's total decay" in text
    # no gap: nothing is claimed
    s0 = summarize(simulated_study(rng, seeds=6, gap=0.0))
    assert classify(by_arm(s0)["lpwd"]) == "no difference shown" and "more robust" not in verdict(s0)
    assert classify(by_arm(summarize(simulated_study(rng, seeds=6, gap=-3.0)))["lpwd"]) == "less robust"


def test_a_training_curve_has_each_epoch_once_after_a_resume(tmp_path):
    """An interrupted trial's result.json repeats the epochs it retrained and a replayed final report."""
    import json

    from study.report import trial_history

    row = {"experiment": "grid", "trial_id": "t_00000"}
    folder = tmp_path / "grid" / "t_00000"
    folder.mkdir(parents=True)
    reported = [(0, 0.1), (1, 0.2), (2, 0.25), (1, 0.21), (2, 0.3), (3, 0.4), (3, 0.4)]  # resumed from epoch 0
    (folder / "result.json").write_text("".join(json.dumps({"epoch": e, "val_acc": a}) + "\n" for e, a in reported))
    history = trial_history(tmp_path, row)
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert history["val_acc"].tolist() == [0.1, 0.21, 0.3, 0.4]  # the retrained epoch's report stands
    assert trial_history(tmp_path, {**row, "trial_id": "never_reported"}) is None
