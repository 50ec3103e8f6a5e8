"""A sequential seed plan on real Ray: waves trained only while a question is open, the look's line, the
report's looks, and a kill -9 between waves and in a later wave resuming to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from study.store.table import read_rows

from .conftest import ARGS, PYTHON, children, final_metrics, no_ray_left, run_study_cli, study_env, tiny_args
from .test_resilience import start_driver

pytestmark = pytest.mark.slow

# 4 trials a seed (one η, two λ, wd and lpwd), 2 epochs: the first wave is seeds 0-2, the second seed 3
PLAN = ["--set", "search.seeds={start: 3, step: 1, max: 4}", "--set", "search.lr=[3.0e-2]",
        "--set", "search.weight_decay=[0.1,100000.0]", "--set", "train.epochs=2"]
# λ too small to tell the arms apart in 2 epochs, no futility margin, no curtailment: look 1 leaves both
# questions open, so the second wave trains
OPEN = ["--set", "search.weight_decay=[0.001,0.003]", "--set", "verdict.curtail=false"]


def experiments(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["experiment"]] = out.get(r["experiment"], 0) + 1
    return out


def test_a_question_decided_at_the_first_look_trains_no_second_wave(tmp_path):
    """A futility margin no interval can miss (1000 pt): every question is ruled out at look 1, so only
    the first wave trains; the run, the report, robustness.json and status all say where it stopped."""
    proc = run_study_cli(tiny_args("seq1", *PLAN, "--set", "verdict.min_effect=1000"), tmp_path)
    study_dir = tmp_path / "studies" / "seq1"
    rows = read_rows(study_dir)
    assert experiments(rows) == {"grid": 12} and {r["seed"] for r in rows} == {"0", "1", "2"}
    assert "looks at 3, 4 seeds" in proc.stdout
    assert "every question decided at look 1 of 2 (3 seeds); the study stops there." in proc.stdout
    result = json.loads((study_dir / "robustness.json").read_text())
    lpwd = next(c for c in result["comparisons"] if c["arm"] == "lpwd")
    assert lpwd["answers"] == {"better": "ruled out", "more_robust": "ruled out"}
    assert {q: (s["look"], s["seeds"], s["stop"]) for q, s in lpwd["sequential"].items()} == {
        "better": (1, 3, "futile"), "more_robust": (1, 3, "futile")}
    claim = lpwd["claims"]["lambda_regret"]
    assert -1000 < claim["lo"] < claim["hi"] < 1000
    client, runs = children(tmp_path / "mlflow.db", "seq1")
    assert len(runs) == 12  # one run per trained trial
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"  # stopped by its look, not left RUNNING for trials never planned
    assert "decided at look 1 of 2 (3 seeds)" in parent.data.tags["mlflow.note.content"]
    status = subprocess.run([PYTHON, "-m", "study", "status", str(study_dir)], cwd=tmp_path, env=study_env(),
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "0 pending" in status.stdout and "every question decided at look 1 of 2" in status.stdout


def wait_until(study_dir, test, driver, timeout: float = 400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = read_rows(study_dir) if (study_dir / "trials.csv").exists() else []
        if test(rows):
            return
        assert driver.poll() is None, "the driver ended before the state the test waits for"
        time.sleep(0.2)
    pytest.fail("the study never reached the state the test waits for")


def kill(driver, ray_tmp):
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its Ray must follow it
    driver.wait()
    no_ray_left(ray_tmp)


def test_kill_9_between_waves_and_in_a_later_wave_then_resume(tmp_path):
    """Killed once its first wave has finished (at the end of that sweep, in the look, or as the next wave
    starts: wherever it lands) and again inside the second wave, the study resumes to the trials, metrics
    and answers of an uninterrupted run, each wave trained once."""
    reference_dir = tmp_path / "ref"
    reference_dir.mkdir()
    # start_driver's ARGS (a checkpoint every epoch), with the report
    run_study_cli(tiny_args("seq", *[a for a in ARGS if a != "--no-report"], *PLAN, *OPEN), reference_dir)
    expected = read_rows(reference_dir / "studies" / "seq")
    assert experiments(expected) == {"grid": 12, "grid-wave2": 4}  # look 1 left a question open
    expected_answers = json.loads((reference_dir / "studies" / "seq" / "robustness.json").read_text())["comparisons"]

    driver, env, ray_tmp = start_driver("seq", tmp_path, *PLAN, *OPEN)
    study_dir = tmp_path / "studies" / "seq"
    wait_until(study_dir, lambda rows: sum(r["status"] == "TERMINATED" for r in rows) >= 12, driver)
    kill(driver, ray_tmp)

    with open(tmp_path / "resume.out", "w") as out, open(tmp_path / "resume.err", "w") as err:
        resumed = subprocess.Popen([PYTHON, "-m", "study", "resume", str(study_dir)], cwd=tmp_path, env=env,
                                   stdout=out, stderr=err, start_new_session=True)
    wait_until(study_dir, lambda rows: any(r["experiment"] == "grid-wave2" for r in rows), resumed)
    kill(resumed, ray_tmp)

    run_study_cli(["resume", str(study_dir)], tmp_path, env)
    no_ray_left(ray_tmp)
    rows = read_rows(study_dir)
    assert experiments(rows) == {"grid": 12, "grid-wave2": 4}
    assert all(r["status"] == "TERMINATED" for r in rows)
    assert final_metrics(rows) == final_metrics(expected)  # CPU determinism: the same numbers
    answers = json.loads((study_dir / "robustness.json").read_text())["comparisons"]
    assert [(c["arm"], c["answers"], c["sequential"]) for c in answers] == \
        [(c["arm"], c["answers"], c["sequential"]) for c in expected_answers]
