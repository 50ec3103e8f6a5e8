"""A comparison of several studies as its own MLflow run, in the experiment ``study comparisons``.

Its description is the comparison's verdict (rendered by the caller), its metrics the
pooled numbers, its artifacts the comparison's files, and a tag per study names that
study's parent run, so MLflow links every pooled answer to the trials behind it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .client import check_reachable, client, retry
from .tracking import EXPERIMENT_TAGS, key_of, source_tags


def log_run(result: dict, description: str, artifacts: list[Path], uri: str, name: str) -> str:
    """The comparison as its own MLflow run (experiment ``study comparisons``): the verdict as its
    description, the pooled numbers as metrics, and a tag per study naming its parent run."""
    from mlflow.entities import Metric, Param

    check_reachable(uri)
    c = client(uri)
    experiment = retry(lambda: c.get_experiment_by_name("study comparisons"), "get experiment")
    exp_id = experiment.experiment_id if experiment else retry(
        lambda: c.create_experiment("study comparisons", tags=EXPERIMENT_TAGS), "create experiment")
    tags = {"mlflow.note.content": description, "compared_studies": ", ".join(
        r["study"] for r in result["studies"]), **source_tags()}
    tags |= {f"study.{r['study']}": r["run_id"] for r in result["studies"] if r["run_id"]}
    run = retry(lambda: c.create_run(exp_id, run_name=name, tags=tags), "create comparison run")
    rid = run.info.run_id
    params = {"baseline": result["baseline"], "arms": ",".join(result["arms"]), "studies": len(result["studies"]),
              **{f"primary_{q}": claim for q, claim in result["primary"].items()}, "pooling": "random effects, mHKSJ"}
    metrics, now = [], int(time.time() * 1000)
    for arm, per in result["pooled"].items():
        for q, p in per.items():
            for k in ("estimate", "lo", "hi", "p_adj", "i2", "tau", "tau_lo", "tau_hi", "p_heterogeneity", "pred_lo",
                      "pred_hi", "p_sign"):
                if math.isfinite(p[k]):
                    metrics.append(Metric(f"{key_of(arm)}.pooled_{p['claim']}_{k}", float(p[k]), now, 0))
    retry(lambda: c.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()]),
          "log comparison")
    for path in artifacts:
        retry(lambda: c.log_artifact(rid, str(path), "figures" if path.suffix == ".png" else "compare"),
              f"attach {path.name}")
    retry(lambda: c.set_terminated(rid, "FINISHED"), "end comparison run")
    return rid
