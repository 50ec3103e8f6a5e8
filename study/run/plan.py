"""What is known when a study is planned, recorded then: its arms and each arm's decay mass.

λ_eff / λ of an arm (``lpwd.effective_decay``) depends on the model's parameter shapes and
the arm's schedule only, so it is computed once, from a model built without weights,
when the study dir is created, and written to ``plan.json`` beside ``study.yaml`` (and
logged as the MLflow parent's params). The report reads it (``store.loader``): it never
builds a model, and a paper-scale study reports without its pretrained checkpoint. Only
``run`` and ``resume`` record a plan; a read that finds none computes it in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..define.location import PLAN_FILE


def make_plan(cfg) -> dict:
    from ..define.config import arms, planned_trials
    from .models import effective_decays

    effective = effective_decays(cfg)
    return {"arms": [{**a, "effective_decay": effective[a["arm"]],
                      "decay_scale": effective[a["arm"]] if a.get("mass_of") else 1.0} for a in arms(cfg)],
            "lr": cfg.search.lr, "weight_decay": cfg.search.weight_decay, "seeds": cfg.search.seed_list,
            "planned_trials": planned_trials(cfg)}


def record_plan(study_dir: Path, cfg) -> dict:
    plan = make_plan(cfg)
    (Path(study_dir) / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    return plan
