"""MLflow: one experiment per study, a parent run per study, a child run per trial.

Trials log from their own process, one ``log_batch`` call per epoch, so the
driver never becomes a bottleneck (Ray's driver-side MLflow callback cost
~0.7 s per result here). The driver only creates the experiment and the
parent run before trials start, which also avoids SQLite's creation races.
Every call is retried with backoff ("database is locked", transient HTTP
errors); a call that still fails raises, so no metric is ever dropped
silently.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..define.location import mirrored_uri
from ..define.metrics import ACCURACIES
from ..errors import UserError
from .client import SUMMARY_OF, check_reachable, client, resolve_uri, retry
from .mlflow_views import save_views, view_url

PARENT_FILE = "mlflow_parent.json"
NUMERIC_PARAMS = ("lr", "weight_decay")  # a trial's cell, logged as metrics too so the UI sorts it as numbers


@dataclass
class StudyRun:
    """What a trial needs to log under its study's parent run."""

    uri: str
    experiment_id: str
    parent_run_id: str
    study_dir: str = ""  # where the study was when the run was made: a copy elsewhere must not write into it

    def belongs_to(self, study_dir: Path) -> bool:
        return not self.study_dir or self.study_dir == place(study_dir)


def place(study_dir: Path) -> str:
    """Where a study is: its folder, or the URI of an object-store study (the same from every machine)."""
    return mirrored_uri(study_dir) or str(Path(study_dir).resolve())


# MLflow 3's UI opens an experiment in its model-training view (runs, charts) only when told so;
# untagged, it infers a GenAI experiment and shows an empty traces overview
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except OSError:
        return None
    return out or None


