"""The study's saved views in MLflow's UI: its trials, and its arms side by side.

MLflow's runs table opens with a 190 px Run Name column, its own default columns
and the trials folded under the parent, where a trial's name (``lpwd:linear_normalized
η=0.003 λ=0.1 seed 0``) is cut and its arm, cell and accuracy are not in view. MLflow
keeps named views of an experiment page as experiment tags (``mlflow.sharedViewState.ID``,
the "Views" menu and its ``viewStateShareKey`` links), so the study writes two of its own
there, and prints their links:

- ``NAME: trials``: this study's trials listed flat, in name order (arm, then cell, the
  seeds together), the Run Name column as wide as the longest name, and the η, λ, seed
  and accuracy columns next to it;
- ``NAME: arms side by side``: the arms' summary runs alone, which the chart view draws
  as one bar per arm in every chart: each claim beside its difference to the baseline, two
  charts to a row (MLflow's default three cut the titles).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from urllib.parse import quote

VIEW_TAG = "mlflow.sharedViewState."  # MLflow's prefix for a saved view of an experiment page
RUN_NAME_COLUMN = "attributes.`Run Name`"
TRIAL_COLUMNS = ["metrics.`lr`", "metrics.`weight_decay`", "params.`seed`",  # η and λ sort as numbers
                 "metrics.`best_val_acc`", "metrics.`test_acc_at_best_val`", "metrics.`val_acc`"]
CHARTS_TITLE = "Arm summaries"
# px per character of a run name in MLflow's table font (about 5.6 on MLflow 3.17 in Chromium on Linux;
# 6.5 leaves room for wider system fonts), and what the cell spends before the name (colour dot, padding)
CHAR_PX, NAME_PAD_PX = 6.5, 56


def view_id(parent_run_id: str, which: str) -> str:
    return f"{parent_run_id}-{which}"


def _state(name: str, state: dict) -> str:
    """A saved view as MLflow's UI stores it: a JSON envelope with the view state deflated."""
    packed = "deflate;" + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    return json.dumps({"name": name, "createdAt": int(time.time() * 1000), "state": packed})


def save_views(run, cfg) -> None:
    """Write (or rewrite, on resume) the study's two views onto the experiment of ``run`` (its ``StudyRun``)."""
    from .client import SUMMARY_OF, client, retry

    mine = f"tags.`mlflow.parentRunId` = '{run.parent_run_id}'"
    by_name = {"orderByKey": "tags.`mlflow.runName`", "orderByAsc": True}
    trials = {"searchFilter": f"{mine} and tags.ray_trial_id LIKE '%'", **by_name,
              "selectedColumns": TRIAL_COLUMNS, "columnOrder": [RUN_NAME_COLUMN, *TRIAL_COLUMNS],
              "columnWidths": {RUN_NAME_COLUMN: round(NAME_PAD_PX + CHAR_PX * longest_trial_name(cfg))}}
    arms = {"searchFilter": f"{mine} and tags.{SUMMARY_OF} LIKE '%'", **by_name, **claim_charts()}
    c = client(run.uri)
    for which, title, state in (("trials", "trials", trials), ("arms", "arms side by side", arms)):
        value = _state(f"{cfg.name}: {title}", state)
        retry(lambda: c.set_experiment_tag(run.experiment_id, VIEW_TAG + view_id(run.parent_run_id, which), value),
              f"save the {title} view")


def longest_trial_name(cfg) -> int:
    """How long the study's longest trial name is (an Optuna trial's η and λ at their longest)."""
    from ..define.config import arms, trained_grid
    from ..define.metrics import trial_name

    if cfg.search.mode == "grid":
        return max(len(trial_name(t)) for t in trained_grid(cfg))
    return max(len(trial_name({**a, "lr": 1.23e-05, "weight_decay": 1.23e-05, "seed": max(cfg.search.seed_list)}))
               for a in arms(cfg))


def claim_charts() -> dict:
    """The chart view's layout for the arms: one section, two charts to a row, each claim on the left
    and its difference to the baseline on the right, then the decay share."""
    from ..define.claims import CLAIMS

    section = "claims"
    charts = [f"{prefix}{name}" for name in CLAIMS for prefix in ("", "diff_")] + ["decay_share"]
    return {"compareRunSections": [{"uuid": section, "name": CHARTS_TITLE, "display": True, "isReordered": False,
                                    "deleted": False, "isGenerated": True, "columns": 2, "cardHeight": 300}],
            "compareRunCharts": [{"uuid": f"{section}-{key}", "type": "BAR", "deleted": False, "isGenerated": True,
                                  "metricSectionId": section, "metricKey": key} for key in charts]}


def view_url(experiment_url: str, parent_run_id: str, which: str, chart: bool = False) -> str:
    """A link that opens a saved view (in the chart view with ``chart``). The view's own search
    filter and order apply only when the link carries none of its own."""
    mode = "&compareRunsMode=CHART" if chart else ""
    return experiment_url.replace("?", f"/runs?viewStateShareKey={quote(view_id(parent_run_id, which))}{mode}&", 1)
