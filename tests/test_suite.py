"""``study suite`` end to end: two tiny studies (one fine-tuned from weights the platform
pretrains) on local Ray, tracked by a real MLflow server, then compared into one MLflow run."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from .conftest import ROOT, run_study_cli, study_env

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
    assert out.index("[1/2] suite-noisy-cnn-scratch") < out.index("[2/2] suite-noisy-cnn-finetune")
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
