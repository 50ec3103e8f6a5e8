"""A real tiny study on local Ray, tracked by a real MLflow server, reported in real Chromium."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pytest
import requests
from PIL import Image, ImageStat

from study.define.claims import CLAIMS
from study.run.trial import EPOCH_METRICS
from study.analyse.verdict import markdown

from .conftest import PYTHON, ChromiumPage, layout_in_chromium, run_study_cli, study_env, tiny_args

pytestmark = pytest.mark.slow
EPOCHS = 3
CHILD_PARAMS = {"arm", "variant", "base", "lr", "weight_decay", "seed", "layer_schedule", "model", "dataset", "epochs",
                "batch_size", "lr_schedule"}


@pytest.fixture(scope="module")
def study(tmp_path_factory, mlflow_server):
    work = tmp_path_factory.mktemp("e2e")
    proc = run_study_cli(tiny_args("e2e", "--set", "search.seeds=[0,1]"), work,
                         study_env(MLFLOW_TRACKING_URI=mlflow_server))
    study_dir = work / "studies" / "e2e"
    with open(study_dir / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    return {"dir": study_dir, "rows": rows, "stdout": proc.stdout, "server": mlflow_server}


def test_every_trial_ran_and_learned(study):
    rows = study["rows"]
    cells = {(r["arm"], float(r["lr"]), float(r["weight_decay"]), int(r["seed"])) for r in rows}
    assert len(rows) == len(cells) == 2 * 2 * 3 * 2
    assert all(r["status"] == "TERMINATED" for r in rows)
    # lambda = 0 is the same trial for wd and lpwd: trained once (as none), shared visibly in both rows
    zero = [r for r in rows if float(r["weight_decay"]) == 0]
    assert all(r["shared"] == "1" and r["trained_as"].startswith("none ") for r in zero)
    assert len({r["trial_id"] for r in rows}) == len(rows) - len(zero) // 2
    assert "24 planned trials, 20 to train" in study["stdout"]
    healthy = [r for r in rows if float(r["weight_decay"]) < 1000]
    assert all(r["diverged"] == "0" and int(r["epochs_done"]) == EPOCHS for r in healthy)
    assert max(float(r["test_acc_at_best_val"]) for r in healthy) > 0.85  # chance is 0.10


def test_divergence_is_recorded_not_fatal(study):
    exploded = [r for r in study["rows"] if float(r["weight_decay"]) >= 1000]
    assert exploded and all(r["diverged"] == "1" for r in exploded)
    assert all(int(r["epochs_done"]) <= EPOCHS for r in exploded)


def test_run_prints_where_results_are(study, tmp_path):
    assert f"results: {study['dir']}" in study["stdout"]
    assert f"{PYTHON} -m study status {study['dir']}" in study["stdout"]  # works as printed, venv or not
    assert "report: " in study["stdout"]
    # the run ends with the verdict, written from the numbers: its headline first, then where the details are
    verdict = study["stdout"][study["stdout"].index("Verdict."):]
    # two seeds: too few for the paired test, and the verdict says how many are needed
    assert "- LPWD vs AdamW (wd): better? cannot be shown with 2 seeds: the paired test needs 3 (run 1 more seed)" \
        in verdict
    assert f"{PYTHON} -m study report {study['dir']} --verbose" in verdict and "2 seeds per cell" not in verdict
    verbose = run_study_cli(["report", str(study["dir"]), "--verbose", "--out", str(tmp_path / "verbose")],
                            tmp_path).stdout
    assert "2 seeds per cell" in verbose and "Holm-corrected over all" in verbose


def api(server, path, payload):
    r = requests.post(f"{server}/api/2.0/mlflow/{path}", json=payload, timeout=30)
    r.raise_for_status()
    return r.json()


def present(value) -> bool:
    return value is not None and value == value  # robustness.json writes NaN as null


def test_mlflow_server_has_parent_and_one_child_per_trial(study):
    server = study["server"]
    exp = requests.get(f"{server}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "e2e"}, timeout=30).json()["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags) if "mlflow.parentRunId" not in t]
    children = [(r, t) for r, t in zip(runs, tags) if "ray_trial_id" in t]
    summaries = {t["summary_of"]: r for r, t in zip(runs, tags) if "summary_of" in t}
    assert len(parents) == 1 and len(runs) == 1 + len(children) + len(summaries)
    parent_id = parents[0]["info"]["run_id"]
    assert len(children) == len({r["trial_id"] for r in study["rows"]})
    assert {t["ray_trial_id"] for _, t in children} == {r["trial_id"] for r in study["rows"]}
    # trials.csv links every row to the run that holds its epochs
    assert {r["info"]["run_id"] for r, _ in children} == {r["mlflow_run_id"] for r in study["rows"]}
    for run, t in children:
        assert t["mlflow.parentRunId"] == parent_id and t["study"] == "e2e"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert CHILD_PARAMS <= set(params)
        epochs = int(next(r for r in study["rows"] if r["trial_id"] == t["ray_trial_id"])["epochs_done"])
        row = next(r for r in study["rows"] if r["trial_id"] == t["ray_trial_id"])
        for metric in EPOCH_METRICS:
            history = requests.get(f"{server}/api/2.0/mlflow/metrics/get-history",
                                   params={"run_id": run["info"]["run_id"], "metric_key": metric}, timeout=30).json()
            steps = sorted({m["step"] for m in history.get("metrics", [])})
            assert steps == list(range(epochs)), (metric, t["mlflow.runName"], steps)
        # accuracies in percentage points, as in the report (trials.csv keeps fractions)
        last = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert last["test_acc_at_best_val"] == pytest.approx(100 * float(row["test_acc_at_best_val"]))
        assert last["r_op"] == pytest.approx(float(row["r_op"]), nan_ok=True)
    # the report is attached to the parent run
    listed = requests.get(f"{server}/api/2.0/mlflow/artifacts/list",
                          params={"run_id": parent_id, "path": "report"}, timeout=30).json()
    names = {f["path"].split("/")[-1] for f in listed.get("files", [])}
    assert {"report.html", "robustness.csv", "robustness.json", "trials.csv"} <= names
    figures = requests.get(f"{server}/api/2.0/mlflow/artifacts/list",
                           params={"run_id": parent_id, "path": "figures"}, timeout=30).json()
    assert {"heatmaps.png", "difference.png", "tuning_curves.png"} <= {f["path"].split("/")[-1] for f in figures["files"]}
    # the parent carries the verdict as its description and each arm's summary metrics
    parent_tags = {t["key"]: t["value"] for t in parents[0]["data"]["tags"]}
    parts = json.loads((study["dir"] / "robustness.json").read_text())["parts"]
    assert parent_tags["mlflow.note.content"] == markdown(parts)  # headline in bold, a bullet per part
    assert parent_tags["mlflow.note.content"].startswith(f"**{parts[0]}**")
    assert parent_tags["mlflow.source.name"] and "mlflow.source.git.commit" in parent_tags
    # one summary run per arm, nested under the parent, with the same metric names (the chart view's series)
    assert set(summaries) == {"wd", "lpwd"} and "metrics" not in parents[0]["data"]
    report = {a["arm"]: a for a in json.loads((study["dir"] / "robustness.json").read_text())["arms"]}
    for arm, run in summaries.items():
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent_id and tags["mlflow.runName"] == arm
        assert "lower is better: `lambda_regret`" in tags["mlflow.note.content"]  # the description says which way
        assert run["info"]["status"] == "FINISHED"
        assert {claim for claim in CLAIMS if present(report[arm][claim])} <= set(metrics)
        assert metrics["best"] == pytest.approx(report[arm]["best"]) and "decay_share" in metrics
        if present(report[arm]["near_optimal_2pt"]):  # in percent of cells, as the description says
            assert metrics["near_optimal_2pt"] == pytest.approx(100 * report[arm]["near_optimal_2pt"])
    assert {f"diff_{claim}" for claim in CLAIMS if present(report["lpwd"][f"diff_{claim}"])} <= {
        m["key"] for m in summaries["lpwd"]["data"]["metrics"]}
    notes = {t["key"]: t["value"] for t in exp.get("tags", [])}["mlflow.note.content"]
    assert "percentage points" in notes and "summary run" in notes and "e2e: trials" in notes
    # the study's two saved views, in MLflow's Views menu (experiment tags that the UI reads)
    views = {k: json.loads(v)["name"] for k, v in {t["key"]: t["value"] for t in exp["tags"]}.items()
             if k.startswith("mlflow.sharedViewState.")}
    assert sorted(views.values()) == ["e2e: arms side by side", "e2e: trials"]


def test_report_files(study):
    d = study["dir"]
    summary = json.loads((d / "robustness.json").read_text())
    assert {s["arm"] for s in summary["arms"]} == {"wd", "lpwd"}
    assert summary["verdict"].startswith("LPWD vs AdamW (wd):") and summary["settings"]["selected_by"] == "best_val_acc"
    (comparison,) = summary["comparisons"]
    assert comparison["arm"] == "lpwd" and comparison["answers"] == {"better": "cannot be shown",
                                                                      "more_robust": "cannot be shown"}
    # the report's λ_eff comes from the plan recorded when the study was created
    plan = json.loads((d / "plan.json").read_text())
    assert {a["arm"]: a["effective_decay"] for a in plan["arms"]} == {a["arm"]: a["effective_decay"] for a in summary["arms"]}
    page = (d / "report.html").read_text()
    assert all(f"run {r['mlflow_run_id']}" in page for r in study["rows"])  # each heatmap cell names its runs
    for name in ["heatmaps", "difference", "tuning_curves", "cell_distribution", "effective_decay", "training_curves"]:
        img = Image.open(d / f"{name}.png")
        img.verify()
        img = Image.open(d / f"{name}.png").convert("L")
        assert img.size[0] > 300 and ImageStat.Stat(img).stddev[0] > 5  # not blank


def test_a_png_the_export_gave_up_on_is_exported_again(chromium, tmp_path, monkeypatch):
    """kaleido gives up on a figure past its render timeout (a busy machine) and deletes its file, and
    plotly's batched export says nothing: the report exports what is missing again, in real Chromium,
    and attaches only PNGs that exist."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from study.present.report import export_pngs

    monkeypatch.setenv("BROWSER_PATH", chromium)
    calls, real = [], pio.write_images

    def gives_up_once(figs, paths, **kw):
        calls.append([p.name for p in paths])
        real(figs, paths, **kw)
        if len(calls) == 1:
            paths[0].unlink()  # what kaleido does with a render that timed out

    monkeypatch.setattr(pio, "write_images", gives_up_once)
    pngs = [tmp_path / "a.png", tmp_path / "b.png"]
    assert export_pngs([go.Figure(go.Scatter(y=[1, 2])), go.Figure(go.Bar(y=[3, 1]))], pngs) == pngs
    assert calls == [["a.png", "b.png"], ["a.png"]] and Image.open(pngs[0]).size[0] == 900


