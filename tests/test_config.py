"""The study's trial plan: arms, the layer-schedule ablation, shared identical trials, flagged cells."""

from pathlib import Path

import pytest

from study.define.config import arms, load_config, planned_trials, sign_flipping_cells, trained_grid, trial_grid, validate

QUICK = Path(__file__).parents[1] / "configs" / "quick.yaml"


def test_schedule_ablation_is_one_study_and_plain_variants_run_once():
    cfg = validate({"search": {"variants": ["wd", "pwd", "lpwd"], "layer_schedule": ["linear", "inverse", "constant"]}})
    assert [a["arm"] for a in arms(cfg)] == ["wd", "pwd", "lpwd", "lpwd:inverse", "lpwd:constant"]
    assert validate({"search": {"layer_schedule": "sqrt"}}).search.layer_schedule == ["sqrt"]


def test_identical_trials_are_trained_once_and_stand_for_every_planned_row():
    cfg = load_config(QUICK)
    planned, trained = trial_grid(cfg), trained_grid(cfg)
    s = cfg.search
    assert len(planned) == planned_trials(cfg) == 6 * len(s.lr) * len(s.weight_decay) * len(s.seeds)
    # lambda = 0 is one trial per (lr, seed) for all six arms
    assert len(trained) == len(planned) - 5 * len(s.lr) * len(s.seeds)
    covered = [(row["arm"], t["lr"], row["weight_decay"], t["seed"]) for t in trained for row in t["stands_for"]]
    assert sorted(covered) == sorted((p["arm"], p["lr"], p["weight_decay"], p["seed"]) for p in planned)
    zero = [t for t in trained if t["weight_decay"] == 0]
    assert all(t["variant"] == "none" and len(t["stands_for"]) == 6 for t in zero)
    assert all(len(t["stands_for"]) == 1 for t in trained if t["weight_decay"] > 0)


def test_none_ignores_lambda():
    cfg = validate({"search": {"variants": ["none", "wd"], "lr": [1e-3], "weight_decay": [0.0, 0.1, 1.0], "seeds": [0]}})
    trained = trained_grid(cfg)
    assert len(trial_grid(cfg)) == 6 and len(trained) == 3  # none once; wd at 0.1 and 1.0
    assert sorted(len(t["stands_for"]) for t in trained) == [1, 1, 4]


def test_cells_whose_shrink_flips_signs_are_flagged():
    cfg = validate({"search": {"lr": [1e-2, 0.1], "weight_decay": [1.0, 10.0, 20.0]}})
    assert sign_flipping_cells(cfg) == [(0.1, 10.0), (0.1, 20.0)]


def test_the_mass_control_is_pwd_at_lpwds_decay_mass():
    import torch

    from study.run.models import small_cnn
    from study.run.plan import make_plan
    from study.run.trial import decay_scale

    cfg = load_config(QUICK)
    control = next(a for a in arms(cfg) if a["arm"] == "pwd@lpwd-mass")
    assert control["variant"] == "pwd" and control["mass_of"] == "lpwd"
    plan = {a["arm"]: a for a in make_plan(cfg)["arms"]}
    assert plan["pwd@lpwd-mass"]["effective_decay"] == plan["lpwd"]["effective_decay"] == plan["pwd@lpwd-mass"]["decay_scale"]
    assert 0.5 < plan["lpwd"]["effective_decay"] < 0.8 and plan["pwd"]["effective_decay"] == 1.0
    # the trial trains it at λ times that scale, computed from its own model: the same number
    torch.manual_seed(0)
    assert decay_scale(small_cnn(1, 10), cfg, control) == pytest.approx(plan["lpwd"]["effective_decay"])
    assert decay_scale(small_cnn(1, 10), cfg, {"variant": "pwd"}) == 1.0
    # λ = 0 of the control is the shared trial like every other arm's
    zero = [t for t in trained_grid(cfg) if t["weight_decay"] == 0][0]
    assert "pwd@lpwd-mass" in {r["arm"] for r in zero["stands_for"]}


def test_the_mass_control_needs_lpwd():
    from study.errors import UserError

    with pytest.raises(UserError, match="controls: pwd@lpwd-mass trains pwd at lpwd's decay mass"):
        load_config(QUICK, ["search.variants=[wd,pwd]"])


def test_a_file_uri_storage_is_the_absolute_folder_it_names(tmp_path):
    cfg = load_config(str(QUICK), [f"storage=file://{tmp_path}/my%20studies"])
    assert cfg.study_dir == tmp_path / "my studies" / cfg.name and cfg.remote is None
