"""The tidy table: one row per trial, the hinge between running and analysing.

``trials.csv`` in the study dir holds, per trial, its cell (variant, lr,
weight_decay, seed), the fixed settings that matter for comparison, its Ray
status and every metric of its last report. It is rewritten (atomically) as
trials start, finish or fail, so an interrupted study still has its table;
analysis and plots read only this file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ray import tune

from .trial import EPOCH_METRICS, TRIAL_PARAMS, trial_name

TABLE = "trials.csv"
# the per-epoch ``lr`` metric (the scheduled lr) would clash with the cell's lr: Ray and MLflow keep it
METRIC_COLUMNS = [m for m in EPOCH_METRICS if m not in TRIAL_PARAMS]
COLUMNS = ["trial_id", "experiment", "status", *TRIAL_PARAMS, "base", "model", "dataset",
           "epochs_done", *METRIC_COLUMNS, "trained_as", "shared", "mlflow_run_id", "error"]


def read_rows(study_dir: Path) -> list[dict]:
    path = Path(study_dir) / TABLE
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(study_dir: Path, rows: list[dict]) -> None:
    path = Path(study_dir) / TABLE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class TidyTable(tune.Callback):
    """A Ray Tune callback on the driver that keeps ``trials.csv`` current."""

    def __init__(self, study_dir: str, experiment: str, fixed: dict):
        self.study_dir = Path(study_dir)
        self.experiment = experiment
        self.fixed = fixed  # base, model, dataset

    def _rows(self, trial) -> list[dict]:
        """One row per planned trial this Ray trial stands for (several when identical trials were shared)."""
        from .sweep import trial_params

        params = trial_params(trial.config)
        result = trial.last_result or {}
        status = trial.status
        if status == "TERMINATED" and result.get("finished") != 1:
            status = "INTERRUPTED"  # stopped by Ctrl-C before its last epoch: resume runs it on
        row = {"trial_id": trial.trial_id, "experiment": self.experiment, "status": status,
               **{k: params.get(k) for k in TRIAL_PARAMS}, **self.fixed,
               # from the trial's own epoch counter: Ray's iteration count also counts replayed reports
               "epochs_done": result.get("epoch", -1) + 1,
               **{k: result.get(k) for k in METRIC_COLUMNS}, "trained_as": trial_name(params),
               "mlflow_run_id": result.get("mlflow_run_id")}
        if trial.status == "ERROR":
            row["error"] = (getattr(trial, "error_message", None) or "see the trial's error.txt").strip().splitlines()[-1][:300]
        stands_for = params.get("stands_for") or [{}]
        return [{**row, **planned, "shared": int(len(stands_for) > 1)} for planned in stands_for]

    def _write(self, trials) -> None:
        others = [r for r in read_rows(self.study_dir) if r["experiment"] != self.experiment]
        write_rows(self.study_dir, others + [row for t in trials for row in self._rows(t)])

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trials)

    def on_experiment_end(self, trials, **info):
        self._write(trials)
