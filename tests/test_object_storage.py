"""A study stored in S3 (moto's real S3 server on 127.0.0.1): killed, resumed and reported from elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from study.store.table import read_rows

from .conftest import ARGS, PYTHON, ROOT, children, final_metrics, free_port, no_ray_left, run_study_cli, study_env
from .test_resilience import (freeze_a_trial_mid_training, newest_checkpoint_in, start_driver, trial_workers,
                              wait_for)

pytestmark = pytest.mark.slow

BUCKET = "lpwd"
STORAGE = f"s3://{BUCKET}/studies"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server in a process group of its own, with a bucket; the AWS variables that reach it."""
    work = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = open(work / "moto.log", "w")
    server = subprocess.Popen([str(Path(PYTHON).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="testing", secret_key="testing",
                           region="us-east-1", allow_bucket_creation=True)
    deadline = time.time() + 120
    while True:
        try:
            fs.create_dir(BUCKET)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"moto's server did not start: {(work / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield env, fs
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def machine(tmp_path, name: str, aws: dict) -> dict:
    """Another machine, as far as the study can tell: its own cache (where mirrors live) and Ray temp dir."""
    return {**aws, "XDG_CACHE_HOME": str(tmp_path / name / "cache")}


def objects(fs, prefix: str) -> set[str]:
    return {i.path[len(prefix) + 1:] for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
            if i.type == pafs.FileType.File}


def test_a_study_in_s3_killed_mid_sweep_resumes_and_reports_from_another_machine(tmp_path, s3, reference):
    aws, fs = s3
    driver, env, ray_tmp = start_driver("in-s3", tmp_path, "--set", f"storage={STORAGE}",
                                        **machine(tmp_path, "a", aws))
    mirror_a = tmp_path / "a" / "cache" / "lpwd-study" / "s3" / BUCKET / "studies" / "in-s3"
    frozen, _ = freeze_a_trial_mid_training(lambda: trial_workers(ray_tmp),
                                            newest_checkpoint_in(f"{BUCKET}/studies/in-s3", fs=fs))
    wait_for(mirror_a, done=7)  # the driver's working copy: its table is pushed on every change
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    no_ray_left(ray_tmp)
    stored = objects(fs, f"{BUCKET}/studies/in-s3")
    assert {"study.yaml", "trials.csv", "mlflow_parent.json", ".study-definition.json"} <= stored
    assert any(p.startswith("grid/") and "/checkpoint_" in p for p in stored)  # Ray's checkpoints: in the bucket
    finished_before = {r["trial_id"]: r for r in read_rows(mirror_a) if r["status"] == "TERMINATED"}
    assert len(finished_before) == 7 and frozen not in finished_before

    # another machine, which never saw the study: status, then resume, then the report, all by URI
    other = study_env(RAY_TMPDIR=ray_tmp, **machine(tmp_path, "b", aws))
    uri = f"{STORAGE}/in-s3"
    status = run_study_cli(["status", uri], tmp_path, other)
    assert "in-s3" in status.stdout
    resumed = run_study_cli(["resume", uri], tmp_path, other)
    no_ray_left(ray_tmp)
    assert f"results: {uri}" in resumed.stdout
    mirror_b = tmp_path / "b" / "cache" / "lpwd-study" / "s3" / BUCKET / "studies" / "in-s3"
    rows = read_rows(mirror_b)
    assert len(rows) == len({r["trial_id"] for r in rows}) == 8
    assert all(r["status"] == "TERMINATED" for r in rows), resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for r in rows:  # finished trials were not rerun
        if r["trial_id"] in finished_before:
            assert r == finished_before[r["trial_id"]]
    assert final_metrics(rows) == reference  # identical to the uninterrupted run on local disk
    assert {"report.html", "heatmaps.png", "robustness.csv"} <= objects(fs, f"{BUCKET}/studies/in-s3")
    with fs.open_input_stream(f"{BUCKET}/studies/in-s3/trials.csv") as f:  # the bucket has the final table
        assert read_rows_from(f.read(), tmp_path) == rows

    # the recorded definition travels with the study: an edited study.yaml is refused on a third machine too
    with fs.open_input_stream(f"{BUCKET}/studies/in-s3/study.yaml") as f:
        edited = f.read().replace(b"epochs: 4", b"epochs: 8")
    with fs.open_output_stream(f"{BUCKET}/studies/in-s3/study.yaml") as f:
        f.write(edited)
    third = study_env(RAY_TMPDIR=ray_tmp, **machine(tmp_path, "c", aws))
    refused = subprocess.run([PYTHON, "-m", "study", "resume", uri], cwd=tmp_path, env=third, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "train.epochs" in refused.stderr, refused.stderr

    client, runs = children(tmp_path / "mlflow.db", "in-s3")
    assert len(runs) == 8  # one child run per trial: the resume continued the runs it found
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["study_dir"] == uri and parent.info.status == "FINISHED"
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "images_per_s"))
        assert sorted(set(steps)) == [0, 1, 2, 3], (run.info.run_name, steps)
        if run.data.tags["ray_trial_id"] in finished_before:
            assert steps == [0, 1, 2, 3], (run.info.run_name, steps)
        else:  # the frozen trial: at most the epoch in flight at the kill is trained again
            assert len(steps) <= 5, (run.info.run_name, steps)


def read_rows_from(data: bytes, tmp_path) -> list[dict]:
    folder = tmp_path / "downloaded"
    folder.mkdir(exist_ok=True)
    (folder / "trials.csv").write_bytes(data)
    return read_rows(folder)


def test_an_unreachable_bucket_is_one_line_before_ray_starts(tmp_path, s3):
    aws, _ = s3
    closed = {**aws, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    env = study_env(**machine(tmp_path, "a", closed))
    proc = subprocess.run([PYTHON, "-m", "study", "run", str(ROOT / "configs" / "quick.yaml"), "--set",
                           f"storage={STORAGE}", "--set", "name=nowhere", *ARGS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: storage: cannot write to {STORAGE}/nowhere ("), lines
    assert lines[0].endswith("); check the bucket, AWS_ENDPOINT_URL and the AWS credentials")
    assert not (tmp_path / "a" / "cache" / "lpwd-study" / "s3" / BUCKET / "studies" / "nowhere").exists()
