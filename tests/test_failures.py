"""A trial, the disk, the tracking server or the driver failing mid-study: each failure is retried or ends in one
line with the resume command, and a resume trusts nothing it did not seal. (Split from test_resilience.py so that
the two pytest workers share these real-Ray runs.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from study.present.report import trial_reports
from study.store.table import read_rows

from .conftest import (ARGS, PYTHON, children, no_ray_left, ray_logs_left, ray_processes, run_study_cli, short_tmpdir,
                       shows_a_traceback, study_env, tiny_args)
from .test_resilience import (driver_output, freeze_a_trial_mid_training, newest_checkpoint_in, recorded_epoch_in,
                              start_driver, trial_workers, wait_for)

pytestmark = pytest.mark.slow

def kill_a_running_trial(name, work, *extra):
    """Run a study and SIGKILL one trial's worker mid-training; return the driver's outcome and that trial.

    Mid-training on purpose: a kill while Ray hands a reused actor its next trial is
    counted twice by Ray Tune (the reset task and the actor both fail), and a kill
    after the last report leaves nothing to retrain.
    """
    driver, env, ray_tmp = start_driver(name, work, "--set", "train.epochs=6", *extra)
    study_dir = work / "studies" / name
    trial, pid = freeze_a_trial_mid_training(lambda: trial_workers(ray_tmp), newest_checkpoint_in(study_dir),
                                             epochs=6, recorded=recorded_epoch_in(study_dir))
    os.kill(pid, signal.SIGKILL)
    out, err = driver_output(driver, timeout=300)
    no_ray_left(ray_tmp)
    return driver.returncode, out, err, trial


def test_trial_killed_from_outside_is_retried_from_its_checkpoint(tmp_path):
    rc, out, err, killed = kill_a_running_trial("retry", tmp_path, "--set", "max_failures=2")
    assert rc == 0, err[-2000:]
    study_dir = tmp_path / "studies" / "retry"
    rows = read_rows(study_dir)
    assert len(rows) == 8 and all(r["status"] == "TERMINATED" for r in rows), [r["status"] for r in rows]
    failed = [d for d in (study_dir / "grid").iterdir() if (d / "error.txt").exists()]
    assert [d.name for d in failed] == [killed]  # the killed trial failed once, and was retried to completion
    results = trial_reports(study_dir, next(r for r in rows if r["trial_id"] == killed))
    # continued from its mid-training checkpoint: no epoch trained twice, none missing, nothing replayed
    assert [r["epoch"] for r in results] == list(range(6)), [(r["epoch"], r["pid"], r.get("replayed")) for r in results]


def test_trial_that_keeps_failing_is_errored_and_the_others_complete(tmp_path):
    rc, out, err, killed = kill_a_running_trial("nofail", tmp_path, "--set", "max_failures=0")
    assert rc == 0, err[-2000:]
    study_dir = tmp_path / "studies" / "nofail"
    rows = read_rows(study_dir)
    assert sorted(r["status"] for r in rows) == ["ERROR"] + ["TERMINATED"] * 7
    errored = next(r for r in rows if r["status"] == "ERROR")
    assert errored["trial_id"] == killed
    assert errored["error"]  # the error is recorded in the tidy table
    status = run_study_cli(["status", str(study_dir)], tmp_path)
    assert "7 done, 0 running, 0 pending, 1 errored" in status.stdout
    assert f"errored {errored['trained_as']}" in status.stdout

    # resume retries the errored trial from its newest checkpoint; the other seven are kept
    done = {r["trial_id"]: r for r in rows if r["status"] == "TERMINATED"}
    ray_tmp = short_tmpdir("r")
    run_study_cli(["resume", str(study_dir)], tmp_path, study_env(RAY_TMPDIR=ray_tmp))
    no_ray_left(ray_tmp)
    assert ray_logs_left(ray_tmp) == []  # the resume succeeded: its local Ray's logs went with it
    rows = read_rows(study_dir)
    assert all(r["status"] == "TERMINATED" and r["epochs_done"] == "6" for r in rows), rows
    assert {r["trial_id"]: r for r in rows if r["trial_id"] != killed} == done
    results = trial_reports(study_dir, next(r for r in rows if r["trial_id"] == killed))
    assert [r["epoch"] for r in results] == list(range(6))  # no epoch of the killed trial trained twice


def test_optuna_study_resumes_with_its_searcher_state(tmp_path):
    optuna = ["--set", "search.mode=optuna", "--set", "search.num_samples=6", "--set", "search.variants=[lpwd]",
              "--set", "search.weight_decay=[0.01,1.0]", "--set", "tracking.enabled=false"]
    driver, env, ray_tmp = start_driver("optk", tmp_path, *optuna)
    study_dir = tmp_path / "studies" / "optk"
    freeze_a_trial_mid_training(lambda: trial_workers(ray_tmp), newest_checkpoint_in(study_dir, "optuna-lpwd"))
    wait_for(study_dir, done=5)  # the searcher has made all six suggestions; one trial is mid-training
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    no_ray_left(ray_tmp)
    run_study_cli(["resume", str(study_dir)], tmp_path, env)
    no_ray_left(ray_tmp)
    rows = read_rows(study_dir)
    # exactly num_samples trials: the restored searcher neither forgot nor repeated its suggestions
    assert len(rows) == 6 and all(r["status"] == "TERMINATED" for r in rows)
    assert len({(r["lr"], r["weight_decay"]) for r in rows}) == 6


NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs in a private mount namespace (unshare needs root)")


@NEEDS_ROOT
def test_a_disk_that_fills_mid_sweep_ends_in_one_line_with_the_resume_command(tmp_path):
    storage = tmp_path / "studies"
    storage.mkdir()
    ray_tmp = short_tmpdir("f")
    # the driver (and the Ray it starts) in a mount namespace of its own, with a 256 KiB tmpfs over the
    # storage folder: the first checkpoints fill it
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs -o size=256k none "$0" && exec "$@"', str(storage),
               PYTHON, "-m", "study", *tiny_args("full", *ARGS, "--set", f"storage={storage}")]
    proc = subprocess.run(command, cwd=tmp_path, env=study_env(RAY_TMPDIR=ray_tmp), capture_output=True, text=True,
                          timeout=600)
    no_ray_left(ray_tmp)
    study_dir = storage / "full"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "sweep: 8 trials to train" in proc.stdout  # it filled mid-sweep, not before
    assert len(list(Path(ray_tmp).glob("ray-*"))) == 1  # a failed study keeps its local Ray's logs
    assert not shows_a_traceback(proc.stderr), proc.stderr[-3000:]
    # the driver's own last line (lines that Ray forwards from trials may still arrive after it)
    last = [line for line in proc.stderr.strip().splitlines() if "pid=" not in line][-1]
    assert last.startswith(f"error: {study_dir}: No space left on device"), proc.stderr[-3000:]
    assert last.endswith(f"; fix it, then resume with: {PYTHON} -m study resume {study_dir}")


def test_a_driver_killed_as_its_ray_starts_leaves_no_process(tmp_path):
    """The earliest moment: the warden exists and Ray is starting, the address not yet printed to the
    driver. Wherever the kill lands in that start-up, every process of the study's group goes."""
    driver, _, ray_tmp = start_driver("early", tmp_path)
    deadline = time.time() + 300
    while not ray_processes(ray_tmp, title=b"ray") and time.time() < deadline:  # `ray start` is running
        assert driver.poll() is None, driver_output(driver, 10)
        time.sleep(0.05)
    assert ray_processes(ray_tmp, title=b"ray"), "Ray never started"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    no_ray_left(ray_tmp, timeout=120)
    assert not shows_a_traceback(Path(f"{driver.output}.err").read_text())  # the warden prints nothing on its way


