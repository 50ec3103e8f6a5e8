"""Interrupted sweeps lose nothing; concurrent trials drop no metric in the default SQLite store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from study.present.report import trial_reports
from study.store.table import read_rows
from study.run.trial import EPOCH_METRICS

from .conftest import (ARGS, PYTHON, children, final_metrics, listeners, no_ray_left, ray_processes, run_study_cli,
                       short_tmpdir, shows_a_traceback, study_env, tiny_args)

pytestmark = pytest.mark.slow

def test_sqlite_store_keeps_every_metric_under_8_concurrent_trials(tmp_path):
    run_study_cli(tiny_args("conc", *ARGS, "--set", "resources.cpu=0.25", "--set", "train.epochs=2"), tmp_path)
    rows = read_rows(tmp_path / "studies" / "conc")
    client, runs = children(tmp_path / "mlflow.db", "conc")
    assert len(runs) == len(rows) == 8
    for run in runs:
        for metric in EPOCH_METRICS:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
            assert steps == [0, 1], (run.info.run_name, metric, steps)


def start_driver(name, work, *extra, **env_extra):
    """A study driver in its own process group and Ray temp dir, so the test can kill all of it.

    Its output goes to files (``driver_output``), not pipes: a driver kept waiting by a
    frozen trial must never block on a full pipe nobody reads yet.
    """
    ray_tmp = short_tmpdir("k")
    env = study_env(RAY_TMPDIR=ray_tmp, **env_extra)
    with open(work / f"{name}.out", "w") as out, open(work / f"{name}.err", "w") as err:
        driver = subprocess.Popen([PYTHON, "-m", "study", *tiny_args(name, *ARGS, *extra)], cwd=work, env=env,
                                  stdout=out, stderr=err, start_new_session=True)
    driver.output = work / name
    return driver, env, ray_tmp


def driver_output(driver, timeout: float) -> tuple[str, str]:
    """Once the driver has ended: its stdout and stderr."""
    driver.wait(timeout=timeout)
    return (Path(f"{driver.output}.out").read_text(), Path(f"{driver.output}.err").read_text())


def wait_for(study_dir, done: int, timeout: float = 300):
    """Until ``done`` trials finished and one is running (with a frozen trial, a state the sweep stays in)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = read_rows(study_dir) if (study_dir / "trials.csv").exists() else []
        if sum(r["status"] == "TERMINATED" for r in rows) >= done and any(r["status"] == "RUNNING" for r in rows):
            return
        time.sleep(0.2)
    pytest.fail(f"the sweep never reached {done} finished trials and a running one")


def checkpoint_index(name: str) -> int:
    """``checkpoint_000003`` -> 3."""
    return int(name.rsplit("_", 1)[1])


def newest_checkpoint_in(study: str | Path, experiment: str = "grid", fs=None):
    """For ``freeze_a_trial_mid_training``: a trial's newest checkpoint index (-1: none) in a study on ``fs``.

    Local disk by default, or a bucket's pyarrow filesystem; a checkpoint counts once its ``state.pt`` is there.
    """
    fs = fs or pafs.LocalFileSystem()

    def newest(trial: str) -> int:
        listed = fs.get_file_info(pafs.FileSelector(f"{study}/{experiment}/{trial}", recursive=True,
                                                    allow_not_found=True))
        return max((checkpoint_index(i.path.split("/")[-2]) for i in listed
                    if i.path.endswith("/state.pt") and i.path.split("/")[-2].startswith("checkpoint_")), default=-1)
    return newest


def recorded_epoch_in(study: Path, experiment: str = "grid"):
    """For ``freeze_a_trial_mid_training``: the newest epoch (-1: none) the driver recorded for a trial.

    A worker writes a checkpoint before the driver has its report: a kill between the
    two loses that report from Ray's ``result.json`` (MLflow, logged by the trial, has it).
    """
    def recorded(trial: str) -> int:
        return max((r["epoch"] for r in trial_reports(study, {"experiment": experiment, "trial_id": trial})),
                   default=-1)
    return recorded


