"""The tidy table: one row per trial, the hinge between running and analysing.

``trials.csv`` in the study dir holds, per trial, its cell (variant, lr,
weight_decay, seed), the fixed settings that matter for comparison, its Ray
status and every metric of its last report. It is rewritten (atomically) as
trials start, finish or fail, so an interrupted study still has its table;
analysis and plots read only this file. ``study.run.table_callback`` writes it during a sweep.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from ..define.metrics import EPOCH_METRICS, TRIAL_PARAMS, trial_name

TABLE = "trials.csv"
SEE_ERROR_FILE = "see the trial's error.txt"  # the error column when Ray kept no message
# the per-epoch ``lr`` metric (the scheduled lr) would clash with the cell's lr: Ray and MLflow keep it
METRIC_COLUMNS = [m for m in EPOCH_METRICS if m not in TRIAL_PARAMS]
COLUMNS = ["trial_id", "experiment", "status", *TRIAL_PARAMS, "base", "model", "dataset",
           "epochs_done", *METRIC_COLUMNS, "trained_as", "shared", "mlflow_run_id", "error"]


def rows_of(experiment: str, trial_id: str, status: str, params: dict, result: dict, fixed: dict,
            error: str | None) -> list[dict]:
    """One row per planned trial a Ray trial stands for (several when identical trials were shared)."""
    row = {"trial_id": trial_id, "experiment": experiment, "status": status,
           **{k: params.get(k) for k in TRIAL_PARAMS}, **fixed,
           # from the trial's own epoch counter: Ray's iteration count also counts replayed reports
           "epochs_done": result.get("epoch", -1) + 1,
           **{k: result.get(k) for k in METRIC_COLUMNS}, "trained_as": trial_name(params),
           "mlflow_run_id": result.get("mlflow_run_id"), "error": error}
    stands_for = params.get("stands_for") or [{}]
    return [{**row, **planned, "shared": int(len(stands_for) > 1)} for planned in stands_for]


def read_rows(study_dir: Path) -> list[dict]:
    path = Path(study_dir) / TABLE
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _intact(rows: list[dict]) -> bool:
    """Every row has every column: a table cut short mid-line leaves its last row without some."""
    return all(None not in row and all(row.get(c) is not None for c in COLUMNS) for row in rows)


def trial_folders(study_dir: Path) -> dict[str, Path]:
    """trial id -> folder, for every trial Ray started (``<experiment>/<trial_id>/params.json``)."""
    return {p.parent.name: p.parent for p in sorted(Path(study_dir).glob("*/*/params.json"))}


def reports_in(folder: Path) -> list[dict]:
    """Every report Ray kept for one trial (``result.json`` in its folder), in order; [] before the first.

    A report cut short by a hard kill is skipped: the ones before it stand.
    """
    results = folder / "result.json"
    reports = []
    for line in results.read_bytes().splitlines() if results.exists() else []:
        try:  # a line cut anywhere: mid-character, mid-value, or at a point that still parses as JSON
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and "epoch" in report:
            reports.append(report)
    return reports


def rebuilt_rows(folder: Path, fixed: dict) -> list[dict]:
    """A trial's rows from its own folder: the cell in params.json, its last report in result.json."""
    config = json.loads((folder / "params.json").read_text())
    last = (reports_in(folder) or [{}])[-1]
    status = "TERMINATED" if last.get("finished") == 1 else "ERROR" if (folder / "error.txt").exists() else "INTERRUPTED"
    error = SEE_ERROR_FILE if status == "ERROR" else None
    return rows_of(folder.parent.name, folder.name, status, config.get("cell", config), last, fixed, error)


def read_table(study_dir: Path, fixed: dict, write_back: bool = False) -> list[dict]:
    """``trials.csv``, or, if it is damaged or misses a trial Ray started, the table rebuilt from the trial folders.

    The table is only a summary of what each trial folder holds, so nothing is lost
    with it; a rebuilt table is written back by whoever owns the study dir
    (``report``, a resume), and ``status`` shows it as rebuilt without writing.
    """
    try:
        rows = read_rows(study_dir)
    except (csv.Error, UnicodeDecodeError, OSError):
        rows = [{}]
    folders = trial_folders(study_dir)
    if _intact(rows) and set(folders) <= {r["trial_id"] for r in rows}:
        return _checked(study_dir, rows, folders, fixed, write_back)
    rebuilt = _as_read([row for folder in folders.values() for row in rebuilt_rows(folder, fixed)])
    # planned trials that never started have no folder: keep their intact rows
    rest = [r for r in rows if _intact([r]) and r["trial_id"] not in folders]
    print(f"note: {Path(study_dir) / TABLE} was damaged or incomplete; rebuilt {len(rebuilt)} rows from the "
          f"{len(folders)} trial folders" + (" and wrote it back" if write_back else ""), file=sys.stderr)
    if write_back:
        write_rows(study_dir, rebuilt + rest)
    return rebuilt + rest


def _checked(study_dir: Path, rows: list[dict], folders: dict[str, Path], fixed: dict, write_back: bool) -> list[dict]:
    """The table's finished trials checked against their own folders: ``trials.csv`` is derived data, so
    where a row's numbers differ from its finished trial's last report (an edited or stale copy), the
    trial's own results stand, and one line says so. A folder whose last report is not a finished
    trial's proves nothing (an object-store mirror pulled before a resume finished it): it is skipped."""
    finished = {r["trial_id"] for r in rows if r["status"] == "TERMINATED" and r["trial_id"] in folders}
    rebuilt = {t: _as_read(rebuilt_rows(folders[t], fixed)) for t in finished}
    rebuilt = {t: mine for t, mine in rebuilt.items() if all(r["status"] == "TERMINATED" for r in mine)}
    finished = set(rebuilt)
    wrong = sorted(t for t in finished if [{c: r[c] for c in METRIC_COLUMNS} for r in rows if r["trial_id"] == t]
                   != [{c: r[c] for c in METRIC_COLUMNS} for r in rebuilt[t]])
    if not wrong:
        return rows
    fixed_rows, done = [], set()
    for r in rows:
        if r["trial_id"] not in wrong:
            fixed_rows.append(r)
        elif r["trial_id"] not in done:
            done.add(r["trial_id"])
            fixed_rows += rebuilt[r["trial_id"]]
    print(f"note: {Path(study_dir) / TABLE} disagrees with {len(wrong)} trials' own results (first: "
          f"{wrong[0]}); their results are used" + (" and the table written back" if write_back else ""),
          file=sys.stderr)
    if write_back:
        write_rows(study_dir, fixed_rows)
    return fixed_rows


def _as_read(rows: list[dict]) -> list[dict]:
    """Rows as ``read_rows`` gives them (strings, empty for None), so rebuilt and read tables compare equal."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    buffer.seek(0)
    return list(csv.DictReader(buffer))


def fixed_columns(cfg) -> dict:
    """The settings every row of a study shares that matter when comparing studies."""
    return {"base": cfg.train.base, "model": cfg.model.name, "dataset": cfg.data.name}


def write_rows(study_dir: Path, rows: list[dict]) -> None:
    path = Path(study_dir) / TABLE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
