"""``study report``: the verdict, robustness.csv/json, report.html, PNGs, a terminal summary, MLflow artifacts.

The verdict, the summary table and every figure come from one ``summarize``
call on the tidy table, so the terminal, the page and MLflow say the same.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from html import escape
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from ..analyse.analysis import ALPHA, CONFIDENCE, CONTROL, SELECTED_BY, arm_of, best_cells, cells, grid, scored, summarize
from ..analyse.answers import answers_json
from ..analyse.paired import CORRECTIONS, TESTS, seeds_needed, smallest_p
from ..analyse.verdict import answers, looks_words, markdown, verdict_parts
from ..define.claims import CLAIMS, QUESTIONS
from ..define.location import PLAN_FILE
from ..errors import UserError
from ..store.loader import Study, effective_decays
from ..store.table import reports_in

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FIGURES = ("heatmaps", "difference", "decomposition", "tuning_curves", "cell_distribution", "effective_decay",
           "training_curves")
ALIASES = {"adamw": "wd", "sgdw": "wd"}
LABELS = {"test_acc_at_best_val": "test accuracy at the best validation epoch",
          "final_test_acc": "final-epoch test accuracy",
          "paper_top10_test_acc": "the paper's mean of the 10 best test accuracies (test-selected epochs)",
          "best_val_acc": "best validation accuracy", "val_acc": "final validation accuracy"}


def find_browser() -> str | None:
    """What kaleido will use for PNGs: BROWSER_PATH, else a Chromium on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if Path(env).exists() else None
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def trial_reports(study_dir: Path, row: dict) -> list[dict]:
    """Every report Ray kept for one trial of the table, in order; [] before the first."""
    return reports_in(study_dir / row["experiment"] / row["trial_id"])


def trial_history(study_dir: Path, row: dict) -> pd.DataFrame | None:
    """Per-epoch results of one trial as a table, one row per epoch in order; None if it reported nothing.

    After an interruption ``result.json`` can hold an epoch twice (retrained from an older
    checkpoint, or a finished trial's replayed final report): its latest report stands.
    """
    reports = trial_reports(study_dir, row)
    if not reports:
        return None
    return pd.DataFrame(reports).drop_duplicates("epoch", keep="last").sort_values("epoch", ignore_index=True)


def extreme_cell_histories(study_dir: Path, df: pd.DataFrame) -> dict:
    """Per arm, the per-epoch history of its best cell (on validation) and its worst cell (on test)."""
    out = {}
    c = cells(df)
    for arm, mine in c.groupby("arm", sort=False):
        top = best_cells(mine)
        picks = {"best": (top.iloc[0], len(top) - 1), "worst": (mine.loc[mine["mean"].idxmin()], 0)}
        for which, (cell, tied) in picks.items():
            rows = df[(df["arm"] == arm) & (df["lr"] == cell["lr"]) & (df["weight_decay"] == cell["weight_decay"])]
            h = trial_history(study_dir, rows.iloc[0].to_dict())
            if h is not None and {"val_acc", "r_op", "weight_norm"} <= set(h):
                # a curve is one trial's: of cells tied on validation, the first is drawn and the others counted
                more = f" (+{tied} tied on validation)" if tied else ""
                out[(arm, which)] = (f"η={cell['lr']:g} λ={cell['weight_decay']:g}{more}", h)
    return out


CLIPPED = "‡"  # an interval cut at what the quantity can be (0 and 100 points, 0 and 100% of cells, ...)


def _interval(row, key: str, scale: float = 1.0, digits: int = 1) -> str:
    x, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if x is None or pd.isna(x):
        return "-"
    f = f"{{:.{digits}f}}"
    text = f.format(scale * x)
    if lo is not None and not pd.isna(lo):
        text += f" [{f.format(scale * lo)}, {f.format(scale * hi)}]" + (CLIPPED if row.get(f"{key}_clipped") else "")
    return text


def _claim_cell(r, name: str) -> str:
    """An arm's value of a claim with its t-interval over seeds, in the claim's unit."""
    unit = CLAIMS[name].unit
    scale, digits = (100.0, 0) if unit == "share" else (1.0, 2 if unit == "decades" else 1)
    return _interval(r, name, scale, digits)


