"""``ray job submit`` of a study to a real local Ray head that this test starts and stops."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import PYTHON, ROOT, free_port, stop_ray, study_env, tiny_args, wait_until_answers

pytestmark = pytest.mark.slow
RAY = str(Path(PYTHON).parent / "ray")


def test_ray_job_submit_runs_a_study(tmp_path):
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = study_env(RAY_AUTH_MODE="disabled", RAY_TMPDIR=temp)
    dash = free_port()
    start = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--temp-dir={temp}", "--num-cpus=2", "--disable-usage-stats"]
    # its own process group: the test stops this head and nothing else (never `ray stop`, which would
    # also end a user's own running study)
    head = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_until_answers(f"http://127.0.0.1:{dash}/api/version", head, 120), "the Ray head did not start"
        args = tiny_args("job", "--set", f"storage={tmp_path}/studies", "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                         "--set", "search.weight_decay=[0.0,0.1]", "--set", "train.epochs=2", "--no-report")
        args[1] = "configs/quick.yaml"  # relative to the uploaded working dir
        job = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(ROOT),
                              "--", PYTHON, "-m", "study", *args], env=env, capture_output=True, text=True, timeout=400)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in (job.stdout + job.stderr)
        rows = list(csv.DictReader(open(tmp_path / "studies" / "job" / "trials.csv")))
        assert len(rows) == 2 * 2 * 2 and all(r["status"] == "TERMINATED" for r in rows)
        assert max(float(r["test_acc_at_best_val"]) for r in rows) > 0.5
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        stop_ray(temp)  # anything of this head's that left its group (found by its RAY_TMPDIR), and only that
        shutil.rmtree(temp, ignore_errors=True)