def trial_of(pid: int) -> str | None:
    """The trial a worker is running: Ray Tune runs each trial in ``.../working_dirs/<trial>``."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    return cwd.name if cwd.parent.name == "working_dirs" else None


def freeze_a_trial_mid_training(workers, newest_checkpoint, epochs: int = 4, recorded=None,
                                timeout: float = 300) -> tuple[str, int]:
    """SIGSTOP the worker of a trial that has a checkpoint and epochs still to train: (trial id, worker pid).

    ``workers()`` lists the pids of the trial workers to choose from. With ``recorded``
    (``recorded_epoch_in``), only a trial whose newest checkpoint's report the driver has
    recorded: a test that counts Ray's reports after a kill.

    No race to win. A worker writes its trial's checkpoints itself (one per epoch here,
    so index = epoch) before it trains on, so once it is stopped its working dir and
    checkpoints stay as they are, and the driver's record of its reports only grows; the
    freeze is kept only if they show a trial between its first checkpoint and its last
    epoch, else the worker is let go and another
    moment tried. A stopped worker holds its trial, so the sweep cannot finish: every
    other trial runs to its end and the sweep waits there, a state the test reaches
    whatever the machine's load (``wait_for``).
    """
    def mid_training(trial: str) -> bool:
        newest = newest_checkpoint(trial)
        return 0 <= newest < epochs - 1 and (recorded is None or recorded(trial) >= newest)

    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in workers():
            trial = trial_of(pid)
            if trial is None or not mid_training(trial):
                continue
            os.kill(pid, signal.SIGSTOP)
            if trial_of(pid) == trial and mid_training(trial):
                return trial, pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("no trial could be stopped between its first checkpoint and its last epoch")


def trial_workers(ray_tmp):
    """Pids of the Ray actor processes running this study's trials."""
    return ray_processes(ray_tmp, b"ray::ImplicitFunc")


SHIFT = 10  # checkpoint names moved past what Ray's saved state knows


def test_a_killed_gcs_ends_the_study_with_the_resume_command(tmp_path):
    """Ray's core ends the driver itself once its GCS is gone (C++, no Python handler runs); the local
    head's warden sees the head die first and says how to resume, and nothing of that Ray is left."""
    driver, env, ray_tmp = start_driver("nogcs", tmp_path, RAY_gcs_rpc_server_reconnect_timeout_s="5")
    wait_for(tmp_path / "studies" / "nogcs", done=0)
    (gcs,) = [pid for pid in ray_processes(ray_tmp) if b"gcs_server" in Path(f"/proc/{pid}/cmdline").read_bytes()[:300]]
    os.kill(gcs, signal.SIGKILL)
    out, err = driver_output(driver, timeout=180)
    no_ray_left(ray_tmp)
    assert driver.returncode != 0 and not shows_a_traceback(err), err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("error: the study's local Ray stopped under it")]
    assert len(said) == 1 and said[0].endswith(f"Resume with: {PYTHON} -m study resume "
                                                f"{tmp_path / 'studies' / 'nogcs'}"), err[-3000:]


def on_loopback(address: str) -> bool:
    """``127.0.0.1:80``, ``[::1]:80``, ``[::ffff:127.0.0.1]:80`` (IPv4-mapped, as some machines report every
    IPv4 listener) and any other loopback form ``ss`` prints."""
    import ipaddress

    host = address.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    ip = ipaddress.ip_address(host)
    return (ip.ipv4_mapped or ip).is_loopback if ip.version == 6 else ip.is_loopback


def test_loopback_forms_are_told_apart_from_other_addresses():
    assert all(on_loopback(a) for a in ("127.0.0.1:6379", "[::1]:8265", "[::ffff:127.0.0.1]:40001", "127.0.0.53:53"))
    assert not any(on_loopback(a) for a in ("0.0.0.0:6379", "[::]:8265", "10.0.0.5:40001", "[::ffff:10.0.0.5]:1"))