def _answer_cell(r, question: str, base: str) -> str:
    if r["arm"] == base:
        return "baseline"
    answer = str(r.get(f"answer_{question}", "") or "-")
    return "control (not asked)" if answer == CONTROL else answer


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as the reader sees it, one column per arm (terminal and HTML alike): the two
    answers, the primary claims, the exploratory ones, then the bookkeeping. Arms as columns keep
    it narrow enough for a terminal and a phone."""
    base, primary = summary.attrs["baseline"], summary.attrs["primary"]
    columns = {}
    for _, r in summary.iterrows():
        vs = "baseline" if r["arm"] == base else (
            "-" if pd.isna(r.get("cells_tested")) or not r.get("cells_tested")
            else f"+{int(r['sig_better'])} / −{int(r['sig_worse'])} of {int(r['cells_tested'])}")
        col = {f"{QUESTIONS[q]}? (vs {base})": _answer_cell(r, q, base) for q in QUESTIONS}
        for name in primary.values():
            col[f"▸ {CLAIMS[name].short} ({CLAIMS[name].reading})"] = _claim_cell(r, name)
        for name, c in CLAIMS.items():
            if name not in primary.values():
                col[f"{c.short} ({c.reading})"] = _claim_cell(r, name)
        col.update({
            "best cell η, λ (seed-mean validation)": f"{r['best_lr']:g}, {r['best_weight_decay']:g}"
                                                      + (f" +{int(r['best_tied_cells']) - 1} tied" if r["best_tied_cells"] > 1 else ""),
            "its test accuracy": "-" if pd.isna(r["best_cell_test"]) else f"{r['best_cell_test']:.1f}",
            "λ_eff / λ (decay mass)": "-" if pd.isna(r["effective_decay"]) else f"{r['effective_decay']:.2f}",
            "cells finished (seeds each)": f"{int(r['cells'])}/{int(r['cells_planned'])} ({int(r['seeds_per_cell'])})",
            "diverged / η·λ ≥ 1 cells": f"{int(r['diverged_cells'])} / {int(r['sign_flip_cells'])}",
            "errored / unfinished trials": f"{int(r.get('errored_trials', 0))} / {int(r.get('unfinished_trials', 0))}",
            f"significant λ > 0 cells vs {base}": vs,
        })
        columns[r["arm"]] = col
    out = pd.DataFrame(columns)
    out.index.name = "metric"
    return out.reset_index()


def print_summary(table: pd.DataFrame, parts: list[str], label: str, title: str | None = None,
                  details: str | None = None) -> None:
    """The table, then the verdict's ``parts`` (each on a line of its own), then where the details are."""
    # a terminal wraps at its own width; a log (CI, ray job logs) gets the table unwrapped
    console = Console(width=None if sys.stdout.isatty() else 200)
    # the title on a line of its own: as a table title it would wrap at the (narrower) table's width
    console.print(title or f"robustness: {label}, points [{CONFIDENCE:.0%} t-interval over seeds]; ▸ primary claims; "
                  f"{CLIPPED} interval clipped to the quantity's range",
                  soft_wrap=True, highlight=False, style="italic")
    t = Table()
    for i, col in enumerate(table.columns):
        t.add_column(col, overflow="fold", justify="left" if i == 0 else "right")
    for _, r in table.iterrows():
        t.add_row(*[str(v) for v in r])
    console.print(t)
    console.print("[bold]Verdict.[/]", highlight=False)
    for part in parts:  # each unwrapped: whole sentences stay greppable in logs
        console.print(f"- {part}", highlight=False, soft_wrap=True)
    if details:
        console.print(details, highlight=False, soft_wrap=True, style="dim")


