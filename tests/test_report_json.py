"""``study report DIR --json``: the answers a script reads, with nothing drawn, written or trained."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from study.define.config import dump, load_config
from study.run.plan import record_plan
from study.analyse.simulate import Scenario, simulate
from study.store.studydir import record_definition
from study.store.table import write_rows

from .conftest import PYTHON, ROOT, study_env

QUICK = ROOT / "configs" / "quick.yaml"
PROBE = """import json, sys
from study.cli import main
rc = main(["report", sys.argv[1], "--json"])
print(json.dumps({"rc": rc, "training code imported": sorted(m for m in ("torch", "ray", "plotly") if m in sys.modules)}),
      file=sys.stderr)
"""


def finished_study(tmp_path):
    """A study dir as the platform leaves it (study.yaml, definition, plan, trials.csv), 5 seeds of two
    simulated arms on the quick grid, lpwd regaining half its loss at the two largest λ."""
    cfg = load_config(QUICK, ["search.variants=[wd,lpwd]", "search.layer_schedule=[linear]", "search.controls=[]",
                              f"storage={tmp_path}"])
    d = cfg.study_dir
    d.mkdir(parents=True)
    (d / "study.yaml").write_text(dump(cfg))
    record_definition(d, cfg)
    record_plan(d, cfg)
    table = simulate(Scenario("robust", recover=0.5), 5, np.random.default_rng(0))
    rows = table.assign(trial_id=[f"t{i}" for i in range(len(table))], experiment="grid", layer_schedule="linear",
                        val_acc=table["best_val_acc"], final_test_acc=table["test_acc_at_best_val"],
                        paper_top10_test_acc=table["test_acc_at_best_val"])
    write_rows(d, rows.to_dict("records"))
    return d


def test_report_json_prints_the_answers_and_touches_nothing(tmp_path):
    d = finished_study(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    proc = subprocess.run([PYTHON, "-c", PROBE, str(d)], cwd=tmp_path, env=study_env(), capture_output=True,
                          text=True, timeout=120)
    probe = json.loads(proc.stderr.strip().splitlines()[-1])
    assert probe == {"rc": 0, "training code imported": []}, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    (lpwd,) = out["comparisons"]
    assert lpwd["arm"] == "lpwd" and lpwd["baseline"] == "wd"
    assert set(lpwd["answers"]) == {"better", "more_robust"}
    assert all(a in ("shown", "shown worse", "not shown", "cannot be shown") for a in lpwd["answers"].values())
    assert lpwd["answers"]["more_robust"] == "shown"  # half the loss at large λ regained, 5 seeds
    regret = lpwd["claims"]["lambda_regret"]
    assert regret["lo"] <= regret["diff"] <= regret["hi"] < 0 and regret["df"] == 4 and regret["p_adj"] < 0.05
    assert {c["name"] for c in out["claims"] if c["primary"]} == {"best", "lambda_regret"}
    assert out["headline"].startswith("LPWD vs AdamW (wd): better? ") and out["parts"][0] == out["headline"]
    # λ_eff read from the plan, not from a model built for the report
    plan = json.loads((d / "plan.json").read_text())
    assert {a["arm"]: a["effective_decay"] for a in out["arms"]} == {a["arm"]: a["effective_decay"] for a in plan["arms"]}
    # nothing written: no report, no figure, the table and the plan as they were
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before


def _contents(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_reads_of_a_study_without_a_plan_leave_its_dir_byte_identical(tmp_path):
    """A study from before plans were recorded: report --json and status compute what they need in memory,
    say so in one line, and write nothing (only run and resume record a plan)."""
    d = finished_study(tmp_path)
    (d / "plan.json").unlink()
    before = _contents(d)
    proc = subprocess.run([PYTHON, "-m", "study", "report", str(d), "--json"], cwd=tmp_path, env=study_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [line for line in proc.stderr.splitlines() if "plan.json" in line]
    assert notes == [f"note: {d}/plan.json is missing or does not match the study; λ_eff computed now and not "
                     "recorded (study resume records it)"]
    assert {a["arm"]: a["effective_decay"] for a in json.loads(proc.stdout)["arms"]}["lpwd"] < 1
    status = subprocess.run([PYTHON, "-m", "study", "status", str(d)], cwd=tmp_path, env=study_env(),
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-2000:]
    assert _contents(d) == before
