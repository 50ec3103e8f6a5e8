"""``study suite`` end to end: two tiny studies (one fine-tuned from weights the platform
pretrains) on local Ray, tracked by a real MLflow server, then compared into one MLflow run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.store.table import read_rows

from .conftest import PYTHON, ROOT, no_ray_left, run_study_cli, shows_a_traceback, short_tmpdir, study_env

pytestmark = pytest.mark.slow
TINY = ["--set", "train.epochs=1", "--set", "data.train_subset=100", "--set", "search.seeds=[0,1,2]",
        "--set", "search.variants=[wd,lpwd]", "--set", "search.controls=[]", "--set", "search.lr=[1.0e-2]",
        "--set", "search.weight_decay=[1.0,3.0]"]


def test_a_suite_runs_its_studies_then_compares_them_in_mlflow(tmp_path, mlflow_server):
    configs = []
    for start in ("scratch", "finetune"):  # the shipped pair, pretrained for one epoch only
        raw = yaml.safe_load((ROOT / "configs" / "suite" / f"noisy-cnn-{start}.yaml").read_text())
        if "pretrain" in raw["model"]:
            raw["model"]["pretrain"]["epochs"] = 1
        configs.append(tmp_path / f"{start}.yaml")
        configs[-1].write_text(yaml.safe_dump(raw))
    cache = tmp_path / "cache"
    done = run_study_cli(["suite", *map(str, configs), *TINY], tmp_path,
                         study_env(MLFLOW_TRACKING_URI=mlflow_server, LPWD_STUDY_CACHE=str(cache)))
    out = done.stdout
    assert out.index("study 1 of 2: suite-noisy-cnn-scratch") < out.index("study 2 of 2: suite-noisy-cnn-finetune")
    assert "the suite: 0 of " in out and "ETA of the suite" in out
    assert out.count("pretraining cnn1d on mnist1d") == 1 and len(list(cache.glob("*.pt"))) == 1
    assert "suite-noisy-cnn-scratch: " in out and " min\n" in out  # each study's wall time
    assert "LPWD vs AdamW (wd) across 2 settings: better?" in out
    result = json.loads((tmp_path / "comparison" / "compare.json").read_text())
    assert [s["study"] for s in result["studies"]] == ["suite-noisy-cnn-scratch", "suite-noisy-cnn-finetune"]
    assert [s["start"] for s in result["studies"]] == ["from scratch", "fine-tuned from mnist1d"]

    client = MlflowClient(mlflow_server)
    (comparison,) = client.search_runs([client.get_experiment_by_name("study comparisons").experiment_id])
    for study in result["studies"]:
        parent = client.get_run(study["run_id"])  # the tag names the study's own parent run
        assert comparison.data.tags[f"study.{study['study']}"] == parent.info.run_id
        assert parent.data.tags["study"] == study["study"]
    assert comparison.data.tags["mlflow.note.content"].startswith("**LPWD vs AdamW (wd) across 2 settings")
    assert comparison.data.tags["mlflow.runName"] == "suite scratch.yaml, finetune.yaml"  # not the --out folder
    for question, claim in result["primary"].items():  # the pooled numbers are the run's metrics
        estimate = result["pooled"]["lpwd"][question]["estimate"]
        assert estimate is None or comparison.data.metrics[f"lpwd.pooled_{claim}_estimate"] == pytest.approx(estimate)
    assert any(k.startswith("lpwd.pooled_") for k in comparison.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(comparison.info.run_id, "compare")}
    assert {"compare/compare.html", "compare/compare.json", "compare/compare.csv"} <= artifacts

    # every fine-tuned trial started from the one cached file: its SHA-256 is each child's param
    digest = json.loads(next(cache.glob("*.json")).read_text())["sha256"]
    tuned = client.get_experiment_by_name("suite-noisy-cnn-finetune").experiment_id
    children = [r for r in client.search_runs([tuned]) if "ray_trial_id" in r.data.tags]
    assert children and {r.data.params["pretrained_sha256"] for r in children} == {digest}


def quick_twin(tmp_path, name: str, **changes) -> str:
    raw = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    raw.update(name=name, **changes)
    raw["search"]["layer_schedule"] = ["linear"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_suite_checks_every_study_before_any_trains(tmp_path):
    """A mistake in the last study of a suite is found before the first study's dir exists."""
    first = quick_twin(tmp_path, "first")
    last = quick_twin(tmp_path, "last", resources={"cpu": 512, "gpu": 0})
    done = subprocess.run([PYTHON, "-m", "study", "suite", first, last, "--no-tracking"], cwd=tmp_path,
                          env=study_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and not shows_a_traceback(done.stderr), done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: suite: {last}: resources.cpu=512 but this machine has ") and line.endswith(
        "; nothing was started")
    assert not (tmp_path / "studies").exists()


def test_an_interrupted_suite_resumes_as_one_from_its_printed_line(tmp_path):
    """Ctrl-C during a suite prints the suite's own command; following it finishes every study and the
    comparison (the interrupt may land in either study: the outcome is the same)."""
    configs = [quick_twin(tmp_path, name) for name in ("one", "two")]
    args = ["suite", *configs, *TINY, "--set", "tracking.enabled=false", "--no-tracking"]
    ray_tmp = short_tmpdir("s")
    env = study_env(RAY_TMPDIR=ray_tmp)
    with open(tmp_path / "suite.out", "w") as out, open(tmp_path / "suite.err", "w") as err:
        driver = subprocess.Popen([PYTHON, "-m", "study", *args], cwd=tmp_path, env=env, stdout=out, stderr=err,
                                  start_new_session=True)
    first = tmp_path / "studies" / "one" / "trials.csv"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not (
            first.exists() and any(r["status"] == "TERMINATED" for r in read_rows(first.parent))):
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=300)
    no_ray_left(ray_tmp)
    said = (tmp_path / "suite.err").read_text()
    assert driver.returncode == 130 and not shows_a_traceback(said), said[-3000:]
    (hint,) = [line for line in said.splitlines() if "Resume with:" in line]
    command = hint.split("Resume with: ", 1)[1]
    assert command.startswith(f"{PYTHON} -m study suite {configs[0]} {configs[1]} --set ")
    resumed = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    no_ray_left(ray_tmp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the trials study one finished before the interrupt are not in the resumed suite's count (its ETA)
    left = int(re.search(r"study 1 of 2: one \((\d+) trials left to train", resumed.stdout).group(1))
    assert left < len(read_rows(tmp_path / "studies" / "one"))
    result = json.loads((tmp_path / "comparison" / "compare.json").read_text())
    assert [s["study"] for s in result["studies"]] == ["one", "two"]
    for name in ("one", "two"):
        rows = read_rows(tmp_path / "studies" / name)
        assert len(rows) == 12 and all(r["status"] == "TERMINATED" for r in rows)
