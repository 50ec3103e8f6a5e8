"""``study compare`` on hand-made studies with known answers, through the real CLI.

Each study dir is made as ``study run`` makes one (``prepare_study_dir``), and its
``trials.csv`` holds a simulated grid (``study.analyse.simulate``) whose truth is known: the
treated arms recover part of what the baseline loses at the largest λ (more robust), or
lose more (less robust), or do the same.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageStat

from study.define.config import validate
from study.analyse.simulate import QUICK_LRS, QUICK_SURFACE, QUICK_WDS, SCENARIOS, Scenario, Shape, simulate
from study.run.sweep import prepare_study_dir
from study.store.table import COLUMNS, write_rows

from .conftest import PYTHON, layout_in_chromium, shows_a_traceback, study_env

ARMS = ("wd", "pwd", "lpwd")
ROBUST = replace(SCENARIOS["robust"], arms=ARMS, recover=0.5)
LESS_ROBUST = replace(SCENARIOS["robust"], arms=ARMS, recover=-0.3)
SAME = Scenario("null", arms=ARMS)


def hand_made_study(root, name: str, scenario: Scenario, seeds: int = 5, rng_seed: int = 0, shape: Shape = Shape(),
                    edit=None, base: str = "adam"):
    """A study dir as ``study run`` leaves it, with a simulated grid of known truth as its trials
    (``edit``: a function that changes that table first)."""
    cfg = validate({"name": name, "storage": str(root), "tracking": {"enabled": False}, "train": {"base": base},
                    "search": {"variants": list(scenario.arms), "layer_schedule": ["linear"], "lr": list(QUICK_LRS),
                               "weight_decay": list(QUICK_WDS), "seeds": list(range(seeds))}})
    study_dir = prepare_study_dir(cfg)
    table = simulate(scenario, seeds, np.random.default_rng(rng_seed), shape)
    if edit:
        table = edit(table)
    rows = []
    for i, r in enumerate(table.to_dict("records")):
        row = dict.fromkeys(COLUMNS, "")
        row.update(r, trial_id=f"{name}-{i:05d}", experiment="grid", layer_schedule="linear" if r["arm"] == "lpwd"
                   else "constant", base=base, model="small_cnn", epochs_done=10, shared=0)
        rows.append(row)
    write_rows(study_dir, rows)
    return study_dir


def compare_cli(dirs, out, *extra):
    return subprocess.run([PYTHON, "-m", "study", "compare", *map(str, dirs), "--out", str(out), "--no-tracking", *extra],
                          cwd=out.parent, env=study_env(), capture_output=True, text=True, timeout=300)


def compared(dirs, arms=None) -> dict:
    """The comparison of these study dirs, in this process (the CLI is tested below)."""
    from study.analyse.compare import compare
    from study.present.comparison import load

    return compare([load(str(d)) for d in dirs], arms)


def test_studies_that_agree_pool_to_shown(tmp_path):
    dirs = [hand_made_study(tmp_path / "s", f"agree{i}", ROBUST, rng_seed=i) for i in range(3)]
    result = compared(dirs)
    p = result["pooled"]["lpwd"]["more_robust"]
    # every study recovers half of wd's loss at the two largest λ: lower λ-regret, in each and pooled
    assert p["answer"] == "shown" and p["hi"] < 0 and p["positive"] == 0 and p["negative"] == 3
    assert p["settings_by_answer"]["shown"] == ["agree0", "agree1", "agree2"]
    assert "more robust to λ? 3 shown, 0 shown worse, 0 not shown of 3 settings" in " ".join(result["parts"])


def test_settings_on_several_bases_are_pooled_per_base_as_well(tmp_path):
    from study.present.comparison import markdown_summary, table

    dirs = [hand_made_study(tmp_path / "s", f"adam{i}", ROBUST, rng_seed=20 + i) for i in range(3)]
    dirs += [hand_made_study(tmp_path / "s", f"lion{i}", SAME, rng_seed=30 + i, base="lion") for i in range(2)]
    result = compared(dirs)
    adam, lion = (result["by_base"][b]["lpwd"]["more_robust"] for b in ("adam", "lion"))
    # the robust Adam settings pool to shown on their own; the two null Lion settings do not
    assert adam["answer"] == "shown" and adam["k"] == 3 and adam["settings_by_answer"]["shown"] == ["adam0", "adam1", "adam2"]
    assert lion["answer"] == "not shown" and lion["k"] == 2 and lion["lo"] < 0 < lion["hi"]
    assert result["baseline_name"] == "wd (each base's own decoupled decay)"
    words = " ".join(result["parts"])
    assert "LPWD per base optimizer" in words and "Adam, 3 settings: better?" in words and "Lion, 2 settings:" in words
    rows = table(result)
    assert {"pooled", "pooled: Adam", "pooled: Lion"} <= set(rows["study"])
    assert "| pooled: Lion |" in markdown_summary(result)


def test_studies_that_disagree_are_not_pooled_into_a_claim(tmp_path):
    dirs = [hand_made_study(tmp_path / "s", "up0", ROBUST, rng_seed=1),
            hand_made_study(tmp_path / "s", "up1", ROBUST, rng_seed=2),
            hand_made_study(tmp_path / "s", "down0", LESS_ROBUST, rng_seed=3),
            hand_made_study(tmp_path / "s", "down1", LESS_ROBUST, rng_seed=4)]
    result = compared(dirs)
    p = result["pooled"]["lpwd"]["more_robust"]
    assert p["settings_by_answer"]["shown"] == ["up0", "up1"]
    assert p["settings_by_answer"]["shown worse"] == ["down0", "down1"]
    # two settings each way: large heterogeneity, an interval that spans 0, no pooled claim
    assert p["answer"] == "not shown" and p["lo"] < 0 < p["hi"] and p["i2"] > 0.9
    assert "shown worse in down0, down1" in " ".join(result["parts"])


def test_a_level_shift_is_not_robustness(tmp_path):
    level = replace(SCENARIOS["level"], arms=ARMS, level=6.0)
    lower = Shape(surface=QUICK_SURFACE - 15)  # 6 points up is not clipped at 100
    dirs = [hand_made_study(tmp_path / "s", f"level{i}", level, rng_seed=10 + i, shape=lower) for i in range(4)]
    p = compared(dirs, ["lpwd"])["pooled"]["lpwd"]
    assert p["better"]["answer"] == "shown" and p["more_robust"]["answer"] == "not shown"


def test_a_study_missing_an_arm_is_refused_in_one_line(tmp_path):
    dirs = [hand_made_study(tmp_path / "s", "full", SAME),
            hand_made_study(tmp_path / "s", "nolpwd", replace(SAME, arms=("wd", "pwd")))]
    out = tmp_path / "cmp"
    done = compare_cli(dirs, out)
    assert done.returncode == 2 and not shows_a_traceback(done.stderr)
    assert done.stderr.strip().splitlines() == [
        f"error: compare: {dirs[1]} has no arm lpwd (its arms: wd, pwd); rerun it with that arm, or compare --arms pwd"]
    assert not out.exists()  # nothing written before the check
    assert compared(dirs, ["pwd"])["arms"] == ["pwd"]


def test_a_copied_study_is_one_study_and_an_out_file_is_refused_in_one_line(tmp_path):
    import shutil

    original = hand_made_study(tmp_path / "s", "original", SAME)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    out = tmp_path / "cmp"
    done = compare_cli([original, copy], out)
    assert done.returncode == 2 and not shows_a_traceback(done.stderr)
    assert done.stderr.strip().splitlines() == [
        f"error: compare: {copy} and {original} are one study (the same trials, one a copy of the other); list it once"]
    assert not out.exists()
    other = hand_made_study(tmp_path / "s", "other", SAME, rng_seed=1)
    out.write_text("not a folder")
    done = compare_cli([original, other], out)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: --out {out} is a file; give a folder for compare.html and its files (default ./comparison)"]


def test_a_study_with_two_seeds_is_refused(tmp_path):
    from study.errors import UserError

    dirs = [hand_made_study(tmp_path / "s", "five", SAME), hand_made_study(tmp_path / "s", "two", SAME, seeds=2)]
    with pytest.raises(UserError, match="each study needs 3 seeds"):
        compared(dirs)


@pytest.mark.parametrize("width", [800, 1400])
def test_compare_page_fits_the_window(tmp_path_factory, chromium, tmp_path, width):
    root = tmp_path_factory.getbasetemp() / "page"
    out = root / "cmp"
    if not (out / "compare.html").exists():
        dirs = [hand_made_study(root / "s", f"setting{i}", ROBUST, rng_seed=20 + i) for i in range(3)]
        assert compare_cli(dirs, out).returncode == 0
    layout, dom = layout_in_chromium(chromium, out / "compare.html", width, tmp_path)
    assert layout["view"] == width and layout["page"] <= width, layout
    assert len(layout["figs"]) >= 2 and max(layout["figs"]) <= width, layout  # both forest plots drawn, inside
    assert "<details>" in dom and "Verdict, arm by arm" in dom and "pooled" in dom  # the answer first, the rest folded
    assert not layout["clipped"], layout["clipped"]  # forest titles whole
    assert min(min(sizes) for sizes in layout["fonts"].values()) >= 12, layout["fonts"]
    assert layout["scrolls"] == 0, "the per-study table scrolls sideways"
    if width < 1400:
        return
    for png in ("forest_better.png", "forest_more_robust.png"):
        img = Image.open(out / png).convert("L")
        assert img.size[0] == 1100 and ImageStat.Stat(img).stddev[0] > 5
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p2'}",
                    f"--window-size={width},1600", "--virtual-time-budget=10000", f"--screenshot={shot}",
                    (out / "compare.html").as_uri()], capture_output=True, timeout=120)
    assert ImageStat.Stat(Image.open(shot).convert("L")).stddev[0] > 10


def test_a_setting_whose_seeds_all_tie_is_pooled_with_the_one_image_floor(tmp_path):
    """Both arms choosing the same trials on every seed (difference exactly 0) gives a standard error of
    one test image's rounding, h/√(6n), not 0: the setting is pooled, and one image more on one seed
    changes its weight a little, not from nothing to most of the pool."""
    from study.analyse.compare import compare
    from study.present.comparison import load

    h = 1 / 359

    def tie(table, bump=0.0):
        wd = table[table["arm"] == "wd"].set_index(["lr", "weight_decay", "seed"])
        lp = table["arm"] == "lpwd"
        keys = list(zip(table.loc[lp, "lr"], table.loc[lp, "weight_decay"], table.loc[lp, "seed"]))
        for col in ("best_val_acc", "test_acc_at_best_val"):
            table.loc[lp, col] = wd.loc[keys, col].to_numpy()
        table.loc[lp & (table["seed"] == 0), "test_acc_at_best_val"] += bump
        return table

    others = [load(str(hand_made_study(tmp_path / "s", f"robust{i}", ROBUST, rng_seed=30 + i))) for i in range(2)]
    tied = load(str(hand_made_study(tmp_path / "s", "tied", ROBUST, rng_seed=40, edit=tie)))
    nudged = load(str(hand_made_study(tmp_path / "s", "nudged", ROBUST, rng_seed=40, edit=lambda t: tie(t, h))))
    floor = 100 * h / np.sqrt(6 * 5)
    se_tied = tied.comparison("lpwd")["claims"]["best"]["se"]
    se_nudged = nudged.comparison("lpwd")["claims"]["best"]["se"]
    assert se_tied == pytest.approx(floor) and floor <= se_nudged <= 1.2 * floor
    for setting in (tied, nudged):
        p = compare([*others, setting])["pooled"]["lpwd"]["better"]
        assert p["left_out"] == [] and p["k"] == 3 and p["lo"] < p["hi"]


def p_seeds(result) -> tuple[int, int]:
    p = result["pooled"]["lpwd"]["better"]
    return p["tuned_off_seeds"], p["paired_seeds"]


def test_a_setting_whose_arms_both_tune_decay_off_leaves_the_better_pool(tmp_path):
    """Where λ > 0 only hurts, every seed's tuned cell is λ = 0 for both arms: one shared trial, a
    difference of 0 by construction and no spread. The study answers "better?" with "cannot be shown"
    and why, keeps its robustness answer, and ``compare`` pools "better?" over the other settings only,
    saying which it left out, instead of letting the one-image floor outweigh them all."""
    surface = QUICK_SURFACE.copy()
    surface[:, 1:] -= 8.0  # every λ > 0 cell well below the λ = 0 trial
    others = [hand_made_study(tmp_path / "s", f"robust{i}", ROBUST, rng_seed=50 + i) for i in range(3)]
    off = hand_made_study(tmp_path / "s", "off", ROBUST, rng_seed=60, shape=Shape(surface=surface))
    report = subprocess.run([PYTHON, "-m", "study", "report", str(off), "--json"], env=study_env(),
                            capture_output=True, text=True, timeout=300)
    import json

    lpwd = next(c for c in json.loads(report.stdout)["comparisons"] if c["arm"] == "lpwd")
    assert lpwd["answers"] == {"better": "cannot be shown", "more_robust": "shown"}
    best = lpwd["claims"]["best"]
    assert best["tuned_off"] and best["diff"] == 0 and best["lo"] is None and best["se"] is None
    assert "tuning turns decay off for both arms" in json.loads(report.stdout)["headline"]

    def off_seeds(study_dir) -> int:  # written apart from the claims code: each seed's argmax cells per arm
        from study.store.table import read_rows
        import pandas as pd

        t = pd.DataFrame(read_rows(study_dir))
        t = t[t["arm"].isin(["wd", "lpwd"])].astype({"best_val_acc": float, "weight_decay": float, "seed": int})
        count = 0
        for _, seed in t.groupby("seed"):
            at_zero = [bool((g.loc[g["best_val_acc"] >= g["best_val_acc"].max() - 1e-9, "weight_decay"] == 0).all())
                       for _, g in seed.groupby("arm")]
            count += all(at_zero)
        return count

    from study.present.comparison import load

    for d in (*others, off):
        assert load(str(d)).comparison("lpwd")["claims"]["best"]["tuned_off_seeds"] == off_seeds(d), d
    with_off, without = compared([*others, off]), compared(others)
    assert p_seeds(with_off) == (sum(off_seeds(d) for d in others), 15)
    p, q = with_off["pooled"]["lpwd"]["better"], without["pooled"]["lpwd"]["better"]
    assert p["tuned_off"] == p["left_out"] == ["off"] and p["k"] == 3
    assert p["settings_by_answer"]["cannot be shown"] == ["off"]
    assert (p["estimate"], p["lo"], p["hi"]) == pytest.approx((q["estimate"], q["lo"], q["hi"]))
    assert with_off["pooled"]["lpwd"]["more_robust"]["k"] == 4  # its robustness is pooled as before
    result = compare_cli([*others, off], tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "off left out of the pooled estimate (tuning turns decay off for both arms" in text
    k, n = p_seeds(with_off)
    assert (f"both arms tune decay off on {k} of {n} paired seeds pooled" in text) == (k > 0)
