"""The Ray Tune callback that keeps ``trials.csv`` current while a sweep runs (see ``study.store.table``)."""

from __future__ import annotations

import csv
from pathlib import Path

from ray import tune

from ..define.metrics import trial_params
from ..define.location import mirror_dir
from ..store.objectstore import push, scheme_of, uri_of
from ..store.table import SEE_ERROR_FILE, TABLE, _intact, read_rows, rows_of, write_rows


class TidyTable(tune.Callback):
    """A Ray Tune callback on the driver that keeps ``trials.csv`` current.

    It holds no path: ``Tuner.restore`` brings callbacks back as they were pickled, so
    a stored path would point a moved or copied study at its old place. The study dir
    is where Ray has the experiment now, read from the trials themselves; in object
    storage the table is written in the study's mirror and pushed to the bucket.
    """

    def __init__(self, experiment: str, fixed: dict):
        self.experiment = experiment
        self.fixed = fixed  # base, model, dataset

    def _rows(self, trial, completed=None, started=None) -> list[dict]:
        result = trial.last_result or {}
        # Tune calls on_trial_start/complete before it sets the trial's status: the started trial is
        # running (as the progress bar counts it, so status and the bar agree), the completed one done
        status = "TERMINATED" if trial is completed else "RUNNING" if trial is started else trial.status
        if status == "TERMINATED" and result.get("finished") != 1:
            status = "INTERRUPTED"  # stopped by Ctrl-C before its last epoch: resume runs it on
        error = None
        if trial.status == "ERROR":
            error = (getattr(trial, "error_message", None) or SEE_ERROR_FILE).strip().splitlines()[-1][:300]
        return rows_of(self.experiment, trial.trial_id, status, trial_params(trial.config), result, self.fixed, error)

    def _write(self, trials, completed=None, started=None) -> None:
        if not trials:
            return
        storage = trials[0].storage
        parent = str(Path(storage.experiment_fs_path).parent)
        remote = uri_of(storage.storage_filesystem, parent) if scheme_of(storage.storage_filesystem) else None
        study_dir = mirror_dir(remote) if remote else Path(parent)
        try:  # this experiment's rows come from Ray; a damaged row of another one is rebuilt by report
            others = [r for r in read_rows(study_dir) if _intact([r]) and r["experiment"] != self.experiment]
        except (csv.Error, UnicodeDecodeError):
            others = []
        write_rows(study_dir, others + [row for t in trials for row in self._rows(t, completed, started)])
        if remote:
            push(study_dir, remote, [TABLE])

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(trials, started=trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trials, completed=trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trials)

    def on_experiment_end(self, trials, **info):
        self._write(trials)
