"""Selection, paired statistics and robustness metrics against hand-made tables worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.analyse.analysis import MASS_ARM, best_cells, expected_best_of_k, grid, scored, summarize
from study.define.claims import CLAIMS, SeedGrids, per_seed
from study.analyse.paired import adjust, compare_cells, holm, paired_difference, paired_p
from study.analyse.verdict import difference, verdict, verdict_parts


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
    assert wd["best"] == pytest.approx(95.0) and wd["best_cell_test"] == pytest.approx(95.0)  # not the test-best 99
    # the grid mean is over λ > 0 cells only: λ = 0 is one trial shared by every arm
    assert wd["grid_mean"] == pytest.approx((80 + 99) / 2)


def grids(test, val=None, wds=(0.0, 1.0, 10.0)):
    """SeedGrids of hand-made [arm][seed][lr][λ] test (and validation) accuracies, in points."""
    test = np.array(test, float)
    return SeedGrids(np.array(val if val is not None else test, float), test, np.array(wds))


def test_each_claim_worked_out_by_hand():
    # one arm, one seed; rows η1, η2; columns λ = 0, 1, 10. Validation prefers (η2, λ=1); test there is 90
    test = [[[[80, 85, 70], [88, 90, 60]]]]
    val = [[[[80, 86, 71], [88, 91, 60]]]]
    stat = per_seed(grids(test, val))
    assert stat["best"][0, 0] == 90  # the validation-best cell of the whole grid, read on test
    # λ-regret: each η's best λ > 0 on validation (η1: λ=1 at 85; η2: λ=1 at 90), mean loss over λ > 0
    assert stat["lambda_regret"][0, 0] == pytest.approx(((85 - 85) + (85 - 70) + (90 - 90) + (90 - 60)) / 4)
    # at the best η only (η2)
    assert stat["lambda_regret_best_lr"][0, 0] == pytest.approx(((90 - 90) + (90 - 60)) / 2)
    assert stat["decay_spread"][0, 0] == pytest.approx(30)
    assert stat["grid_mean"][0, 0] == pytest.approx((85 + 70 + 90 + 60) / 4)
    assert stat["lambda_width"][0, 0] == 0.0  # only λ = 1 is within 1 pt of 90
    wide = per_seed(grids([[[[80, 85, 70], [88, 90, 89.5]]]], val))
    assert wide["lambda_width"][0, 0] == pytest.approx(1.0)  # λ = 1 to 10: one decade
    # near-optimal area: λ > 0 cells within 2 pt of the best cell of any arm (90): 90 only
    assert stat["near_optimal_2pt"][0, 0] == pytest.approx(1 / 4)


def test_a_uniform_shift_is_better_and_not_more_robust():
    rng = np.random.default_rng(0)
    base = rng.uniform(60, 95, (1, 4, 3, 3))
    shifted = base + np.array([0, 1.5, 1.5])  # +1.5 on every λ > 0 cell, λ = 0 shared as it is
    stat = per_seed(grids(np.concatenate([base, shifted])))
    for name, claim in CLAIMS.items():
        diff = stat[name][1] - stat[name][0]
        if claim.question == "more_robust":
            assert diff == pytest.approx(np.zeros(4), abs=1e-9), name
    assert stat["grid_mean"][1] - stat["grid_mean"][0] == pytest.approx(np.full(4, 1.5))


def test_ties_within_one_image_share_the_choice():
    test = [[[[50, 80, 60]]]]
    val = [[[[0.5, 0.9 + 1e-13, 0.9]]]]  # equal but for floating point
    assert per_seed(grids(test, val))["best"][0, 0] == pytest.approx(70)
    cells_ = pd.DataFrame({"val": [90.0, 90.0 + 1e-12, 80.0], "mean": [1.0, 2.0, 3.0]})
    assert len(best_cells(cells_)) == 2


def test_an_incomplete_grid_has_no_statistic_and_its_seed_is_dropped_from_both_arms():
    rng = np.random.default_rng(1)
    cells = {}
    for arm, gap in (("wd", 0.0), ("lpwd", 0.5)):
        for lr in (1e-3, 1e-2):
            for wd in (0.0, 1.0, 3.0):
                cells[(arm, lr, wd)] = list((rng.normal(90, 1, 4) + gap * (wd > 0)) / 100)
    t = table(cells)
    t.loc[(t["arm"] == "lpwd") & (t["lr"] == 1e-2) & (t["weight_decay"] == 3.0) & (t["seed"] == 2), "status"] = "ERROR"
    s = by_arm(summarize(t))
    lp = s["lpwd"]
    assert lp["dropped_seeds"] == [2] and lp["n_best"] == 3 and lp["n_lambda_regret"] == 3
    # the quoted values are over the paired seeds, so they subtract to the difference
    assert lp["best_paired"] - lp["best_baseline_paired"] == pytest.approx(lp["diff_best"])
    assert "Seed 2 dropped from this comparison" in verdict(summarize(t))


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
    assert s["wd"]["diverged_cells"] == 1 and s["wd"]["grid_mean"] == pytest.approx((80 + 10) / 2)
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
    # one test image of difference on every seed: equal only up to floating point, still zero spread
    one_image = np.array([(k + 1) / 359 - k / 359 for k in (300, 310, 340)]) * 100
    assert np.ptp(one_image) > 0 and paired_p(one_image, "t") == pytest.approx(0.25)
    d = paired_difference(one_image)
    assert d.lo == d.hi == pytest.approx(100 / 359) and d.p == pytest.approx(0.25)


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
    cmp = compare_cells(grid(df), "wd", "t", "holm")
    raw = compare_cells(grid(df), "wd", "t", "none")
    tested = raw["p"].notna()
    # λ = 0 is one shared trial: listed, never tested, not in the family
    assert (cmp["shared"] == (cmp["weight_decay"] == 0)).all() and tested.tolist() == (~cmp["shared"]).tolist()
    assert cmp["p_adj"][tested].tolist() == pytest.approx(holm(raw["p"][tested].to_numpy()).tolist())
    assert (cmp["p_adj"][tested] >= cmp["p"][tested]).all()
    best = cmp[(cmp["lr"] == 1e-3) & (cmp["weight_decay"] == 0.1)].iloc[0]
    assert best["significant"] and best["diff"] == pytest.approx(1.22, abs=0.01)
    assert best["ci_low"] < best["diff"] < best["ci_high"]


def test_the_cell_family_spans_every_arm_of_the_page():
    rng = np.random.default_rng(2)
    cells = {(arm, lr, wd): list(rng.normal(0.9, 0.01, 4)) for arm in ("wd", "pwd", "lpwd")
             for lr in (1e-3, 1e-2) for wd in (0.0, 1.0)}
    g = grid(scored(table(cells), "test_acc_at_best_val"))
    cmp = compare_cells(g, "wd", "t", "holm")
    tested = cmp[cmp["p"].notna()]
    assert len(tested) == 4 and set(tested["arm"]) == {"pwd", "lpwd"}
    assert tested["p_adj"].tolist() == pytest.approx(holm(tested["p"].to_numpy()).tolist())


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


def test_a_difference_is_printed_as_its_own_rounded_value():
    # 96.94 vs 96.36: the difference is 0.58 and reads +0.6 (one number per claim, the JSON's), never
    # the difference of the rounded means (96.9 − 96.4 = 0.5)
    assert difference("best", 0.58, 0.03, 1.1).startswith("+0.6 pt")
    # an endpoint that is not 0 never reads as 0
    assert "[+0.03, +1.1]" in difference("best", 0.58, 0.03, 1.1)


def robust_study(rng, seeds, level=0.0, recover=0.0, arms=("wd", "lpwd")):
    from study.analyse.simulate import Scenario, simulate

    return simulate(Scenario("hand", arms=arms, level=level, recover=recover), seeds, rng)


def test_too_few_seeds_cannot_show_anything_and_says_how_many_are_needed():
    s = summarize(robust_study(np.random.default_rng(0), 2, recover=0.5))
    lp = by_arm(s)["lpwd"]
    assert lp["answer_better"] == lp["answer_more_robust"] == "cannot be shown"
    assert math.isnan(lp["diff_best_lo"]) and math.isnan(lp["best_lo"])
    assert "cannot be shown with 2 seeds: the paired test needs 3 (run 1 more seed)" in verdict(s)


def test_the_verdict_answers_each_question_from_its_primary_claim():
    rng = np.random.default_rng(3)
    # a large robustness effect at large λ: more robust, shown
    s = summarize(robust_study(rng, 6, recover=0.5), effective_decay={"wd": 1.0, "lpwd": 0.67})
    lp = by_arm(s)["lpwd"]
    assert lp["answer_more_robust"] == "shown" and lp["diff_lambda_regret"] < 0
    parts = verdict_parts(s, {"dataset": "digits", "base optimizer": "adam"})
    assert parts[0].startswith("LPWD vs AdamW (wd): better? ") and "more robust to λ? shown (λ-regret " in parts[0]
    a, b = lp["lambda_regret_paired"], lp["lambda_regret_baseline_paired"]
    assert f"{a:.1f} pt vs {b:.1f} pt" in parts[1]
    assert f"Holm-adjusted p = {lp['p_adj_more_robust']:.3f}" in parts[1] or lp["p_adj_more_robust"] < 0.001
    assert "Exploratory, not claims" in parts[1] and "67% of wd's total decay" in parts[-1]
    # a uniform level shift is better, and never more robust
    s = summarize(robust_study(rng, 10, level=4.0))
    lp = by_arm(s)["lpwd"]
    assert lp["answer_better"] == "shown" and lp["answer_more_robust"] == "not shown"
    assert lp["diff_lambda_regret_lo"] <= 0 <= lp["diff_lambda_regret_hi"]
    # worse on the primary claim is said as such (a worse level alone would not be: tuning picks λ = 0)
    s = summarize(robust_study(rng, 10, recover=-0.5))
    assert by_arm(s)["lpwd"]["answer_more_robust"] == "shown worse"


def test_answers_are_holm_corrected_across_the_arms():
    rng = np.random.default_rng(4)
    s = summarize(robust_study(rng, 5, arms=("wd", "pwd", "lpwd", "cwd")))
    others = s[s["arm"] != "wd"]
    from study.analyse.paired import holm as holm_
    assert others["p_adj_better"].tolist() == pytest.approx(holm_(others["p_best"].to_numpy()).tolist())


def test_the_decomposition_gives_the_edge_to_decay_mass_when_mass_explains_it():
    """pwd at lpwd's decay mass behaving exactly as lpwd: layer shape 0, decay mass all of lpwd's edge."""
    rng = np.random.default_rng(5)
    sim = robust_study(rng, 6, recover=0.5)  # lpwd more robust than wd
    pwd = sim[sim["arm"] == "wd"].assign(arm="pwd", variant="pwd")  # pwd no different from wd
    mass = sim[sim["arm"] == "lpwd"].assign(arm=MASS_ARM, variant="pwd")
    s = summarize(pd.concat([sim, pwd, mass]))
    d = s.attrs["decomposition"]["claims"]["more_robust"]
    assert d["parts"]["layer shape"]["diff"] == 0 and d["seeds"] == 6
    assert d["mass_share"]["bounded"] and d["mass_share"]["ratio"] == pytest.approx(1.0)
    assert d["mass_share"]["lo"] == pytest.approx(1.0) and d["mass_share"]["hi"] == pytest.approx(1.0)
    total = sum(p["diff"] for p in d["parts"].values())
    assert total == pytest.approx(d["total"]["diff"])
    text = verdict(s)
    assert "of the λ-regret edge over pwd, 100% [100%, 100%] is mass" in text and "layer shape +0.0 pt" in text
    # λ by λ: the split holds in every cell, and where lpwd has an edge (the two largest λ) mass carries it
    cells = s.attrs["decomposition"]["cells"]
    assert cells["lambdas"] == [1.0, 3.0, 10.0, 30.0]
    for j in range(4):
        parts = sum(cells["parts"][p]["diff"][j] for p in ("placement", "decay mass", "layer shape"))
        assert parts == pytest.approx(cells["parts"]["total"]["diff"][j])
    assert cells["reading"][2:] == ["mostly decay mass"] * 2
    assert "at λ = 10, 30 matching the mass closes most of it" in text


def test_a_training_curve_has_each_epoch_once_after_a_resume(tmp_path):
    """An interrupted trial's result.json repeats the epochs it retrained and a replayed final report."""
    import json

    from study.present.report import trial_history

    row = {"experiment": "grid", "trial_id": "t_00000"}
    folder = tmp_path / "grid" / "t_00000"
    folder.mkdir(parents=True)
    reported = [(0, 0.1), (1, 0.2), (2, 0.25), (1, 0.21), (2, 0.3), (3, 0.4), (3, 0.4)]  # resumed from epoch 0
    (folder / "result.json").write_text("".join(json.dumps({"epoch": e, "val_acc": a}) + "\n" for e, a in reported))
    history = trial_history(tmp_path, row)
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert history["val_acc"].tolist() == [0.1, 0.21, 0.3, 0.4]  # the retrained epoch's report stands
    assert trial_history(tmp_path, {**row, "trial_id": "never_reported"}) is None