def test_resume_unpickles_nothing_unsealed_and_deletes_nothing(tmp_path):
    """A study dir is data: a crafted tuner.pkl (or one written without this machine's key) is refused
    before Ray starts and never runs; a sweep whose state is missing keeps every finished trial."""
    import pickle

    env = study_env(XDG_CONFIG_HOME=str(tmp_path / "config"))  # this test's own key
    run_study_cli(tiny_args("sealed", "--set", "search.weight_decay=[0.1]", "--set", "search.lr=[3.0e-3]",
                            "--set", "train.epochs=1", "--set", "tracking.enabled=false", "--no-report"), tmp_path, env)
    sweep = tmp_path / "studies" / "sealed" / "grid"
    (sweep.parent / "trials.csv").unlink()  # unfinished as far as resume can tell, so it would restore the sweep
    genuine = (sweep / "tuner.pkl").read_bytes()
    trials = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    resume = ["resume", str(tmp_path / "studies" / "sealed")]
    (sweep / "tuner.pkl").write_bytes(pickle.dumps(RunsCode()))
    proc = subprocess.run([PYTHON, "-m", "study", *resume], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "tuner.pkl does not carry this machine's seal" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()
    assert "planned" not in proc.stdout  # refused before the sweep was announced, before Ray

    (sweep / "tuner.pkl").unlink()
    proc = subprocess.run([PYTHON, "-m", "study", *resume], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "no sweep state (tuner.pkl)" in proc.stderr, proc.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == trials  # nothing deleted

    # the genuine state, under another machine's key: refused too (with its own key, every resume test resumes)
    (sweep / "tuner.pkl").write_bytes(genuine)
    other = study_env(XDG_CONFIG_HOME=str(tmp_path / "elsewhere"))
    proc = subprocess.run([PYTHON, "-m", "study", *resume], cwd=tmp_path, env=other, capture_output=True, text=True)
    assert proc.returncode == 2 and "give this one its key" in proc.stderr, proc.stderr


def test_a_tracking_server_gone_for_good_ends_the_sweep_in_one_line(tmp_path):
    """No hang and no trial after trial failing on retries: the driver watches the server's health and,
    after the deadline (8 s here, LPWD_TRACKING_DEADLINE_S), stops the sweep and says how to resume."""
    from .conftest import free_port, wait_until_answers

    port = free_port()
    server = subprocess.Popen([PYTHON, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/m.db",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=tmp_path, env=study_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_until_answers(f"http://127.0.0.1:{port}/health", server, 90)
        driver, _, ray_tmp = start_driver("outage", tmp_path, "--set", f"tracking.uri=http://127.0.0.1:{port}",
                                          "--set", "train.epochs=30", LPWD_TRACKING_DEADLINE_S="8")
        deadline = time.time() + 300
        while not trial_workers(ray_tmp) and time.time() < deadline:  # a trial is training, and logging
            assert driver.poll() is None, driver_output(driver, 10)
            time.sleep(0.2)
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # gone for good
        server.wait()
    out, err = driver_output(driver, timeout=300)
    assert driver.returncode == 2, (out[-2000:], err[-2000:])
    last = err.strip().splitlines()[-1]
    assert "has not answered for 8 s" in last and "resume" in last and not shows_a_traceback(err), err[-3000:]
    no_ray_left(ray_tmp)


def test_sigterm_stops_like_ctrl_c_with_the_parent_run_killed(tmp_path):
    """`ray job stop` and schedulers send SIGTERM: one line with the resume command, no stack dump."""
    driver, _, ray_tmp = start_driver("term", tmp_path)
    deadline = time.time() + 300
    while not trial_workers(ray_tmp) and time.time() < deadline:
        assert driver.poll() is None, driver_output(driver, 10)
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)
    out, err = driver_output(driver, timeout=120)
    no_ray_left(ray_tmp)
    assert driver.returncode == 130, (out[-2000:], err[-2000:])
    assert "Resume with:" in err and not shows_a_traceback(err) and "SIGTERM" not in err, err[-3000:]
    client, runs = children(tmp_path / "mlflow.db", "term")
    exp = client.get_experiment_by_name("term")
    (parent,) = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
