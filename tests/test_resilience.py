"""Interrupted sweeps lose nothing; concurrent trials drop no metric in the default SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from study.table import read_rows
from study.trial import EPOCH_METRICS

from .conftest import PYTHON, run_study_cli, study_env, tiny_args

pytestmark = pytest.mark.slow

# 8 trials x 4 epochs, all healthy
ARGS = ["--set", "search.lr=[3.0e-3]", "--set", "search.weight_decay=[0.0,0.1]", "--set", "search.seeds=[0,1]", "--set", "train.epochs=4",
        "--no-report"]


def children(db, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_sqlite_store_keeps_every_metric_under_8_concurrent_trials(tmp_path):
    run_study_cli(tiny_args("conc", *ARGS, "--set", "resources.cpu=0.25"), tmp_path)
    rows = read_rows(tmp_path / "studies" / "conc")
    client, runs = children(tmp_path / "mlflow.db", "conc")
    assert len(runs) == len(rows) == 8
    for run in runs:
        for metric in EPOCH_METRICS:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
            assert steps == [0, 1, 2, 3], (run.info.run_name, metric, steps)


def final_metrics(rows):
    return {(r["variant"], r["lr"], r["weight_decay"], r["seed"]): (r["val_acc"], r["test_acc_at_best_val"], r["train_loss"])
            for r in rows}


def test_kill_9_mid_sweep_then_resume(tmp_path):
    # the reference: the same study, uninterrupted
    run_study_cli(tiny_args("ref", *ARGS), tmp_path)
    reference = final_metrics(read_rows(tmp_path / "studies" / "ref"))

    ray_tmp = tempfile.mkdtemp(prefix="rayk", dir="/tmp")
    env = study_env(RAY_TMPDIR=ray_tmp)
    driver = subprocess.Popen([PYTHON, "-m", "study", *tiny_args("killed", *ARGS)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    study_dir = tmp_path / "studies" / "killed"
    deadline = time.time() + 240
    while time.time() < deadline:
        rows = read_rows(study_dir) if (study_dir / "trials.csv").exists() else []
        done = [r for r in rows if r["status"] == "TERMINATED"]
        running = [r for r in rows if r["status"] == "RUNNING"]
        if len(done) >= 2 and running:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the sweep never reached a state with finished and running trials")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    subprocess.run(["pkill", "-9", "-f", ray_tmp])  # Ray helpers that outlive their driver
    time.sleep(2)
    finished_before = {r["trial_id"]: r for r in read_rows(study_dir) if r["status"] == "TERMINATED"}

    run_study_cli(["resume", str(study_dir)], tmp_path, env)
    subprocess.run(["pkill", "-9", "-f", ray_tmp])
    rows = read_rows(study_dir)
    assert len(rows) == len({r["trial_id"] for r in rows}) == 8
    assert all(r["status"] == "TERMINATED" for r in rows)
    for r in rows:  # finished trials were not rerun
        if r["trial_id"] in finished_before:
            assert r == finished_before[r["trial_id"]]
    for r in rows:  # no epoch trained twice
        lines = (study_dir / "grid" / r["trial_id"] / "result.json").read_text().splitlines()
        reports = [json.loads(line) for line in lines if line.strip()]
        trained = [r["epoch"] for r in reports if not r.get("replayed")]  # a replay re-reports, trains nothing
        assert trained == sorted(set(trained)), (r["trial_id"], trained)
        assert sorted({r["epoch"] for r in reports}) == list(range(4)), (r["trial_id"], reports)
    assert final_metrics(rows) == reference  # identical to the uninterrupted run (CPU determinism)
    _, runs = children(tmp_path / "mlflow.db", "killed")
    assert len(runs) == 8  # no duplicate child runs


def test_optuna_mode_runs_seeded_tpe_per_variant(tmp_path):
    run_study_cli(tiny_args("opt", "--set", "search.mode=optuna", "--set", "search.num_samples=3",
                            "--set", "search.weight_decay=[0.01,1.0]", "--set", "train.epochs=2",
                            "--set", "tracking.enabled=false", "--no-report"), tmp_path)
    rows = read_rows(tmp_path / "studies" / "opt")
    assert sorted(r["experiment"] for r in rows) == ["optuna-lpwd"] * 3 + ["optuna-wd"] * 3
    assert all(r["status"] == "TERMINATED" for r in rows)
    assert all(3e-3 <= float(r["lr"]) <= 3e-2 and 0.01 <= float(r["weight_decay"]) <= 1.0 for r in rows)
    # the sampler is seeded: each variant's search starts from the same suggestions
    suggest = {v: sorted((r["lr"], r["weight_decay"]) for r in rows if r["variant"] == v) for v in ("wd", "lpwd")}
    assert suggest["wd"] == suggest["lpwd"]