def test_a_report_cut_short_by_a_hard_kill_is_skipped_by_every_reader(tmp_path):
    """``status``, ``report`` and the table rebuild read result.json alike: the complete reports stand."""
    import json

    from study.present.report import trial_history
    from study.store.table import rebuilt_rows

    row = {"experiment": "grid", "trial_id": "t_00000"}
    folder = tmp_path / "grid" / "t_00000"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"cell": {"variant": "wd", "lr": 0.01, "weight_decay": 1.0,
                                                             "seed": 0}}))
    complete = [{"epoch": e, "val_acc": 0.1 * (e + 1), "finished": 0} for e in range(3)]
    lines = [json.dumps(r) for r in complete]
    (folder / "result.json").write_text("\n".join(lines) + "\n" + lines[-1][:17])  # the kill cut the next one
    assert trial_history(tmp_path, row).to_dict("records") == complete
    rebuilt = rebuilt_rows(folder, {})
    assert rebuilt and all(r["epochs_done"] == 3 and r["status"] == "INTERRUPTED" for r in rebuilt)


def test_seeds_without_a_complete_grid_are_named_as_the_reason_nothing_can_be_shown():
    """Enough seeds, but too few of them complete for both arms (errored trials, or an Optuna search)."""
    t = robust_study(np.random.default_rng(6), 4, recover=0.5)
    gaps = (t["arm"] == "lpwd") & (t["lr"] == t["lr"].max()) & (t["weight_decay"] == 1.0) & (t["seed"] >= 2)
    t.loc[gaps, "status"] = "ERROR"
    s = summarize(t)
    assert by_arm(s)["lpwd"]["answer_more_robust"] == "cannot be shown"
    assert "cannot be shown: 2 of 4 seeds have a complete grid for both arms, and the paired test needs 3" in verdict(s)


