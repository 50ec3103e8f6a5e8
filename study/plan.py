"""What is known when a study is planned, recorded then: its arms and each arm's decay mass.

λ_eff / λ of an arm (``lpwd.effective_decay``) depends on the model's parameter shapes and
the arm's schedule only, so it is computed once, from a model built without weights,
when the study dir is created, and written to ``plan.json`` beside ``study.yaml`` (and
logged as the MLflow parent's params). The report reads it: it never builds a model,
and a paper-scale study reports without its pretrained checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

PLAN_FILE = "plan.json"


def make_plan(cfg) -> dict:
    from .config import arms, planned_trials
    from .models import effective_decays

    effective = effective_decays(cfg)
    return {"arms": [{**a, "effective_decay": effective[a["arm"]],
                      "decay_scale": effective[a["arm"]] if a.get("mass_of") else 1.0} for a in arms(cfg)],
            "lr": cfg.search.lr, "weight_decay": cfg.search.weight_decay, "seeds": cfg.search.seeds,
            "planned_trials": planned_trials(cfg)}


def record_plan(study_dir: Path, cfg) -> dict:
    plan = make_plan(cfg)
    (Path(study_dir) / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    return plan


def _matches(plan, cfg) -> bool:
    """A plan of this config's arms with finite, non-negative numbers (a file from elsewhere is checked)."""
    import math

    from .config import arms

    try:
        return [a["arm"] for a in plan["arms"]] == [a["arm"] for a in arms(cfg)] and all(
            isinstance(a["effective_decay"], (int, float)) and math.isfinite(a["effective_decay"])
            and a["effective_decay"] >= 0 for a in plan["arms"])
    except (TypeError, KeyError):
        return False


def read_plan(study_dir: Path, cfg) -> dict:
    """The study's plan; for a study started before plans were recorded (or a damaged one), the same
    numbers computed now, and recorded when the dir is writable."""
    path = Path(study_dir) / PLAN_FILE
    try:
        plan = json.loads(path.read_text())
        if _matches(plan, cfg):
            return plan
    except (OSError, ValueError):
        pass
    try:
        return record_plan(study_dir, cfg)
    except OSError:
        return make_plan(cfg)


def effective_decays(plan: dict) -> dict[str, float]:
    return {a["arm"]: float(a["effective_decay"]) for a in plan["arms"]}
