"""The study's answer in words, written from the summary numbers alone.

Every sentence is a function of ``analysis.summarize``'s table, so the words
cannot disagree with it: a difference is called "shown" only when its
bootstrap interval over seeds excludes zero, a cell "significant" only after
the multiplicity correction, and each claim carries its interval, the number
of seeds and cells, and what it does not show.
"""

from __future__ import annotations

import math

import pandas as pd

from .analysis import CLAIMS

# the claims that say "robust to its hyperparameters" (larger is better for all three)
ROBUSTNESS = ("near_optimal_2pt", "worst", "grid_mean")
TEST_NAMES = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test", "signflip": "exact sign-flip test"}
CORRECTION_NAMES = {"holm": "Holm-corrected", "bh": "Benjamini-Hochberg-corrected", "none": "uncorrected"}


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def direction(row: pd.Series, claim: str) -> int:
    """+1 if the interval of arm - baseline lies above 0, -1 if below, 0 if it covers 0 or is missing."""
    lo, hi = row.get(f"diff_{claim}_lo"), row.get(f"diff_{claim}_hi")
    if not _finite(lo, hi):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _value(claim: str, x: float) -> str:
    return f"{100 * x:.0f}% of cells" if claim.startswith("near_optimal") else f"{x:.1f}"


def _diff(claim: str, row: pd.Series) -> str:
    area = claim.startswith("near_optimal")
    d, lo, hi = row.get(f"diff_{claim}"), row.get(f"diff_{claim}_lo"), row.get(f"diff_{claim}_hi")
    if area:
        text = f"{100 * d:+.0f}% of cells" + (f" [{100 * lo:+.0f}, {100 * hi:+.0f}]" if _finite(lo, hi) else "")
    else:
        text = f"{d:+.1f} pt" + (f" [{lo:+.1f}, {hi:+.1f}]" if _finite(lo, hi) else "")
    return text


def classify(row: pd.Series) -> str:
    """more robust / less robust / mixed / no difference shown / untested, from the robustness claims."""
    if not _finite(row.get(f"diff_{ROBUSTNESS[0]}_lo")):
        return "untested"
    signs = {direction(row, c) for c in ROBUSTNESS}
    if 1 in signs and -1 in signs:
        return "mixed"
    return "more robust" if 1 in signs else "less robust" if -1 in signs else "no difference shown"


def arm_sentences(row: pd.Series, base: pd.Series, attrs: dict) -> list[str]:
    arm, baseline = row["arm"], attrs["baseline"]
    seeds, conf = attrs["seeds"], attrs["confidence"]
    verdict = classify(row)
    out = []
    if verdict == "untested":
        out.append(f"{arm} vs {baseline}: untested: with {seeds} seed{'s' if seeds != 1 else ''} per cell there "
                   "is no bootstrap interval (3 or more seeds are needed); the differences below are descriptive only.")
    else:
        shown = [CLAIMS[c] for c in ROBUSTNESS if direction(row, c)]
        hidden = [CLAIMS[c] for c in ROBUSTNESS if not direction(row, c)]
        why = (f" (interval excludes 0 for {', '.join(shown)}" + (f"; not for {', '.join(hidden)})" if hidden else ")")
               if shown else " (every interval includes 0)")
        out.append(f"{arm} vs {baseline}: {verdict} on this grid{why}.")
    parts = [f"{CLAIMS[c]} {_value(c, row[c])} vs {_value(c, base[c])}, {_diff(c, row)}" for c in ROBUSTNESS]
    parts.append(f"{CLAIMS['best']} {row['best']:.1f} vs {base['best']:.1f}, {_diff('best', row)}")
    ci = f" ({conf:.0%} bootstrap intervals over seeds in brackets)" if verdict != "untested" else ""
    out.append("; ".join(parts) + ci + ".")
    if _finite(row.get("cells_tested")) and row["cells_tested"] > 0:
        out.append(f"Per cell: {int(row['sig_better'])} of {int(row['cells_tested'])} cells significantly "
                   f"better, {int(row['sig_worse'])} worse ({TEST_NAMES[attrs['test']]} over seeds, "
                   f"{CORRECTION_NAMES[attrs['correction']]}, α = {attrs['alpha']:g}).")
    return out


def limits(summary: pd.DataFrame, attrs: dict, context: dict) -> list[str]:
    out = []
    seeds = attrs["seeds"]
    where = ", ".join(f"{k} {v}" for k, v in context.items() if v is not None)
    out.append(f"Scope: {where}; {seeds} seed{'s' if seeds != 1 else ''} per cell, "
               f"{int(summary['cells_planned'].max())} cells per arm; cells chosen on validation, "
               f"accuracy reported on test ({attrs['metric']}).")
    if 1 < seeds < 6:
        out.append(f"With {seeds} seeds the bootstrap has few distinct resamples: intervals are rough and "
                   "tend to be too narrow; more seeds make them trustworthy.")
    base = summary.set_index("arm")
    baseline = attrs["baseline"]
    if baseline in base.index and _finite(base.loc[baseline, "effective_decay"]):
        ref = base.loc[baseline, "effective_decay"]
        for arm, r in base.iterrows():
            e = r["effective_decay"]
            if _finite(e) and ref > 0 and abs(e / ref - 1) > 0.05:
                out.append(f"Decay mass: at equal nominal λ, {arm} applies {e / ref:.0%} of {baseline}'s total "
                           "decay, so tolerating a larger λ may partly mean decaying less; compare arms at equal "
                           "effective λ (report figure) or with a *_normalized schedule.")
    missing = int((summary.get("errored_trials", 0) + summary.get("unfinished_trials", 0)).sum())
    if missing:
        out.append(f"{missing} trials errored or did not finish; their cells are missing from every number.")
    flips = int(summary["sign_flip_cells"].max())
    if flips:
        out.append(f"{flips} cells per arm have η·λ ≥ 1, where decay zeroes or flips every weight each step.")
    return out


def verdict_parts(summary: pd.DataFrame, context: dict | None = None) -> list[str]:
    """The verdict as parts: one per arm against the baseline (its answer and numbers), then the limits."""
    attrs = summary.attrs
    baseline = attrs["baseline"]
    rows = {r["arm"]: r for _, r in summary.iterrows()}
    if baseline not in rows:
        return [f"No verdict: the baseline {baseline} has no finished trials."]
    parts = [" ".join(arm_sentences(row, rows[baseline], attrs)) for arm, row in rows.items() if arm != baseline]
    if not parts:
        return [f"No verdict: only the baseline {baseline} has finished trials."]
    return parts + [" ".join(limits(summary, attrs, context or {}))]


def verdict(summary: pd.DataFrame, context: dict | None = None) -> str:
    """One paragraph: for each arm against the baseline, the answer, its numbers and its limits."""
    return " ".join(verdict_parts(summary, context))