NUMBER = r"([+−-]?\d+(?:\.\d+)?)"
UNIT = r"(?: pt|% of cells| decades)"


def _agrees(text: str, value: float, scale: float) -> bool:
    """A printed number is the JSON value rounded to the digits it shows."""
    digits = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text.replace("−", "-")) - scale * value) <= 0.5 * 10 ** -digits + 1e-9


def test_every_number_in_the_headline_and_bullets_is_the_json_value():
    """Over many synthetic studies (five arms, controls included, several effects and seed counts): each
    claim's 'a vs b, diff [lo, hi]' in the per-arm bullets and each primary difference in the headline
    parse back to robustness.json's values at the printed precision."""
    import re

    from study.present.report import answers_json
    from study.analyse.simulate import SHAPES, Scenario, simulate

    arms = ("wd", "pwd", "lpwd", "cwd", MASS_ARM)
    checked = 0
    for i in range(24):
        rng = np.random.default_rng(100 + i)
        scenario = Scenario("mixed", arms=arms, level=tuple(rng.uniform(-1, 1, 5) * [0, 1, 1, 1, 1]),
                            recover=tuple(rng.uniform(-0.2, 0.5, 5) * [0, 1, 1, 1, 1]))
        shape = list(SHAPES.values())[i % len(SHAPES)]
        s = summarize(simulate(scenario, (3, 5, 10)[i % 3], rng, shape))
        parts = verdict_parts(s)
        out = answers_json(s, parts)
        for comp in out["comparisons"]:
            bullet = next(p for p in parts[1:] if p.startswith(f"{comp['arm']} vs ") or
                          p.startswith(f"{comp['arm']} (control) vs "))
            for name, c in CLAIMS.items():
                numbers = comp["claims"][name]
                if numbers["lo"] is None:
                    continue
                scale = 100.0 if c.unit == "share" else 1.0
                pattern = (re.escape(c.label) + r":? " + NUMBER + UNIT + " vs " + NUMBER + UNIT + ", " + NUMBER + UNIT
                           + r" \[" + NUMBER + ", " + NUMBER + r"\]")
                found = re.search(pattern, bullet)
                assert found, (name, bullet)
                for text, key in zip(found.groups(), ("arm", "baseline", "diff", "lo", "hi")):
                    assert _agrees(text, numbers[key], scale), (name, key, text, numbers[key])
                checked += 1
            if comp["arm"] == "lpwd":
                for question, name in s.attrs["primary"].items():
                    numbers = comp["claims"][name]
                    if numbers["lo"] is None:
                        continue
                    found = re.search(re.escape(CLAIMS[name].short) + " " + NUMBER + UNIT + r" \[" + NUMBER + ", "
                                      + NUMBER + r"\]", out["headline"])
                    assert found, out["headline"]
                    for text, key in zip(found.groups(), ("diff", "lo", "hi")):
                        assert _agrees(text, numbers[key], 1.0), (name, key, text, numbers[key])
    assert checked > 24 * 4 * 5  # most claims of most arms had an interval to check