@pytest.mark.parametrize("width", [800, 1400])
def test_report_fits_the_window_without_horizontal_overflow(study, chromium, tmp_path, width):
    layout, _ = layout_in_chromium(chromium, study["dir"] / "report.html", width, tmp_path)
    assert layout["view"] == width and layout["page"] <= width, layout
    assert len(layout["figs"]) >= 6 and max(layout["figs"]) <= width, layout
    # readable at both widths: no text under 12 px, heatmap cells in one size in every panel, no title cut off
    sizes = layout["fonts"]
    assert min(min(v) for v in sizes.values()) >= 12 and len(set(sizes["heatmap-label"])) == 1, sizes
    assert layout["clipped"] == [], layout["clipped"]


def test_report_renders_in_headless_chromium(study, chromium, tmp_path):
    html = study["dir"] / "report.html"
    shot = tmp_path / "shot.png"
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=10000"]
    dom = subprocess.run(base + ["--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert not errors, errors
    assert dom.stdout.count('class="main-svg"') >= 6  # plotly drew every figure from the embedded plotly.js
    assert "Verdict." in dom.stdout and "<details>" in dom.stdout and "2 seeds per cell" in dom.stdout  # folded
    subprocess.run(base + [f"--screenshot={shot}", "--window-size=1400,1800", html.as_uri()],
                   capture_output=True, timeout=120)
    img = Image.open(shot).convert("L")
    assert ImageStat.Stat(img).stddev[0] > 10


def test_status_command(study):
    proc = run_study_cli(["status", str(study["dir"])], study["dir"])
    assert f"planned trials {len(study['rows'])} done, 0 running, 0 pending, 0 errored" in proc.stdout
    trained = len({r["trial_id"] for r in study["rows"]})  # what the run's progress bar counts
    assert f"trials to train: {trained} of {trained} finished; trials ran for" in proc.stdout
    assert f"sweep: {trained} trials to train" in study["stdout"] and "ETA" not in proc.stdout  # nothing left
    assert "…" not in proc.stdout  # piped, the table is printed whole, not squeezed to 80 columns


def test_an_edited_table_does_not_change_the_verdict(study, tmp_path):
    """trials.csv is derived from the trials' own results: 0.25 added to lpwd's accuracies in a copy's
    table is caught against the trial folders, said in one line, and the answers stay the original's."""
    copy = tmp_path / "edited"
    shutil.copytree(study["dir"], copy)
    rows = list(csv.DictReader(open(copy / "trials.csv", newline="")))
    for r in rows:
        if r["arm"] == "lpwd" and r["weight_decay"] != "0.0":
            r["test_acc_at_best_val"] = str(float(r["test_acc_at_best_val"]) + 0.25)
    with open(copy / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    original = json.loads(run_study_cli(["report", str(study["dir"]), "--json"], tmp_path).stdout)
    edited = run_study_cli(["report", str(copy), "--json"], tmp_path)
    notes = [line for line in edited.stderr.splitlines() if "disagrees" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {copy / 'trials.csv'} disagrees with ")
    assert json.loads(edited.stdout)["comparisons"] == original["comparisons"]


def test_a_truncated_table_is_rebuilt_from_the_trial_folders(study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study["dir"], copy)
    table = copy / "trials.csv"
    table.write_text(table.read_text()[: len(table.read_text()) // 3])  # cut mid-row
    status = run_study_cli(["status", str(copy)], tmp_path)
    assert f"{len(study['rows'])} done, 0 running, 0 pending, 0 errored" in status.stdout
    assert "trials.csv was damaged or incomplete; rebuilt" in status.stderr
    assert len(table.read_text()) < len((study["dir"] / "trials.csv").read_text())  # status only reads
    report = run_study_cli(["report", str(copy), "--out", str(tmp_path / "report")], tmp_path)
    assert "and wrote it back" in report.stderr
    def by_trial(rows):
        return sorted(tuple(r.values()) for r in rows)

    with open(table) as f:  # the rebuilt table is the one the sweep wrote, row for row
        assert by_trial(csv.DictReader(f)) == by_trial(study["rows"])


def test_resume_of_finished_study_reruns_nothing(study):
    before = (study["dir"] / "trials.csv").read_text()
    work, env = study["dir"].parent.parent, study_env(MLFLOW_TRACKING_URI=study["server"])
    run_study_cli(["resume", str(study["dir"])], work, env)
    # `study run` of the same config on the existing dir resumes too, asking nothing
    run_study_cli(tiny_args("e2e", "--set", "search.seeds=[0,1]", "--no-report"), work, env)
    after = list(csv.DictReader(open(study["dir"] / "trials.csv")))
    def by_trial(rows):
        return {r["trial_id"]: (r["status"], r["epochs_done"], r["test_acc_at_best_val"]) for r in rows}

    assert by_trial(after) == by_trial(csv.DictReader(before.splitlines()))
    runs = api(study["server"], "runs/search", {"experiment_ids": [
        requests.get(f"{study['server']}/api/2.0/mlflow/experiments/get-by-name",
                     params={"experiment_name": "e2e"}, timeout=30).json()["experiment"]["experiment_id"]],
        "max_results": 1000})["runs"]
    assert len(runs) == len({r["trial_id"] for r in after}) + 1 + 2  # no duplicate children, one parent, 2 arms


def rendered_text(chromium, url, profile):
    """The visible text of a page after its scripts ran, in headless Chromium."""
    import html
    import re

    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                          f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


# what MLflow's runs table shows once the study's saved view is applied (its name on the Views button):
# the count of matching runs, the column headers, each run's name and the names cut short by their cell
RUNS_TABLE = """(() => {
  const m = document.body.innerText.match(/(\\d+) matching runs/);
  const names = [...document.querySelectorAll('.ag-cell a[href*="/runs/"]')];
  if (!m || !names.length || !document.body.innerText.includes(VIEW)) return null;
  const cut = names.filter(a => {
    const cell = a.closest('.ag-cell');
    for (let e = a.firstElementChild || a; e !== cell; e = e.parentElement)
      if (e.scrollWidth > e.clientWidth + 1) return true;
    return a.getBoundingClientRect().right > cell.getBoundingClientRect().right + 1;
  }).map(a => a.textContent);
  const headers = [...document.querySelectorAll('.ag-header-cell')].map(h => h.innerText.trim());
  return {matching: +m[1], headers: headers, names: names.map(a => a.textContent), cut: cut,
          text: document.body.innerText};
})()"""


def runs_table(chromium, url, view, profile, expected):
    """The runs table of ``url`` in Chromium once the saved view ``view`` lists ``expected`` runs."""
    page = ChromiumPage(chromium, url, profile, width=2400, height=1600)  # every column and row drawn
    try:
        probe = RUNS_TABLE.replace("VIEW", json.dumps(view))
        return page.wait_for(f"(() => {{ const t = {probe}; return t && t.matching === {expected} ? t : null; }})()") \
            or page.wait_for(probe, timeout=1)
    finally:
        page.close()


def test_mlflow_ui_lists_the_trials_with_their_names_whole(study, chromium, tmp_path):
    """The printed link opens the study's own saved view in MLflow's model-training view: this study's
    trials, flat, with the η, λ, seed and accuracy columns, and no run name cut by its column."""
    server = study["server"]
    exp = requests.get(f"{server}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "e2e"}, timeout=30).json()["experiment"]
    tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    url = next(line.split(": ", 1)[1] for line in study["stdout"].splitlines() if "MLflow, the trials: " in line)
    assert url.startswith(f"{server}/#/experiments/{exp['experiment_id']}/runs?viewStateShareKey=")
    assert "workflowType=machine_learning" in url
    trained = {r["trained_as"] for r in study["rows"]}
    table = runs_table(chromium, url, "e2e: trials", tmp_path / "p1", len(trained))
    assert table and table["matching"] == len(trained), table
    assert sorted(table["names"]) == sorted(trained) and table["cut"] == [], table
    assert {"lr", "weight_decay", "seed", "best_val_acc", "test_acc_at_best_val"} <= set(table["headers"])
    assert "Detect Issues" not in table["text"] and "Evaluations" not in table["text"]  # not the GenAI overview
    child = next(r for r in study["rows"] if r["arm"] == "lpwd" and float(r["weight_decay"]) == 0.1)
    page = url.split("/runs?")[0] + f"/runs/{child['mlflow_run_id']}?workflowType=machine_learning"
    text = rendered_text(chromium, page, tmp_path / "p2")
    assert child["trained_as"] in text and "Parent run" in text and "study e2e" in text, text[:2000]
    assert "Evaluations" not in text
    for key in ("variant", "layer_schedule", "weight_decay"):
        assert key in text
    # η and λ are the view's metric columns too: MLflow sorts them as numbers (params sort as text: 1, 10, 3, 30)
    logged = requests.get(f"{server}/api/2.0/mlflow/runs/get", params={"run_id": child["mlflow_run_id"]},
                          timeout=30).json()["run"]["data"]
    metrics = {m["key"]: m["value"] for m in logged["metrics"]}
    assert metrics["weight_decay"] == 0.1 and metrics["lr"] == float(child["lr"])

def test_mlflow_chart_view_puts_the_arms_side_by_side(study, chromium, tmp_path):
    """The link the run prints opens MLflow's chart view on the arms' summary runs alone, named after
    the arms and listed flat (one series per arm in every chart), each chart a metric every arm's run carries."""
    server = study["server"]
    exp = requests.get(f"{server}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "e2e"}, timeout=30).json()["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000,
                                       "filter": "tags.summary_of LIKE '%'"})["runs"]
    keys = {m["key"] for r in runs for m in r["data"]["metrics"]}
    url = next(line.split(": ", 1)[1] for line in study["stdout"].splitlines() if "the arms side by side: " in line)
    assert url.startswith(f"{server}/#/experiments/{exp['experiment_id']}/runs?") and "compareRunsMode=CHART" in url
    table = runs_table(chromium, url, "e2e: arms side by side", tmp_path / "p3", 2)
    assert table and sorted(table["names"]) == ["lpwd", "wd"] and table["cut"] == [], table
    from study.track.mlflow_views import CHARTS_TITLE

    assert f"{CHARTS_TITLE} ({len(keys)})" in " ".join(table["text"].split()), table["text"][:3000]