def test_kill_9_mid_sweep_then_resume(tmp_path, reference):
    driver, env, ray_tmp = start_driver("killed", tmp_path)
    study_dir = tmp_path / "studies" / "killed"
    frozen, _ = freeze_a_trial_mid_training(lambda: trial_workers(ray_tmp), newest_checkpoint_in(study_dir),
                                            recorded=recorded_epoch_in(study_dir))
    wait_for(study_dir, done=7)  # the other seven finish; the frozen one is mid-training at the kill
    # local means local: every server of the study's Ray (GCS, raylet, workers, agents, metrics) on loopback
    bound = listeners([driver.pid, *ray_processes(ray_tmp)])
    assert bound and all(on_loopback(a) for a in bound), bound
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its Ray must follow it
    driver.wait()
    no_ray_left(ray_tmp)  # the study's Ray went with its driver
    finished_before = {r["trial_id"]: r for r in read_rows(study_dir) if r["status"] == "TERMINATED"}
    assert len(finished_before) == 7 and frozen not in finished_before
    # Ray's saved state may name a checkpoint that Ray pruned after its last save (ray-project/ray#27790):
    # make that certain by moving the interrupted trial's checkpoints past every name it knows ...
    trial_dir = study_dir / "grid" / frozen
    for folder in sorted(trial_dir.glob("checkpoint_*"), reverse=True):
        folder.rename(trial_dir / f"checkpoint_{checkpoint_index(folder.name) + SHIFT:06d}")
    # ... and truncate the newest: it must fall back to the one before, never resume wrongly or fail
    newest = max(trial_dir.glob("checkpoint_*/state.pt"), key=lambda p: p.parent.name)
    newest.write_bytes(newest.read_bytes()[:100])
    newest_index = checkpoint_index(newest.parent.name)

    # a copy of the interrupted study must not continue the original's MLflow runs: one line, nothing touched
    copy = tmp_path / "copy-of-killed"
    shutil.copytree(study_dir, copy, symlinks=True)
    table_before = (study_dir / "trials.csv").read_bytes()
    refused = subprocess.run([PYTHON, "-m", "study", "resume", str(copy)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines() == [
        f"error: {copy} is a copy of {study_dir.resolve()}, whose MLflow runs a resume would continue; resume "
        f"{study_dir.resolve()} itself, or move (not copy) a study dir to resume it elsewhere"]
    assert (study_dir / "trials.csv").read_bytes() == table_before
    assert not ray_processes(ray_tmp)

    # the kill left Ray's sweep state whole (saves go through study.store.atomicfs) ...
    sweep_state = next((study_dir / "grid").glob("basic-variant-state-*.json"))
    saved_state = sweep_state.read_bytes()
    assert saved_state.startswith(b"\x80") and saved_state.endswith(b".")  # a complete pickle: PROTO ... STOP
    # ... and a sweep state damaged otherwise (an older version's kill) is refused, not restarted over
    sweep_state.write_bytes(b"")
    damaged = subprocess.run([PYTHON, "-m", "study", "resume", str(study_dir)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert damaged.returncode == 2, damaged.stderr[-2000:]
    assert damaged.stderr.strip().splitlines() == [
        f"error: {sweep_state} is damaged (0 bytes, not a complete pickle), so Ray cannot resume that sweep: its "
        f"finished trials stay in trials.csv (study report {study_dir} reports them); start a new study with --set "
        f"name=NEW to train the rest"]
    assert (study_dir / "trials.csv").read_bytes() == table_before
    assert not ray_processes(ray_tmp)
    sweep_state.write_bytes(saved_state)

    resumed = run_study_cli(["resume", str(study_dir)], tmp_path, env)
    no_ray_left(ray_tmp)
    assert not [p.name for p in study_dir.rglob("*.partial")]  # writes the kill cut short were removed
    assert not list(study_dir.rglob("lpwd-checkpoint-*"))  # checkpoints are staged outside what Tune uploads
    assert f"checkpoint {newest.parent} is unreadable" in resumed.stdout + resumed.stderr
    rows = read_rows(study_dir)
    assert len(rows) == len({r["trial_id"] for r in rows}) == 8
    assert all(r["status"] == "TERMINATED" for r in rows)
    for r in rows:  # finished trials were not rerun
        if r["trial_id"] in finished_before:
            assert r == finished_before[r["trial_id"]]
    for r in rows:  # no epoch trained twice, but for the trial whose newest checkpoint was destroyed
        # a replay re-reports, trains nothing; Ray's result.json may lack reports a hard kill cut off
        # (MLflow, below, is the complete record)
        trained = [report["epoch"] for report in trial_reports(study_dir, r) if not report.get("replayed")]
        assert trained, r["trial_id"]
        if r["trial_id"] != frozen:
            assert trained == sorted(set(trained)), (r["trial_id"], trained)
    assert final_metrics(rows) == reference  # identical to the uninterrupted run (CPU determinism)
    # its new checkpoints continued after the newest one on disk, never writing over a name already there
    assert all(checkpoint_index(d.name) > newest_index for d in trial_dir.glob("checkpoint_*")), \
        sorted(d.name for d in trial_dir.glob("checkpoint_*"))
    client, runs = children(tmp_path / "mlflow.db", "killed")
    assert len(runs) == 8  # no duplicate child runs
    for run in runs:
        # MLflow is logged by the trial itself, one timing per trained epoch (Ray's result.json may miss
        # epochs its snapshot lost). Finished trials: each epoch exactly once. The interrupted one, whose
        # newest checkpoint was corrupted, retrains from its previous good one (or scratch).
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "images_per_s"))
        assert sorted(set(steps)) == [0, 1, 2, 3], (run.info.run_name, steps)
        if run.data.tags["ray_trial_id"] in finished_before:
            assert steps == [0, 1, 2, 3], (run.info.run_name, steps)
        else:  # epochs held by its last good checkpoint (the one before the corrupted) trained once
            good = newest_index - SHIFT - 1
            assert all(steps.count(e) == 1 for e in range(good + 1)), (run.info.run_name, good, steps)
            assert max(steps.count(e) for e in steps) <= 2, (run.info.run_name, steps)


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


def test_ctrl_c_stops_with_one_line_then_resume_finishes(tmp_path, reference):
    driver, env, ray_tmp = start_driver("ctrlc", tmp_path)
    study_dir = tmp_path / "studies" / "ctrlc"
    freeze_a_trial_mid_training(lambda: trial_workers(ray_tmp), newest_checkpoint_in(study_dir))
    wait_for(study_dir, done=7)
    driver.send_signal(signal.SIGINT)  # Tune stops the frozen trial too; the warden's kill ends its worker
    # an impatient second Ctrl-C once the driver has said how to resume (Ray is shutting down): it ends
    # the driver at once, without Ray's atexit traceback, and loses nothing (the resume below finishes)
    deadline = time.time() + 120
    while "interrupted;" not in Path(f"{driver.output}.err").read_text() and time.time() < deadline:
        time.sleep(0.1)
    if driver.poll() is None:
        driver.send_signal(signal.SIGINT)
    out, err = driver_output(driver, timeout=120)
    no_ray_left(ray_tmp)
    assert driver.returncode == 130
    hint = [line for line in err.splitlines() if "resume" in line.lower()]
    assert hint == [f"interrupted; nothing finished is lost. Resume with: {PYTHON} -m study resume {study_dir}"]
    assert not shows_a_traceback(err), err[-3000:]
    # the interrupted study is moved before it is resumed: it finishes where it is now, its runs follow it
    moved = tmp_path / "moved" / "ctrlc"
    moved.parent.mkdir()
    study_dir.rename(moved)
    resumed = run_study_cli(["resume", str(moved)], tmp_path, env)
    no_ray_left(ray_tmp)
    # the platform's words only: what is left to train, and no raw notice of Ray's own restores
    assert "sweep: 1 of 8 trials left to train" in resumed.stdout, resumed.stdout[-2000:]
    assert "Restored on" not in resumed.stdout + resumed.stderr and "Checkpoint(filesystem" not in resumed.stderr
    assert not study_dir.exists()  # nothing written where the study used to be
    assert final_metrics(read_rows(moved)) == reference
    client, runs = children(tmp_path / "mlflow.db", "ctrlc")
    assert len(runs) == 8
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["study_dir"] == str(moved.resolve()) and parent.info.status == "FINISHED"