def test_controls_never_change_a_contenders_answer():
    """Holm's family is the contenders (``verdict.arms``); a control (pwd@lpwd-mass) is reported with its
    uncorrected p and no answer, and running it or not leaves lpwd's answer and p-value as they are."""
    rng = np.random.default_rng(8)
    sim = robust_study(rng, 5, recover=0.15)
    mass = robust_study(np.random.default_rng(9), 5, recover=0.6)
    mass = mass[mass["arm"] == "lpwd"].assign(arm=MASS_ARM, variant="pwd")
    alone, with_control = by_arm(summarize(sim)), by_arm(summarize(pd.concat([sim, mass])))
    assert with_control["lpwd"]["p_adj_more_robust"] == alone["lpwd"]["p_adj_more_robust"]
    assert with_control["lpwd"]["answer_more_robust"] == alone["lpwd"]["answer_more_robust"]
    assert with_control[MASS_ARM]["answer_more_robust"] == "control"
    assert "pwd@lpwd-mass (control) vs AdamW (wd): better? not asked of a control" in verdict(
        summarize(pd.concat([sim, mass])), {"base optimizer": "adam"})
    # declared into the family, it is Holm-corrected with lpwd
    both = by_arm(summarize(pd.concat([sim, mass]), family=["lpwd", MASS_ARM]))
    raw = [both["lpwd"]["p_lambda_regret"], both[MASS_ARM]["p_lambda_regret"]]
    assert [both["lpwd"]["p_adj_more_robust"], both[MASS_ARM]["p_adj_more_robust"]] == pytest.approx(holm(raw).tolist())
    assert both[MASS_ARM]["answer_more_robust"] == "shown"


