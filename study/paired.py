"""Per-cell paired comparison of an arm with the baseline, corrected for testing many cells.

Trials with the same seed share initialisation, validation split and batch
order, so per cell the comparison is of differences per seed (paired), not of
two independent samples. A grid of 35 cells is 35 tests: p-values are adjusted
across the cells of one comparison (Holm by default, Benjamini-Hochberg as an
option) before a cell is called significant. Distributions come from
``scipy.stats``; only Holm's step-down rule, which is arithmetic on sorted
p-values and not in scipy, is written here.

Zero spread: when every seed gives the same difference, a t statistic is
undefined (scipy would return p = 0 for one test image of difference). The
exact sign-flip test is used instead; with n seeds its smallest p-value is
2 / 2^n (0.25 for 3 seeds), which is what n identical signs can show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TESTS = ("t", "wilcoxon", "signflip")
CORRECTIONS = ("holm", "bh", "none")


def sign_flip_p(diffs: np.ndarray) -> float:
    """Exact two-sided sign-flip (paired permutation) test of mean difference 0."""
    return float(stats.permutation_test((diffs,), np.mean, permutation_type="samples",
                                        n_resamples=np.inf, alternative="two-sided").pvalue)


def paired_p(diffs: np.ndarray, test: str = "t") -> float:
    """p-value of "mean paired difference is 0"; NaN with fewer than two pairs."""
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) < 2:
        return float("nan")
    if np.all(diffs == diffs[0]):
        return 1.0 if diffs[0] == 0 else sign_flip_p(diffs)
    if test == "t":
        return float(stats.ttest_1samp(diffs, 0.0).pvalue)
    if test == "wilcoxon":
        return float(stats.wilcoxon(diffs, zero_method="zsplit").pvalue)
    if test == "signflip":
        return sign_flip_p(diffs)
    raise ValueError(f"test {test!r} unknown; use one of {TESTS}")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (controls the family-wise error rate)."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust(p: np.ndarray, correction: str = "holm") -> np.ndarray:
    """Adjusted p-values over the non-NaN entries (NaN stays NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    if correction == "holm":
        out[ok] = holm(p[ok])
    elif correction == "bh":
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    elif correction == "none":
        out[ok] = p[ok]
    else:
        raise ValueError(f"correction {correction!r} unknown; use one of {CORRECTIONS}")
    return out


def compare_cells(g, arm: str, baseline: str, test: str = "t", correction: str = "holm",
                  alpha: float = 0.05, confidence: float = 0.95) -> pd.DataFrame:
    """Per cell of ``g`` (an ``analysis.Grid``): arm - baseline over seeds that both finished.

    Columns: lr, weight_decay, n (pairs), diff (mean paired difference, points),
    ci_low/ci_high (t interval of the mean difference; NaN below 2 pairs or
    without spread), p, p_adj and significant (p_adj < alpha).
    """
    a, b = g.arms.index(arm), g.arms.index(baseline)
    rows = []
    for i, lr in enumerate(g.lrs):
        for j, wd in enumerate(g.wds):
            x, y = g.test[a, i, j], g.test[b, i, j]
            both = np.isfinite(x) & np.isfinite(y)
            if not both.any():
                continue
            d = x[both] - y[both]
            lo = hi = float("nan")
            if len(d) > 1 and np.ptp(d) > 0:
                ci = stats.ttest_1samp(d, 0.0).confidence_interval(confidence)
                lo, hi = float(ci.low), float(ci.high)
            rows.append({"lr": lr, "weight_decay": wd, "n": int(both.sum()), "diff": float(d.mean()),
                         "ci_low": lo, "ci_high": hi, "p": paired_p(d, test)})
    out = pd.DataFrame(rows, columns=["lr", "weight_decay", "n", "diff", "ci_low", "ci_high", "p"])
    out["p_adj"] = adjust(out["p"].to_numpy(), correction)
    out["significant"] = out["p_adj"] < alpha
    return out
