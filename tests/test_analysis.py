"""Robustness metrics against hand-made tables whose answers are worked out by hand."""

import math

import pandas as pd
import pytest
from scipy import stats

from study.analysis import compare, expected_best_of_k, needs_more_seeds, scored, summarize


def table(cells, variants=("wd", "lpwd")):
    """cells: {(variant, lr, wd): [(acc, diverged), ...one per seed]} -> a tidy table."""
    rows = []
    for (variant, lr, wd), values in cells.items():
        for seed, (acc, diverged) in enumerate(values):
            rows.append({"variant": variant, "lr": lr, "weight_decay": wd, "seed": seed, "status": "TERMINATED",
                         "dataset": "digits", "test_acc_at_best_val": acc, "diverged": diverged})
    return pd.DataFrame(rows)


ONE_SEED = table({
    ("wd", 1e-3, 0.0): [(0.90, 0)], ("wd", 1e-3, 0.1): [(0.80, 0)],
    ("wd", 1e-2, 0.0): [(0.95, 0)], ("wd", 1e-2, 0.1): [(0.99, 1)],  # diverged: counts as chance (10 points)
    ("lpwd", 1e-3, 0.0): [(0.90, 0)], ("lpwd", 1e-3, 0.1): [(0.935, 0)],
    ("lpwd", 1e-2, 0.0): [(0.95, 0)], ("lpwd", 1e-2, 0.1): [(0.945, 0)],  # best ties with wd's best (95)
})


def by_variant(summary):
    return {r["variant"]: r for _, r in summary.iterrows()}


def test_one_seed_summary_by_hand():
    s = by_variant(summarize(ONE_SEED))
    wd, lp = s["wd"], s["lpwd"]
    # wd: cells 90, 80, 95, 10 (diverged -> chance)
    assert (wd["best_lr"], wd["best_weight_decay"], wd["best_mean"]) == (1e-2, 0.0, pytest.approx(95))
    assert math.isnan(wd["best_sd"])
    assert wd["worst_mean"] == pytest.approx(10) and (wd["worst_lr"], wd["worst_weight_decay"]) == (1e-2, 0.1)
    assert wd["grid_mean"] == pytest.approx((90 + 80 + 95 + 10) / 4)
    assert wd["decay_spread_at_best_lr"] == pytest.approx(85)
    assert wd["near_optimal_1pt"] == pytest.approx(1 / 4) and wd["near_optimal_2pt"] == pytest.approx(1 / 4)
    assert wd["diverged_cells"] == 1
    # lpwd: cells 90, 93.5, 95, 94.5; the overall best is the tie at 95
    assert lp["best_mean"] == pytest.approx(95) and lp["worst_mean"] == pytest.approx(90)
    assert lp["grid_mean"] == pytest.approx((90 + 93.5 + 95 + 94.5) / 4)
    assert lp["decay_spread_at_best_lr"] == pytest.approx(0.5)
    assert lp["near_optimal_1pt"] == pytest.approx(2 / 4)  # 95, 94.5 within 1 point of 95
    assert lp["near_optimal_2pt"] == pytest.approx(3 / 4)  # and 93.5
    assert lp["diverged_cells"] == 0
    # one seed: differences without a test
    assert lp["mean_diff_vs_baseline"] == pytest.approx((0 + 13.5 + 0 + 84.5) / 4)
    assert pd.isna(lp["sig_better"]) and pd.isna(lp["sig_worse"])
    assert needs_more_seeds(ONE_SEED)


def test_near_optimal_is_relative_to_the_best_any_variant_reached():
    worse = ONE_SEED.copy()
    worse.loc[worse["variant"] == "lpwd", "test_acc_at_best_val"] -= 0.03  # lpwd: 87, 90.5, 92, 91.5
    lp = by_variant(summarize(worse))["lpwd"]
    assert lp["near_optimal_2pt"] == 0.0  # nothing within 2 points of wd's 95
    assert lp["near_own_best_1pt"] == pytest.approx(2 / 4)  # 92 and 91.5 within 1 of its own 92


THREE_SEEDS = table({
    ("wd", 1e-3, 0.0): [(0.90, 0), (0.91, 0), (0.92, 0)],
    ("lpwd", 1e-3, 0.0): [(0.93, 0), (0.94, 0), (0.95, 0)],  # +3 points, sd 1 each: significant
    ("wd", 1e-3, 0.1): [(0.90, 0), (0.91, 0), (0.92, 0)],
    ("lpwd", 1e-3, 0.1): [(0.90, 0), (0.92, 0), (0.91, 0)],  # same values: p = 1
    ("wd", 1e-2, 0.0): [(0.95, 0), (0.955, 0), (0.96, 0)],
    ("lpwd", 1e-2, 0.0): [(0.80, 0), (0.81, 0), (0.82, 0)],  # much worse: significant
})


def test_welch_test_per_cell_by_hand():
    df = scored(THREE_SEEDS, "test_acc_at_best_val")
    cmp = compare(df, "lpwd", "wd").set_index(["lr", "weight_decay"])
    a = cmp.loc[(1e-3, 0.0)]
    # Welch: t = 3 / sqrt(1/3 + 1/3), df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    t = 3 / math.sqrt(2 / 3)
    assert a["diff"] == pytest.approx(3) and a["p"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert cmp.loc[(1e-3, 0.1)]["p"] == pytest.approx(1.0)
    assert cmp.loc[(1e-2, 0.0)]["diff"] == pytest.approx(81 - 95.5)
    s = by_variant(summarize(THREE_SEEDS))["lpwd"]
    assert (s["sig_better"], s["sig_worse"]) == (1, 1)
    assert s["best_sd"] == pytest.approx(1.0) and s["seeds_per_cell"] == 3
    assert not needs_more_seeds(THREE_SEEDS)


def test_expected_best_of_k_by_hand():
    curve = expected_best_of_k([3, 1, 4, 2])
    # k=1: the mean; k=2: sum v_i((i/4)^2 - ((i-1)/4)^2) = (1 + 6 + 15 + 28) / 16; k=4: 926 / 256
    assert curve[0] == pytest.approx(2.5)
    assert curve[1] == pytest.approx(50 / 16)
    assert curve[3] == pytest.approx(926 / 256)
    assert all(b >= a for a, b in zip(curve, curve[1:]))


def test_unfinished_trials_are_left_out_and_diverged_kept():
    t = ONE_SEED.copy()
    t.loc[0, "status"] = "RUNNING"
    df = scored(t, "test_acc_at_best_val")
    assert len(df) == len(t) - 1
    assert df[df["diverged"] == 1]["score"].tolist() == [10.0]