def test_a_shape_claim_on_one_decaying_lambda_cannot_be_shown():
    """With one λ > 0 the λ-regret is 0 by construction: 'cannot be shown', saying why, never '+0.0, p = 1'."""
    from study.analyse.simulate import Scenario, Shape, simulate

    one = Shape(wds=(0.0, 10.0), surface=np.array([[89.5, 88.8], [95.1, 94.4], [96.7, 82.9], [96.2, 69.2]]))
    s = summarize(simulate(Scenario("hand", recover=0.5), 5, np.random.default_rng(0), one))
    lp = by_arm(s)["lpwd"]
    assert lp["answer_more_robust"] == "cannot be shown" and lp["answer_better"] in ("shown", "not shown",
                                                                                      "shown worse")
    assert "more robust to λ? cannot be shown: the grid has 1 λ > 0 value, and λ-regret needs 2" in verdict(s)


def test_level_intervals_stay_within_what_the_quantity_can_be():
    """Near the ceiling a t-interval of a tuned accuracy would reach past 100: it is clipped there, marked."""
    from study.present.report import CLIPPED, display_table
    from study.analyse.simulate import SHAPES, Scenario, simulate

    clipped = 0
    for i in range(6):
        s = summarize(simulate(Scenario("hand"), 3, np.random.default_rng(i), SHAPES["ceiling"]))
        for _, r in s.iterrows():
            for name, c in CLAIMS.items():
                lo, hi = c.bounds(np.array([1.0, 3.0, 10.0, 30.0]))
                if np.isfinite(r[f"{name}_lo"]):
                    assert lo <= r[f"{name}_lo"] <= r[f"{name}_hi"] <= hi, (name, r[f"{name}_lo"], r[f"{name}_hi"])
            clipped += int(r["best_clipped"])
        if any(s["best_clipped"]):
            assert CLIPPED in " ".join(display_table(s).astype(str).to_numpy().ravel())
    assert clipped > 0