def source_tags() -> dict[str, str]:
    """MLflow's standard source tags: the UI's Source column and the commit link read these."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "study (lpwd-study)"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def parent_of(study_dir: Path) -> StudyRun | None:
    """The study's parent run as ``mlflow_parent.json`` records it; None if untracked. A damaged file
    is one line: it is only a pointer, and MLflow still has the run."""
    saved = Path(study_dir) / PARENT_FILE
    if not saved.exists():
        return None
    try:
        return StudyRun(**json.loads(saved.read_text()))
    except (OSError, ValueError, TypeError):
        raise UserError(f"{saved} is damaged, so the study's MLflow parent run is unknown; restore the file from a "
                        "copy of the study dir, or set tracking.enabled=false to go on without MLflow") from None


def saved_run(cfg, study_dir: Path) -> StudyRun | None:
    """The parent run a resumed study logs to, if it has one; refuses another store or a copied study.

    Reads only the study dir, so it runs before Ray starts and before MLflow is opened.
    """
    run = parent_of(study_dir)
    if run is None:
        return None
    uri = resolve_uri(cfg.tracking.uri)
    if run.uri != uri:
        raise UserError(f"tracking.uri: {study_dir} logs to {run.uri}, not {uri}; resume with "
                        f"--set tracking.uri={run.uri} (or MLFLOW_TRACKING_URI), so its runs stay in one store")
    if not run.belongs_to(study_dir) and (Path(run.study_dir) / "study.yaml").exists():
        raise UserError(f"{study_dir} is a copy of {run.study_dir}, whose MLflow runs a resume would continue; "
                        f"resume {run.study_dir} itself, or move (not copy) a study dir to resume it elsewhere")
    return run


def key_of(arm: str) -> str:
    """An arm as MLflow accepts it in a param or metric name (no ':' or '@')."""
    return arm.replace(":", "-").replace("@", "-at-")


UNITS_NOTE = ("Accuracies (`*_acc`, and the claims `best`, `grid_mean`, `lambda_regret`, ...) are in percentage "
              "points, 0-100; `near_optimal_2pt` is in percent of cells, `lambda_width` in decades of λ; `r_op`, "
              "`decay_fraction` and `decay_share` are fractions. Each trial is a run nested "
              "under `study NAME`, and each arm has a summary run there, named after the arm, whose metrics the "
              "chart view compares side by side. The Views menu has the study's views: `NAME: trials` and "
              "`NAME: arms side by side`.")


def start_study(cfg, study_dir: Path, config_text: str, plan: dict) -> StudyRun:
    """Create (or, on resume, reuse) the study's experiment and parent run; ``plan``: the study's
    recorded plan, whose decay masses become the parent's params."""

    uri = resolve_uri(cfg.tracking.uri)
    saved = study_dir / PARENT_FILE
    run = saved_run(cfg, study_dir)
    if run is not None:  # a resume: the same store, of this study (not of the dir it was copied from)
        check_reachable(uri)
        run = follow_move(run, study_dir)
        retry(lambda: client(uri).update_run(run.parent_run_id, status="RUNNING"), "reopen parent run")
        save_views(run, cfg)
        return run
    check_reachable(uri)
    c = client(uri)
    from mlflow.entities import Param

    experiment = retry(lambda: c.get_experiment_by_name(cfg.name), "get experiment")
    exp_id = experiment.experiment_id if experiment else retry(
        lambda: c.create_experiment(cfg.name, tags=EXPERIMENT_TAGS), "create experiment")
    if experiment is not None and experiment.lifecycle_stage == "deleted":  # its name is taken until restored
        retry(lambda: c.restore_experiment(exp_id), "restore experiment")
        print(f"MLflow: experiment {cfg.name!r} was deleted; restored it for this study")
    note = {"mlflow.note.content": UNITS_NOTE.replace("NAME", cfg.name)}
    for key, value in {**EXPERIMENT_TAGS, **note}.items():  # also an experiment made by hand or by an older version
        retry(lambda: c.set_experiment_tag(exp_id, key, value), "tag experiment")
    tags = {"study": cfg.name, "study_dir": place(study_dir), "mlflow.runName": f"study {cfg.name}", **source_tags()}
    parent = retry(lambda: c.create_run(exp_id, tags=tags), "create parent run")
    params = [Param(k, v[:6000]) for k, v in flatten(cfg.model_dump(mode="json")).items()]
    params += [Param(f"plan.{key_of(a['arm'])}.effective_decay", f"{a['effective_decay']:.4f}")
               for a in plan["arms"]]
    for i in range(0, len(params), 100):
        retry(lambda: c.log_batch(parent.info.run_id, params=params[i:i + 100]), "log study params")
    retry(lambda: c.log_text(parent.info.run_id, config_text, "study.yaml"), "log config artifact")
    run = StudyRun(uri, exp_id, parent.info.run_id, place(study_dir))
    save_views(run, cfg)
    saved.write_text(json.dumps(asdict(run)))
    return run


def single_trials(cfg) -> StudyRun:
    """Where ``study trial`` logs: an experiment of its own, ``NAME trials``, with top-level runs.
    Never the study's experiment or parent run, and no study dir: a trial tried by hand is not
    one of the study's trials."""
    uri = resolve_uri(cfg.tracking.uri)
    check_reachable(uri)
    c, name = client(uri), f"{cfg.name} trials"
    experiment = retry(lambda: c.get_experiment_by_name(name), "get experiment")
    exp_id = experiment.experiment_id if experiment else retry(
        lambda: c.create_experiment(name, tags=EXPERIMENT_TAGS), "create experiment")
    return StudyRun(uri, exp_id, parent_run_id="")