def check_choices(table: pd.DataFrame, metric: str, baseline: str, test: str, correction: str, seeds: int) -> str:
    """One-line errors for options the study cannot answer; returns the baseline arm (aliases resolved).

    An exact test (signflip, wilcoxon) whose smallest p-value cannot pass Holm's correction over
    the page's cells with this many seeds is refused: its map could never show a star."""
    if metric not in SELECTED_BY or metric not in table.columns:
        choices = [m for m in SELECTED_BY if m in table.columns]
        raise UserError(f"--metric {metric!r} is not a metric of this study; use one of {choices}")
    known = list(dict.fromkeys(arm_of(table)))
    resolved = ALIASES.get(baseline.lower(), baseline)
    if resolved not in known:
        from ..define.config import did_you_mean

        guess = did_you_mean(baseline, known)
        raise UserError(f"--baseline {baseline!r} is not an arm of this study"
                        + (f" (did you mean {guess!r}?)" if guess else "") + f"; use one of {known} (adamw = wd)")
    if test not in TESTS:
        raise UserError(f"--test {test!r} unknown; use one of {list(TESTS)}")
    if correction not in CORRECTIONS:
        raise UserError(f"--correction {correction!r} unknown; use one of {list(CORRECTIONS)}")
    df = table[pd.to_numeric(table["weight_decay"], errors="coerce") > 0]
    tests = df.assign(arm=arm_of(df)).query("arm != @resolved").groupby(["arm", "lr", "weight_decay"]).ngroups
    if correction != "none" and tests and smallest_p(test, seeds) * tests >= ALPHA:
        need = seeds_needed(test, tests, ALPHA)
        raise UserError(f"--test {test}: with {seeds} seeds its smallest p-value is {smallest_p(test, seeds):.3g}, "
                        f"which cannot pass the {correction} correction over {tests} cells at α = {ALPHA:g}; "
                        f"use --test t, or run at least {need} seeds")
    return resolved


def context_of(cfg) -> dict:
    """What the verdict's scope line says the study is."""
    return {"dataset": cfg.data.name + (f" ({cfg.data.train_subset} training images)" if cfg.data.train_subset else ""),
            "model": cfg.model.name, "epochs": cfg.train.epochs, "base optimizer": cfg.train.base}


def analyse(study: Study, metric: str, baseline: str, test: str, correction: str):
    """The one analysis every surface shows: (table, scored trials, arm order, summary, verdict parts, λ_eff).

    Reads the tidy table and the study's plan only; a study whose plan.json is missing or stale
    gets its plan computed in memory (a model built without weights), said in one line, and
    recorded only by the next ``run`` or ``resume``."""
    cfg, study_dir = study.cfg, study.study_dir
    table = pd.DataFrame(study.rows)
    if table.empty:
        raise UserError(f"{study_dir}/trials.csv has no trials yet; run or resume the study first")
    # the seeds a sequential plan's looks have trained so far, else every planned seed
    seeds = table["seed"].nunique() if cfg.search.seed_plan else len(cfg.search.seed_list)
    baseline = check_choices(table, metric, baseline, test, correction, seeds)
    df = scored(table, metric)
    if df.empty:
        raise UserError(f"{study_dir} has no finished trials yet; wait for some or resume the study")
    order = [a for a in dict.fromkeys(arm_of(table)) if a in set(df["arm"])]
    planned = [a["arm"] for a in study.arms]  # the config's order first, then any arm it no longer names
    order = [a for a in planned if a in order] + [a for a in order if a not in planned]
    plan = study.plan
    if plan is None:
        from ..run.plan import make_plan

        plan = make_plan(cfg)
        print(f"note: {study_dir}/{PLAN_FILE} is missing or does not match the study; λ_eff computed now and not "
              "recorded (study resume records it)", file=sys.stderr)
    effective = effective_decays(plan)
    context = context_of(cfg)
    primary = {"better": cfg.verdict.better, "more_robust": cfg.verdict.more_robust}
    summary = summarize(table, metric, baseline, test, correction, effective_decay=effective, arms=order,
                        primary=primary, family=cfg.verdict.arms, min_effect=cfg.verdict.min_effect,
                        spending=cfg.verdict.spending, curtail=cfg.verdict.curtail,
                        looks=cfg.search.seed_plan.looks() if cfg.search.seed_plan else None)
    return table, df, order, summary, verdict_parts(summary, context), effective


def look(study_dir: Path, baseline: str = "wd") -> bool:
    """A sequential plan's look after a wave: the verdict's questions on the seeds so far, through the
    report's own analysis; prints where each stands and returns True when every one is decided."""
    from ..analyse.verdict import looks_words
    from ..store.loader import load

    *_, summary, _, _ = analyse(load(study_dir), "test_acc_at_best_val", baseline, "t", "holm")
    decided, words = looks_words(summary) or (False, "")
    print(words, flush=True)
    return decided


def report_json(study: Study, metric: str = "test_acc_at_best_val", baseline: str = "wd", test: str = "t",
                correction: str = "holm") -> dict:
    """The answers and the summary numbers alone: no figures, no MLflow, nothing written."""
    *_, summary, parts, _ = analyse(study, metric, baseline, test, correction)
    return answers_json(summary, parts)


# MLflow's longest tag value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH): a run's description is a tag
NOTE_LIMIT = 8000