def test_the_scope_line_names_the_arm_that_is_missing():
    rng = np.random.default_rng(2)
    sim = robust_study(rng, 5, recover=0.3)
    mass = sim[sim["arm"] == "lpwd"].assign(arm=MASS_ARM, variant="pwd")
    text = verdict(summarize(pd.concat([sim, mass]), effective_decay={"wd": 1.0, "lpwd": 0.67, MASS_ARM: 0.67}))
    assert "add the pwd arm (search.variants) to measure" in text and "add the pwd@lpwd-mass control" not in text


def test_near_tied_differences_are_monotone_and_floored_at_one_image():
    """Five seeds that differ by one image each are not *more* evidence than four by one and one by two,
    and a study whose seeds all tie has an interval around 0 (the rounding of one image), not a point."""
    h = 100 / 359
    equal = paired_difference(np.full(5, h), resolution=h)
    double = paired_difference(np.array([h, h, h, h, 2 * h]), resolution=h)
    assert equal.p >= double.p and equal.se == pytest.approx(h / np.sqrt(30))
    tied = paired_difference(np.zeros(5), resolution=h)
    assert tied.p == 1.0 and tied.lo < 0 < tied.hi and tied.se == pytest.approx(h / np.sqrt(30))
    # the step is read from the trials' own accuracies
    from study.analyse.analysis import resolution_of

    assert resolution_of(np.array([3, 17, 200, 201]) / 359 * 100) == pytest.approx(h)
    assert resolution_of(np.array([0.1, 0.25, 0.7777])) == 0.0


def test_non_finite_accuracies_are_missing_trials_without_warnings():
    """NaN or ±inf in a table (hand-edited, damaged) is a trial without a number: its seed leaves the
    comparisons that need it, the verdict says so, and numpy prints nothing."""
    import warnings

    from study.analyse.simulate import SCENARIOS, simulate

    t = simulate(SCENARIOS["null"], 5, np.random.default_rng(0))
    t.loc[3, "test_acc_at_best_val"] = np.nan
    t.loc[7, "test_acc_at_best_val"] = np.inf
    t.loc[9, "best_val_acc"] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize(t)
        text = verdict(s)
    assert by_arm(s)["lpwd"]["dropped_seeds"] and "dropped from this comparison" in text
