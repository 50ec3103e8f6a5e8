"""Per-cell paired comparison of an arm with the baseline, corrected for testing many cells.

Trials with the same seed share initialisation, validation split and batch
order, so per cell the comparison is of differences per seed (paired), not of
two independent samples. A grid of 35 cells is 35 tests: p-values are adjusted
across the cells of one comparison (Holm by default, Benjamini-Hochberg as an
option) before a cell is called significant. Distributions come from
``scipy.stats``; only Holm's step-down rule, which is arithmetic on sorted
p-values and not in scipy, is written here.

Zero spread: when every seed gives the same difference (within ``claims.TIE``:
one test image on every seed differs between seeds only in floating point), a t
statistic is undefined (scipy would return p ≈ 0). The exact sign-flip test is
used instead; with n seeds its smallest p-value is 2 / 2^n (0.25 for 3 seeds),
which is what n identical signs can show.

The rank and sign-flip tests are exact, so their smallest p-value is 2 / 2^n: with
few seeds no cell can pass a correction over many cells. ``smallest_p`` and
``seeds_needed`` let the report refuse such a test up front instead of drawing
a map on which no star can ever appear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..define.claims import TIE

TESTS = ("t", "wilcoxon", "signflip")
CORRECTIONS = ("holm", "bh", "none")


@dataclass(frozen=True)
class Difference:
    """A paired difference over seeds: mean, t-interval, p-value, pairs used."""

    diff: float
    lo: float
    hi: float
    p: float
    n: int
    se: float  # standard error of the mean difference (0 without spread)

    @property
    def df(self) -> int:
        return self.n - 1


def se_floor(resolution: float, n: int) -> float:
    """The smallest standard error a mean of n paired differences of accuracies in steps of
    ``resolution`` points can honestly have: h/√(6n) (rounding to whole images alone)."""
    return resolution / math.sqrt(6 * n) if n else math.nan


def paired_difference(d: np.ndarray, confidence: float = 0.95, resolution: float = 0.0) -> Difference:
    """Mean of per-seed differences with its t-interval and the paired t-test's p-value, the
    standard error floored at ``se_floor(resolution, n)``.

    Without a resolution and without spread (all differences equal within ``TIE``) the
    interval is the point and the p-value the exact sign-flip test's. NaN below two pairs.
    """
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return Difference(float(d.mean()) if n else math.nan, math.nan, math.nan, math.nan, n, math.nan)
    mean = float(d.mean())
    se = max(float(d.std(ddof=1)) / math.sqrt(n) if np.ptp(d) > TIE else 0.0, se_floor(resolution, n))
    if se == 0.0:
        return Difference(mean, mean, mean, paired_p(d), n, 0.0)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se  # the same interval as ttest_1samp's
    return Difference(mean, mean - half, mean + half, float(2 * stats.t.sf(abs(mean) / se, n - 1)), n, se)


@dataclass(frozen=True)
class Ratio:
    """Fieller's interval for mean(num) / mean(den) over paired seeds; ``bounded`` is False when the
    denominator is not clearly away from 0 (its t-test not significant at 1 − confidence): then
    no finite interval exists and no ratio is worth printing."""

    ratio: float
    lo: float
    hi: float
    bounded: bool


def ratio_interval(num: np.ndarray, den: np.ndarray, confidence: float = 0.95, resolution: float = 0.0) -> Ratio:
    """Fieller's confidence set for ρ = E[num] / E[den] from paired per-seed values: every ρ for which
    the t-test of mean(num − ρ·den) = 0 does not reject. Exact under normality for any true ρ,
    including ρ near the edge of the denominator's significance, where a delta-method or bootstrap
    interval of the ratio undercovers."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    n = len(num)
    if n < 2:
        return Ratio(math.nan, math.nan, math.nan, False)
    a, b = num.mean(), den.mean()
    cov = np.cov(num, den, ddof=1) / n
    floor = se_floor(resolution, n) ** 2
    vaa, vbb, vab = max(cov[0, 0], floor), max(cov[1, 1], floor), cov[0, 1]
    t2 = stats.t.ppf(0.5 + confidence / 2, n - 1) ** 2
    qa, qb, qc = b * b - t2 * vbb, a * b - t2 * vab, a * a - t2 * vaa  # qa ρ² − 2 qb ρ + qc ≤ 0
    ratio = a / b if b != 0 else math.nan
    disc = qb * qb - qa * qc
    if qa <= 0 or disc < 0:
        return Ratio(float(ratio), -math.inf, math.inf, False)
    root = math.sqrt(disc)
    return Ratio(float(ratio), float((qb - root) / qa), float((qb + root) / qa), True)


def sign_flip_p(diffs: np.ndarray) -> float:
    """Exact two-sided sign-flip (paired permutation) test of mean difference 0."""
    return float(stats.permutation_test((diffs,), np.mean, permutation_type="samples",
                                        n_resamples=np.inf, alternative="two-sided").pvalue)


def paired_p(diffs: np.ndarray, test: str = "t") -> float:
    """p-value of "mean paired difference is 0"; NaN with fewer than two pairs."""
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) < 2:
        return float("nan")
    if np.ptp(diffs) <= TIE:
        return 1.0 if abs(diffs.mean()) <= TIE else sign_flip_p(diffs)
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


def smallest_p(test: str, n: int) -> float:
    """The smallest two-sided p-value ``test`` can give with n pairs (0: a continuous distribution)."""
    return 0.0 if test == "t" else 2.0 / 2 ** n


def seeds_needed(test: str, tests: int, alpha: float) -> int:
    """Fewest seeds with which one of ``tests`` Holm-corrected tests can fall below ``alpha``."""
    if test == "t":
        return 2
    return max(2, math.floor(math.log2(2 * tests / alpha)) + 1)


def compare_cells(g, baseline: str, test: str = "t", correction: str = "holm", alpha: float = 0.05,
                  confidence: float = 0.95) -> pd.DataFrame:
    """Per arm and cell of ``g`` (an ``analysis.Grid``): arm − baseline over the seeds both finished.

    One family: the correction runs over every arm's cells together, as the page shows
    them together. λ = 0 cells are one shared trial (difference exactly 0): listed with
    ``shared`` and never tested. Columns: arm, lr, weight_decay, shared, n (pairs), diff
    (mean paired difference, points), ci_low/ci_high (t-interval, its standard error floored at
    the grid's resolution; NaN below 2 pairs), p, p_adj and significant (p_adj < alpha).
    """
    b = g.arms.index(baseline)
    rows = []
    for a, arm in enumerate(g.arms):
        if a == b:
            continue
        for i, lr in enumerate(g.lrs):
            for j, wd in enumerate(g.wds):
                x, y = g.test[a, i, j], g.test[b, i, j]
                both = np.isfinite(x) & np.isfinite(y)
                if not both.any():
                    continue
                shared = wd == 0
                r = paired_difference(x[both] - y[both], confidence, g.resolution)
                p = r.p if test == "t" else paired_p(x[both] - y[both], test)  # the t-test's p: already there
                rows.append({"arm": arm, "lr": lr, "weight_decay": wd, "shared": shared, "n": r.n, "diff": r.diff,
                             "ci_low": r.lo, "ci_high": r.hi, "p": float("nan") if shared else p})
    columns = ["arm", "lr", "weight_decay", "shared", "n", "diff", "ci_low", "ci_high", "p"]
    out = pd.DataFrame(rows, columns=columns)
    out["p_adj"] = adjust(out["p"].to_numpy(), correction)
    out["significant"] = out["p_adj"] < alpha
    return out
