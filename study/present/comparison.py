"""``study compare``'s page and files: the comparison's verdict, its table, forest plots, Markdown.

``analyse.compare`` computes the comparison from each study's answers; this module loads
the studies (through the one loader every read command uses, recomputing each study's
answers by the code of its own report) and presents the result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from html import escape
from pathlib import Path

import pandas as pd

from ..analyse.answers import clean
from ..analyse.compare import Setting, context_of, estimate_text
from ..analyse.verdict import BASE_NAMES, difference, interval, markdown, percent_interval
from ..define.claims import CLAIMS, QUESTIONS
from ..errors import UserError
from ..store.loader import load as load_study
from ..track.tracking import parent_of
from .plots import forest
from .report import STYLE, find_browser, report_json


def load(given: str) -> Setting:
    """A finished study's answers, recomputed from its trials (reads only)."""
    study = load_study(given)
    cfg = study.cfg
    baseline = "wd" if "wd" in cfg.search.variants else cfg.search.variants[0]
    try:
        run = parent_of(study.study_dir)
    except UserError:
        run = None
    identity = run.parent_run_id if run is not None and run.parent_run_id else "trials " + hashlib.sha256(
        " ".join(sorted(r["trial_id"] for r in study.rows)).encode()).hexdigest()[:16]
    answers = report_json(study, baseline=baseline)
    # a sequential plan's seeds are the ones its looks trained, not its max
    context = context_of(cfg) | ({"seeds": answers["settings"]["seeds"]} if cfg.search.seed_plan else {})
    return Setting(cfg.name, given, context, answers, run, identity)


def terminal_table(result: dict) -> pd.DataFrame:
    """The table narrowed for a terminal: study, arm and the two questions (the page has the settings)."""
    shown = table(result)
    return shown[["study", "arm", *[c for c in shown.columns if c.startswith(tuple(QUESTIONS.values()))]]]


def table(result: dict) -> pd.DataFrame:
    """One row per study and arm: the setting and each question's effect with its interval and answer."""
    rows = []
    for r in result["studies"]:
        for arm in result["arms"]:
            row = {"study": r["study"], "dataset": r["dataset"], "model": r["model"], "start": r["start"],
                   "base": r["base"], "seeds": r["seeds"], "arm": arm}
            for q in QUESTIONS:
                e = r["arms"][arm][q]
                claim = result["primary"][q]
                row[f"{QUESTIONS[q]}: {CLAIMS[claim].short}"] = difference(claim, e["diff"], e["lo"], e["hi"]) + _p_adj(e)
                row[f"{QUESTIONS[q]}?"] = e["answer"]
            share = r["mass_share"].get("more_robust") if arm == "lpwd" else None
            row["λ_eff/λ"] = f"{r['arms'][arm]['effective_decay']:.2f}"
            row["decay-mass share (robust)"] = "-" if not share or not share["bounded"] else percent_interval(share)
            rows.append(row)
    pools = [("pooled", "", result["pooled"])] + [(f"pooled: {BASE_NAMES.get(b, b)}", b, pooled)
                                                  for b, pooled in result.get("by_base", {}).items()]
    for name, base, pooled in pools:
        for arm in result["arms"]:
            row = {"study": name, "dataset": "", "model": "", "start": "", "base": base, "seeds": "", "arm": arm}
            for q in QUESTIONS:
                p = pooled[arm][q]
                row[f"{QUESTIONS[q]}: {CLAIMS[p['claim']].short}"] = _pooled_cell(p)
                row[f"{QUESTIONS[q]}?"] = p["answer"]
            row["λ_eff/λ"], row["decay-mass share (robust)"] = "", ""
            rows.append(row)
    return pd.DataFrame(rows)


def _pooled_cell(p: dict) -> str:
    return estimate_text(p) + _p_adj(p) if math.isfinite(p["estimate"]) else f"{p['k']} setting(s): too few to pool"


def _p_adj(effect: dict) -> str:
    """``, p = 0.012``: the corrected p-value the answer rests on (the interval is uncorrected)."""
    p = effect.get("p_adj")
    if p is None or not math.isfinite(p):
        return ""
    return ", p < 0.001" if p < 0.001 else f", p = {p:.3f}"


