"""``study report``: robustness.csv/json, report.html, PNGs, a terminal summary, MLflow artifacts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from .analysis import cells, fmt, needs_more_seeds, scored, summarize
from .errors import UserError
from .plots import cell_distribution, difference_heatmaps, heatmaps, training_curves, tuning_curves
from .table import read_rows

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """What kaleido will use for PNGs: BROWSER_PATH, else a Chromium on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if Path(env).exists() else None
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def trial_reports(study_dir: Path, row: dict) -> list[dict]:
    """Every report Ray kept for one trial, in order (``<experiment>/<trial_id>/result.json``); [] before the first."""
    path = study_dir / row["experiment"] / row["trial_id"] / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_history(study_dir: Path, row: dict) -> pd.DataFrame | None:
    """Per-epoch results of one trial as a table, None if it reported nothing."""
    reports = trial_reports(study_dir, row)
    return pd.DataFrame(reports) if reports else None


def best_cell_histories(study_dir: Path, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {}
    c = cells(df)
    for variant, vc in c.groupby("variant", sort=False):
        best = vc.loc[vc["mean"].idxmax()]
        rows = df[(df["variant"] == variant) & (df["lr"] == best["lr"]) & (df["weight_decay"] == best["weight_decay"])]
        h = trial_history(study_dir, rows.iloc[0].to_dict())
        if h is not None:
            out[f"{variant} lr={best['lr']:.0e} wd={best['weight_decay']:g}"] = h
    return out


def print_summary(summary: pd.DataFrame, metric: str, baseline: str, one_seed: bool) -> None:
    t = Table(title=f"robustness of {metric} (points)")
    for col in ["variant", "best (lr, λ)", "best", "near-opt ≤1pt", "near-opt ≤2pt", "λ-spread@best η",
                "worst", "grid mean", "diverged", f"sig ± vs {baseline}"]:
        t.add_column(col)
    for _, r in summary.iterrows():
        sig = "-" if pd.isna(r.get("sig_better")) else f"+{int(r['sig_better'])} / −{int(r['sig_worse'])}"
        best = fmt(r["best_mean"]) + ("" if pd.isna(r["best_sd"]) else f" ± {fmt(r['best_sd'])}")
        t.add_row(r["variant"], f"{r['best_lr']:.0e}, {r['best_weight_decay']:g}", best,
                  f"{r['near_optimal_1pt']:.0%}", f"{r['near_optimal_2pt']:.0%}", fmt(r["decay_spread_at_best_lr"]),
                  fmt(r["worst_mean"]), fmt(r["grid_mean"]), str(r["diverged_cells"]), sig)
    Console(width=160).print(t)
    if one_seed:
        Console().print("[yellow]one seed per cell: differences are shown without a significance test; "
                        "add seeds (search.seeds) for Welch's t-tests[/]")


def write_report(study_dir: Path, metric: str = "test_acc_at_best_val", baseline: str = "wd") -> Path:
    study_dir = Path(study_dir)
    table = pd.DataFrame(read_rows(study_dir))
    if table.empty:
        raise UserError(f"{study_dir}/trials.csv has no trials yet; run or resume the study first")
    if metric not in table.columns:
        raise UserError(f"--metric {metric!r} is not a column of trials.csv; use one of the metric columns, "
                        "e.g. test_acc_at_best_val, final_test_acc, best_val_acc, paper_top10_test_acc")
    df = scored(table, metric)
    if df.empty:
        raise UserError(f"{study_dir} has no finished trials yet; wait for some or resume the study")
    summary = summarize(table, metric, baseline)
    one_seed = needs_more_seeds(df)
    summary.to_csv(study_dir / "robustness.csv", index=False)
    (study_dir / "robustness.json").write_text(summary.to_json(orient="records", indent=1))

    figures = {"heatmaps": heatmaps(df, metric), "difference": difference_heatmaps(df, baseline),
               "tuning_curves": tuning_curves(df, metric), "cell_distribution": cell_distribution(df, metric),
               "training_curves": training_curves(best_cell_histories(study_dir, df))}
    figures = {k: f for k, f in figures.items() if f is not None}
    note = ("<p><b>One seed per cell:</b> differences have no significance test; add seeds.</p>" if one_seed else "")
    parts = [f"<h1>Robustness report: {study_dir.name}</h1>",
             f"<p>metric: <code>{metric}</code> (model selected on the validation split; points), baseline "
             f"<code>{baseline}</code>, {len(df)} finished trials. Diverged cells count as chance accuracy.</p>", note,
             summary.to_html(index=False, float_format=lambda x: f"{x:.3g}", na_rep="-")]
    for i, fig in enumerate(figures.values()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    html = study_dir / "report.html"
    html.write_text("<!doctype html><html><head><meta charset='utf-8'><title>"
                    f"{study_dir.name} robustness</title></head><body style='font-family:sans-serif'>"
                    + "\n".join(parts) + "</body></html>")
    artifacts = [html, study_dir / "robustness.csv", study_dir / "robustness.json", study_dir / "trials.csv"]
    browser = find_browser()
    if browser:
        os.environ.setdefault("BROWSER_PATH", browser)
        for name, fig in figures.items():
            png = study_dir / f"{name}.png"
            fig.write_image(png, scale=1)
            artifacts.append(png)
    print_summary(summary, metric, baseline, one_seed)
    print(f"report: {html}")
    if not browser:
        print("no Chromium found for PNG export: install one (apt-get install chromium) or set BROWSER_PATH")
    attach(study_dir, artifacts)
    return html


def attach(study_dir: Path, artifacts: list[Path]) -> None:
    """Attach the report to the study's MLflow parent run, if the study is tracked."""
    from .tracking import PARENT_FILE, StudyRun, finish_study

    saved = study_dir / PARENT_FILE
    if saved.exists():
        finish_study(StudyRun(**json.loads(saved.read_text())), artifacts)
