"""robustness.json: the answers a script reads, the claims they rest on and the numbers, as plain JSON.

The report writes it, ``report --json`` prints it, ``study compare`` pools from it and the
calibration measures through it: one function turns a summary into it, so they all read
the same numbers.
"""

from __future__ import annotations

import math

import pandas as pd

from ..define.claims import CLAIMS, QUESTIONS
from .analysis import tuned_off_flag


def clean(x):
    """JSON-safe: NaN and infinities become null (``json`` would write bare NaN, which is not JSON)."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        return clean(x.item())
    return x


def answers_json(summary: pd.DataFrame, parts: list[str]) -> dict:
    """robustness.json: the answers a script reads, the claims they rest on and the numbers.

    ``comparisons``: per arm against the baseline, ``answers`` ({"better", "more_robust"},
    each one of ``analysis.ANSWERS``) and every claim's paired difference (diff, lo, hi,
    se, df, p; p_adj for the primary ones; ``tuned_off`` where both arms read it from the shared λ = 0
    trial on every seed, with no interval, and ``tuned_off_seeds``, on how many seeds they do), which ``study compare`` pools across studies.
    """
    attrs = summary.attrs
    primary = attrs["primary"]
    claims = [{"name": name, "question": c.question, "label": c.label, "unit": c.unit,
               "higher_is_better": c.higher_is_better, "primary": primary.get(c.question) == name,
               "test": "paired t-test over seeds",
               "family": "Holm across the arms compared with the baseline" if primary.get(c.question) == name
               else "none (exploratory)"} for name, c in CLAIMS.items()]
    comparisons = []
    for _, r in summary.iterrows():
        if r["arm"] == attrs["baseline"] or f"diff_{primary['better']}" not in r:
            continue
        per_claim = {}
        for name in CLAIMS:
            question = next((q for q, n in primary.items() if n == name), None)
            per_claim[name] = {"arm": r[f"{name}_paired"], "baseline": r[f"{name}_baseline_paired"],
                               "diff": r[f"diff_{name}"], "lo": r[f"diff_{name}_lo"], "hi": r[f"diff_{name}_hi"],
                               "se": r[f"se_{name}"], "df": int(r[f"n_{name}"]) - 1, "p": r[f"p_{name}"],
                               "tuned_off": tuned_off_flag(r, name),
                               "tuned_off_seeds": r.get(f"shared_seeds_{name}"),
                               **({"p_adj": r[f"p_adj_{question}"]} if question else {})}
        sequential = {q: {"look": r[f"look_{q}"], "seeds": r[f"seeds_{q}"], "stop": r[f"stop_{q}"],
                          "level": r[f"level_{q}"]} for q in QUESTIONS if f"look_{q}" in r} if attrs.get("looks") else {}
        comparisons.append({"arm": r["arm"], "baseline": attrs["baseline"],
                            "answers": {q: r[f"answer_{q}"] for q in QUESTIONS},
                            **({"sequential": sequential} if sequential else {}),
                            "dropped_seeds": r.get("dropped_seeds") or [], "claims": per_claim})
    settings = {k: v for k, v in attrs.items() if k != "decomposition"}
    return clean({"headline": parts[0] if parts else "", "verdict": " ".join(parts), "parts": parts,
                   "settings": settings, "claims": claims, "comparisons": comparisons,
                   "decomposition": attrs.get("decomposition"),
                   "arms": summary.drop(columns=["dropped_seeds"], errors="ignore").to_dict("records")})