def run_url(run: StudyRun, run_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    return experiment_url(run, ui).replace("?", f"/runs/{run_id}?", 1)


def follow_move(run: StudyRun, study_dir: Path) -> StudyRun:
    """A resumed study's runs are its own: they follow a moved dir (``saved_run`` refused a copy).

    The parent run records the dir it belongs to. If that dir is gone, this one was
    moved there (or brought from another machine): the record follows it. If it were
    still there, this would be a copy, and resuming it would write a second history
    into the original's trial runs.
    """
    if run.belongs_to(study_dir):
        return run
    here = place(study_dir)
    moved = replace(run, study_dir=here)
    retry(lambda: client(run.uri).set_tag(run.parent_run_id, "study_dir", here), "retag moved study")
    (Path(study_dir) / PARENT_FILE).write_text(json.dumps(asdict(moved)))
    return moved


# MLflow 3's UI has a per-browser GenAI / model-training switch; this URL parameter selects the
# model-training view (runs table, metric charts), where a study's runs belong
TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(run: StudyRun, ui: str = "http://127.0.0.1:5000") -> str:
    """Where the study's runs are in the MLflow UI: the tracking server itself, or ``study ui``'s address."""
    base = run.uri.rstrip("/") if run.uri.startswith(("http://", "https://")) else ui
    return f"{base}/#/experiments/{run.experiment_id}?{TRAINING_VIEW}"


def trials_url(run: StudyRun, ui: str = "http://127.0.0.1:5000") -> str:
    """The study's trials, flat, names whole, with their cell and accuracy columns (its ``NAME: trials`` view)."""
    return view_url(experiment_url(run, ui), run.parent_run_id, "trials")


def arms_url(run: StudyRun, ui: str = "http://127.0.0.1:5000") -> str:
    """The chart view of the arms' summary runs alone, side by side (its ``NAME: arms side by side`` view)."""
    return view_url(experiment_url(run, ui), run.parent_run_id, "arms", chart=True)


def end_study(study_dir: Path, status: str) -> None:
    """Mark the study's parent run (``FAILED`` after a crash, ``KILLED`` after Ctrl-C), if it is tracked."""
    try:
        run = parent_of(study_dir)
    except UserError:
        return  # nothing to end that can be named
    if run is not None:
        if run.belongs_to(study_dir):  # a copy's failure is not the original's
            retry(lambda: client(run.uri).set_terminated(run.parent_run_id, status), "end parent run", attempts=3)


def finish_study(run: StudyRun, artifacts: list[Path], verdict: str | None = None, summary=None,
                 status: str | None = "FINISHED") -> None:
    """Attach the report and the verdict (Markdown) as the parent run's description, and log each
    arm's claims to that arm's summary run (:func:`log_arm_summaries`)."""
    c = client(run.uri)
    if verdict:
        retry(lambda: c.set_tag(run.parent_run_id, "mlflow.note.content", verdict), "set description")
    if summary is not None:
        log_arm_summaries(run, summary, status)
    for path in artifacts:  # figures under figures/, where MLflow's artifact view previews them
        where = "figures" if path.suffix == ".png" else "report"
        retry(lambda: c.log_artifact(run.parent_run_id, str(path), where), f"attach {path.name}")
    if status:  # None: the study is not complete, the parent stays RUNNING
        retry(lambda: c.set_terminated(run.parent_run_id, status), "end parent run")


def log_arm_summaries(run: StudyRun, summary, status: str | None) -> None:
    """One run per arm, nested under the parent, with the same metric names for every arm (each
    claim, ``diff_<claim>`` against the baseline, ``decay_share``) and the report's arm colour, so
    MLflow's chart and table views put the arms side by side (:func:`arms_url`). The intervals are
    in the parent's description and the report. A later report (after a resume) updates the same runs."""
    from mlflow.entities import Metric, Param

    from ..define.claims import CLAIMS
    from ..define.roles import colours

    c, now = client(run.uri), int(time.time() * 1000)
    study = retry(lambda: c.get_run(run.parent_run_id), "read parent run").data.tags.get("study", "")
    names = [f"{p}{k}" for p in ("", "diff_") for k in CLAIMS]
    directions = "; ".join(f"{way} is better: " + ", ".join(f"`{claim.name}`" for claim in CLAIMS.values()
                                                             if claim.higher_is_better == (way == "higher"))
                           for way in ("higher", "lower"))
    colour = colours(list(summary["arm"]))
    for _, r in summary.iterrows():
        arm = r["arm"]
        query = f"tags.`mlflow.parentRunId` = '{run.parent_run_id}' and tags.{SUMMARY_OF} = '{arm}'"
        found = retry(lambda: c.search_runs([run.experiment_id], query, max_results=1), "find arm summary run")
        if found:
            run_id = found[0].info.run_id
            if found[0].data.tags.get("mlflow.runName") != arm:  # e.g. `ARM summary`: the legend names arms
                retry(lambda: c.set_tag(run_id, "mlflow.runName", arm), "rename arm summary run")
        else:
            tags = {"mlflow.parentRunId": run.parent_run_id, "mlflow.runName": arm, SUMMARY_OF: arm,
                    "study": study, "mlflow.runColor": colour[arm],
                    "mlflow.note.content": f"The summary of arm `{arm}` in study `{study}`: its claims, `diff_*` "
                    f"against the baseline arm, `decay_share` (λ_eff / λ). {directions}. Their intervals and tests "
                    "are in the parent run's description and the report."}
            run_id = retry(lambda: c.create_run(run.experiment_id, tags=tags), "create arm summary run").info.run_id
            retry(lambda: c.log_batch(run_id, params=[Param("arm", arm)]), "log arm param")
        # a share of cells is logged in percent, as the experiment's description says: one scale per chart
        values = {k: r[k] * (100.0 if CLAIMS[k.removeprefix("diff_")].unit == "share" else 1.0)
                  for k in names if k in r} | {"decay_share": r.get("effective_decay", float("nan"))}
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v == v]
        retry(lambda: c.log_batch(run_id, metrics=metrics), "log arm summary metrics")
        if status:  # None: the study is not complete; its summaries stay RUNNING with the parent
            retry(lambda: c.set_terminated(run_id, status), "end arm summary run")