def write_report(study: Study, metric: str = "test_acc_at_best_val", baseline: str = "wd", test: str = "t",
                 correction: str = "holm", out_dir: Path | None = None, attach_to_mlflow: bool = True,
                 verbose: bool = False) -> Path:
    """report.html, robustness.csv/json and the PNGs of ``study`` (loaded with ``write_back``: the report
    owns the study dir while it writes), the terminal summary, and the MLflow attachment. The terminal
    gets the answers and says where the details are; ``verbose``: every part of the verdict."""
    from .plots import (cell_distribution, decomposition_curves, difference_heatmaps, effective_decay_curves, heatmaps,
                        training_curves, tuning_curves)

    study_dir = study.study_dir
    out = Path(out_dir) if out_dir else study_dir
    table, df, order, summary, parts, effective = analyse(study, metric, baseline, test, correction)
    short = answers(summary, parts, context_of(study.cfg))
    baseline = summary.attrs["baseline"]
    label = LABELS[metric]
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "robustness.csv", index=False)
    (out / "robustness.json").write_text(json.dumps(answers_json(summary, parts), indent=1))

    g = grid(df, order)
    runs = {}  # hover text of a heatmap cell: the MLflow run of each seed
    if "mlflow_run_id" in df:
        for (arm, lr, wd), cell in df.groupby(["arm", "lr", "weight_decay"]):
            ids = [f"seed {s}: run {r}" for s, r in zip(cell["seed"], cell["mlflow_run_id"]) if isinstance(r, str) and r]
            runs[(arm, lr, wd)] = "<br>".join(ids)
    figures = {"heatmaps": heatmaps(df, g, label, runs), "difference": difference_heatmaps(g, baseline, test, correction, 0.05),
               "decomposition": decomposition_curves(summary.attrs["decomposition"]),
               "tuning_curves": tuning_curves(g, label), "cell_distribution": cell_distribution(df, g, label),
               "effective_decay": effective_decay_curves(g, effective, label),
               "training_curves": training_curves(extreme_cell_histories(study_dir, df), order)}
    figures = {k: f for k, f in figures.items() if f is not None}
    shown = display_table(summary)
    html = out / "report.html"
    html.write_text(page(study_dir.name, parts, short, shown, figures, summary.attrs, label, len(df)))
    artifacts = [html, out / "robustness.csv", out / "robustness.json", study_dir / "trials.csv"]
    for name in FIGURES:  # never leave a figure of an earlier report next to this one
        (out / f"{name}.png").unlink(missing_ok=True)
    from .commands import invocation

    browser = find_browser()
    if browser:
        os.environ.setdefault("BROWSER_PATH", browser)
        pngs = [out / f"{name}.png" for name in figures]
        # images for narrow viewers (MLflow's artifact view shows them about 550 px wide): 900 px wide,
        # larger type, heatmap panels two to a row; one Chromium for every figure (plotly's batched export)
        images = {**figures, "heatmaps": heatmaps(df, g, label, per_row=2),
                  "difference": difference_heatmaps(g, baseline, test, correction, 0.05, per_row=2),
                  **({"decomposition": decomposition_curves(summary.attrs["decomposition"], per_row=2)}
                     if "decomposition" in figures else {})}
        images = [images[n].update_layout(font={"size": 15}) for n in figures]
        written = export_pngs(images, pngs)
        artifacts += written
        missing = [p.name for p in pngs if p not in written]
        if missing:
            print(f"PNG export did not finish for {', '.join(missing)} (Chromium too slow on a busy machine): the "
                  f"figures are in report.html; `{invocation()} report {study.where}` exports them again")

    print_summary(shown, parts if verbose else short, label, details=None if verbose else (
        f"details (each arm's exploratory numbers, the decay-mass decomposition λ by λ, the scope and limits): "
        f"{invocation()} report {study.where} --verbose, or {html}"))
    print(f"report: {html}")
    if not browser:
        print("no Chromium found for PNG export: install one (apt-get install chromium) or set BROWSER_PATH")
    if attach_to_mlflow:
        status = table["status"] if "status" in table else pd.Series(dtype=str)
        stopped = looks_words(summary)  # a sequential study is done once its looks stop it
        planned = len(table) >= study.planned_trials if stopped is None else stopped[0]
        complete = planned and status.isin(["TERMINATED", "ERROR"]).all()
        description = markdown(parts)
        if len(description) > NOTE_LIMIT:  # MLflow would cut it mid-sentence: the answers, and where the rest is
            description = markdown(short + ["Every exploratory number, the decay-mass decomposition and the limits: "
                                            "report.html among this run's artifacts."])
        attach(study_dir, artifacts, description, summary, "FINISHED" if complete else None)
    return html


STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:1400px;color:#222}
.verdict{background:#f4f6fa;border-left:4px solid #1f77b4;padding:.8rem 1rem;line-height:1.5}
.verdict li{margin:.3rem 0}
.verdict .headline{font-size:1.1rem;font-weight:500;margin:.2rem 0 .6rem}
.verdict summary{cursor:pointer;color:#1f4f7f;margin-top:.4rem}
.scroll{overflow-x:auto;max-width:100%}
table.summary{border-collapse:collapse;font-size:.8rem}
table.summary th,table.summary td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:right}
table.summary th:first-child,table.summary td:first-child{text-align:left}
.figure{width:100%;max-width:100%}
"""


def page(name: str, verdict: list[str], short: list[str], shown: pd.DataFrame, figures: dict, attrs: dict,
         label: str, trials: int) -> str:
    """The answer first (the headline and each contender's answers), the verdict's other parts folded."""
    head, rest = (verdict[0], verdict[1:]) if len(verdict) > 1 else ("", verdict)
    answers_html = "".join(f"<li>{escape(v)}</li>" for v in short[1:])
    items = "".join(f"<li>{escape(v)}</li>" for v in rest)
    parts = [f"<h1>Is it robust? {escape(name)}</h1>",
             "<div class='verdict'>" + (f"<p class='headline'>{escape(head)}</p>" if head else "")
             + f"<b>Verdict.</b><ul>{answers_html}</ul><details><summary>Every arm's numbers, the decay-mass "
             f"decomposition λ by λ, the scope and the limits</summary><ul>{items}</ul></details></div>",
             f"<p>Reported: {escape(label)}, in points. Every choice is made on validation "
             f"(<code>{attrs['selected_by']}</code>) and reported on test. Each seed's grid is one replicate of "
             f"the study: a claim is computed per seed and arms are compared by their per-seed differences. "
             f"Brackets: {attrs['confidence']:.0%} t-intervals over seeds ({CLIPPED}: clipped to what the quantity can be). "
             f"▸ marks the primary claim of each "
             f"question; the others are exploratory. {trials} finished trials; diverged cells count as chance.</p>",
             "<div class='scroll'>" + shown.to_html(index=False, classes="summary", border=0) + "</div>"]
    for i, fig in enumerate(figures.values()):
        fig.update_layout(autosize=True, width=None, margin={"l": 60, "r": 20})
        parts.append("<div class='figure'>" + fig.to_html(
            full_html=False, include_plotlyjs="inline" if i == 0 else False, config={"responsive": True},
            default_width="100%") + "</div>")
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{escape(name)} robustness</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>")


def export_pngs(images: list, pngs: list[Path], tries: int = 2) -> list[Path]:
    """Write ``images`` to ``pngs`` with plotly's batched export, again for any it did not write: kaleido
    gives up on a figure after its render timeout (90 s) and plotly does not say so, which a busy machine
    reaches. The PNGs written."""
    import plotly.io as pio

    for _ in range(tries):
        todo = [(f, p) for f, p in zip(images, pngs) if not p.exists()]
        if not todo:
            break
        pio.write_images([f for f, _ in todo], [p for _, p in todo], scale=1, width=900,
                         height=[f.layout.height or 500 for f, _ in todo])
    return [p for p in pngs if p.exists()]


def attach(study_dir: Path, artifacts: list[Path], text: str, summary: pd.DataFrame, status: str | None) -> None:
    """Attach the report to the study's MLflow parent run, with the verdict as its description;
    the run is ended (FINISHED) only when every planned trial has finished or errored."""
    from ..track.tracking import finish_study, parent_of

    try:
        run = parent_of(study_dir)
    except UserError as e:  # the report itself is written; only the MLflow attachment is skipped
        print(f"not attached to MLflow: {e}")
        return
    if run is None:
        return
    if not run.belongs_to(study_dir):
        print(f"not attached to MLflow: this study dir is a copy of {run.study_dir}, whose parent run it would "
              "overwrite; the report is in this dir only")
        return
    finish_study(run, artifacts, text, summary, status)