def markdown_summary(result: dict, times: dict[str, float] | None = None) -> str:
    """compare.md: the verdict and, for the lead arm, one row per setting and the pooled row, in
    Markdown (a README or a paper's appendix quotes it as it is, so the words match the numbers)."""
    family = result["family"] or result["arms"]
    lead = "lpwd" if "lpwd" in family else family[0]
    claims = {q: CLAIMS[result["primary"][q]] for q in QUESTIONS}
    head = ["setting", "data", "model", "start", "base"] + [f"{QUESTIONS[q]}? {claims[q].short}" for q in QUESTIONS]
    head += ["decay mass share of the λ-regret edge over pwd"] + (["minutes"] if times else [])
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for r in result["studies"]:
        cells = [r["study"], r["dataset"], r["model"], r["start"], r["base"]]
        for q in QUESTIONS:
            e = r["arms"][lead][q]
            cells.append(f"{difference(result['primary'][q], e['diff'], e['lo'], e['hi'])}{_p_adj(e)}: {e['answer']}")
        share = r["mass_share"].get("more_robust")
        cells.append(percent_interval(share) if share and share["bounded"] else "none stated (no clear edge)"
                     if share else "-")
        if times:
            cells.append(f"{times.get(r['study'], float('nan')) / 60:.1f}")
        lines.append(f"| {' | '.join(cells)} |")
    pooled = ["**pooled**", "", "", "", ""]
    for q in QUESTIONS:
        p = result["pooled"][lead][q]
        pooled.append(f"**{estimate_text(p)}{_p_adj(p)}: {p['answer']}**")
    lines.append(f"| {' | '.join(pooled + [''] + ([''] if times else []))} |")
    for base, by_base in result.get("by_base", {}).items():
        row = [f"pooled: {BASE_NAMES.get(base, base)}", "", "", "", base]
        row += [f"{_pooled_cell(by_base[lead][q])}: {by_base[lead][q]['answer']}" for q in QUESTIONS]
        lines.append(f"| {' | '.join(row + [''] + ([''] if times else []))} |")
    predicted = ["a new setting like these", "", "", "", ""]
    for q in QUESTIONS:
        p = result["pooled"][lead][q]
        predicted.append(f"{interval(p['claim'], p['pred_lo'], p['pred_hi'])} (prediction interval)"
                         if math.isfinite(p["pred_lo"]) else "-")
    lines.append(f"| {' | '.join(predicted + [''] + ([''] if times else []))} |")
    caption = (f"{lead} − {result['baseline_name']} per setting: each study's primary claims (mean paired difference "
               "over seeds, 95% t-interval, Holm-corrected p, the study's own answer); pooled: random effects, HKSJ "
               "interval, p Holm-corrected across the contenders compared"
               + ("; pooled per base: each base's settings on their own." if result.get("by_base") else "."))
    return markdown(result["parts"]) + "\n\n" + caption + "\n\n" + "\n".join(lines) + "\n"


SETTING = ("dataset", "model", "start", "base", "seeds")


def compact(shown: pd.DataFrame) -> pd.DataFrame:
    """The table for a page: a setting's dataset, model, start, base optimizer and seeds in one column,
    so the answers, λ_eff and the mass share fit an 800-px window without scrolling sideways."""
    setting = shown[list(SETTING)].astype(str).agg(
        lambda r: " · ".join(v for v in (*r.iloc[:4], f"{r.iloc[4]} seeds" if r.iloc[4] else "") if v), axis=1)
    return shown.drop(columns=list(SETTING)).assign(setting=setting)[
        ["study", "setting", *[c for c in shown.columns if c not in ("study", *SETTING)]]]


def page(result: dict, shown: pd.DataFrame, figures: dict) -> str:
    """The answer first (the headline), every arm's counts, pooled numbers and heterogeneity folded."""
    head, rest = result["parts"][0], result["parts"][1:]
    parts = [f"<h1>Is it robust across settings? {len(result['studies'])} studies</h1>",
             f"<div class='verdict'><p class='headline'>{escape(head)}</p><details><summary>Verdict, arm by arm: "
             "the settings' answers, the pooled numbers, the heterogeneity, the scope</summary><ul>"
             + "".join(f"<li>{escape(p)}</li>" for p in rest) + "</ul></details></div>",
             "<p>Each row is one study's primary claims, arm − baseline: the mean of its per-seed paired "
             "differences with a 95% t-interval, and its own answer. The pooled rows are random-effects means "
             "with Hartung–Knapp–Sidik–Jonkman intervals.</p>",
             "<div class='scroll'>" + compact(shown).to_html(index=False, classes="summary", border=0) + "</div>"]
    for i, fig in enumerate(figures.values()):
        fig.update_layout(autosize=True, width=None)
        parts.append("<div class='figure'>" + fig.to_html(
            full_html=False, include_plotlyjs="inline" if i == 0 else False, config={"responsive": True},
            default_width="100%") + "</div>")
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width, initial-scale=1'><title>study comparison</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>")


def write(result: dict, out: Path, times: dict[str, float] | None = None) -> list[Path]:
    """compare.json, compare.csv, compare.md, compare.html and a forest plot PNG per question (with a
    Chromium). ``times``: each study's wall time in seconds (``study suite``), for compare.md."""

    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(clean(result), indent=1))
    shown = table(result)
    shown.to_csv(out / "compare.csv", index=False)
    figures = {f"forest_{q}": forest(result, q) for q in QUESTIONS}
    html = out / "compare.html"
    html.write_text(page(result, shown, figures))
    (out / "compare.md").write_text(markdown_summary(result, times))
    written = [html, out / "compare.json", out / "compare.csv", out / "compare.md"]
    pngs = [out / f"{name}.png" for name in figures]
    for png in pngs:
        png.unlink(missing_ok=True)
    browser = find_browser()
    if browser:
        import plotly.io as pio

        os.environ.setdefault("BROWSER_PATH", browser)
        pio.write_images(list(figures.values()), pngs, width=1100, scale=1)  # one Chromium for both
        written += pngs
    return written