class TrialRun:
    """A trial's child run: created once, continued after a restore (run id in the checkpoint)."""

    def __init__(self, study: StudyRun, run_id: str | None, name: str, params: dict, tags: dict):
        from mlflow.entities import Metric, Param

        self._c = client(study.uri)
        self._pending: list = []
        self.run_id = run_id or self._existing(study, tags.get("ray_trial_id"))
        reopened = self.run_id is not None
        if self.run_id is None:
            parent = {"mlflow.parentRunId": study.parent_run_id} if study.parent_run_id else {}
            tags = {**parent, "mlflow.runName": name, **source_tags(), **tags}
            run = retry(lambda: self._c.create_run(study.experiment_id, tags=tags), "create child run")
            self.run_id = run.info.run_id
            # the cell's η and λ also as metrics: MLflow sorts params as text (1, 10, 3, 30), metrics as numbers
            cell = [Metric(k, float(params[k]), int(time.time() * 1000), 0) for k in NUMERIC_PARAMS if k in params]
            retry(lambda: self._c.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                                            metrics=cell), "log trial params")
        else:
            retry(lambda: self._c.update_run(self.run_id, status="RUNNING"), "reopen child run")
        # epochs MLflow holds already: a trial resumed from an older checkpoint than its last flush (the newest
        # one damaged) retrains them, and MLflow keeps their first values rather than holding them twice
        history = retry(lambda: self._c.get_metric_history(self.run_id, "val_acc"), "read logged epochs") \
            if reopened else []
        self._logged = max((m.step for m in history), default=-1)

    def _existing(self, study: StudyRun, trial_id: str | None) -> str | None:
        """The run a restarted trial created before its first checkpoint, so it is not duplicated."""
        if trial_id is None:
            return None
        query = f"tags.ray_trial_id = '{trial_id}' and tags.`mlflow.parentRunId` = '{study.parent_run_id}'"
        runs = retry(lambda: self._c.search_runs([study.experiment_id], query, max_results=1), "find child run")
        return runs[0].info.run_id if runs else None

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        """Buffer one epoch; ``flush`` sends it (the trial flushes whenever it checkpoints)."""
        from mlflow.entities import Metric

        if epoch <= self._logged:
            return
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v) * (100 if k in ACCURACIES else 1), now, epoch)
                             for k, v in metrics.items())

    def flush(self) -> None:
        batch, self._pending = self._pending, []
        for i in range(0, len(batch), 1000):  # MLflow's log_batch limit
            retry(lambda: self._c.log_batch(self.run_id, metrics=batch[i:i + 1000]), "log epoch metrics")

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        retry(lambda: self._c.set_terminated(self.run_id, status), "end child run")
