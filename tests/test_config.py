"""The study's trial plan: arms, the layer-schedule ablation, shared identical trials, flagged cells."""

from pathlib import Path

from study.config import arms, load_config, planned_trials, sign_flipping_cells, trained_grid, trial_grid, validate

QUICK = Path(__file__).parents[1] / "configs" / "quick.yaml"


def test_schedule_ablation_is_one_study_and_plain_variants_run_once():
    cfg = validate({"search": {"variants": ["wd", "pwd", "lpwd"], "layer_schedule": ["linear", "inverse", "constant"]}})
    assert [a["arm"] for a in arms(cfg)] == ["wd", "pwd", "lpwd", "lpwd:inverse", "lpwd:constant"]
    assert validate({"search": {"layer_schedule": "sqrt"}}).search.layer_schedule == ["sqrt"]


def test_identical_trials_are_trained_once_and_stand_for_every_planned_row():
    cfg = load_config(QUICK)
    planned, trained = trial_grid(cfg), trained_grid(cfg)
    s = cfg.search
    assert len(planned) == planned_trials(cfg) == 4 * len(s.lr) * len(s.weight_decay) * len(s.seeds)
    # lambda = 0 is one trial per (lr, seed) for all four arms
    assert len(trained) == len(planned) - 3 * len(s.lr) * len(s.seeds)
    covered = [(row["arm"], t["lr"], row["weight_decay"], t["seed"]) for t in trained for row in t["stands_for"]]
    assert sorted(covered) == sorted((p["arm"], p["lr"], p["weight_decay"], p["seed"]) for p in planned)
    zero = [t for t in trained if t["weight_decay"] == 0]
    assert all(t["variant"] == "none" and len(t["stands_for"]) == 4 for t in zero)
    assert all(len(t["stands_for"]) == 1 for t in trained if t["weight_decay"] > 0)


def test_none_ignores_lambda():
    cfg = validate({"search": {"variants": ["none", "wd"], "lr": [1e-3], "weight_decay": [0.0, 0.1, 1.0], "seeds": [0]}})
    trained = trained_grid(cfg)
    assert len(trial_grid(cfg)) == 6 and len(trained) == 3  # none once; wd at 0.1 and 1.0
    assert sorted(len(t["stands_for"]) for t in trained) == [1, 1, 4]


def test_cells_whose_shrink_flips_signs_are_flagged():
    cfg = validate({"search": {"lr": [1e-2, 0.1], "weight_decay": [1.0, 10.0, 20.0]}})
    assert sign_flipping_cells(cfg) == [(0.1, 10.0), (0.1, 20.0)]
