"""Pooling one claim's effect across a handful of studies: random effects, small-sample honest.

Each study gives an effect (its mean paired difference over seeds, arm − baseline), its
standard error and that standard error's degrees of freedom (seeds − 1). The studies
differ in task, model and training, so their true effects may differ too.

**Heterogeneity with estimated standard errors.** Cochran's Q and I² treat each study's
standard error as known. From 5 seeds it is an estimate on 4 degrees of freedom, often
too small, so Q compared with χ²_{k−1} rejects homogeneity far too often (about 27% at a
nominal 5% over 7 homogeneous studies). Here Q's reference distribution is a
**parametric bootstrap** that redraws every study's effect *and its variance* (from its
own scaled χ² on its degrees of freedom), then recomputes Q with the redrawn variances,
exactly as the observed Q was computed:

* ``p_heterogeneity``: the share of bootstrap Q at least the observed one (τ² = 0);
* I² = (Q̃ − (k − 1)) / Q̃ (Higgins & Thompson 2002), where Q̃ is the observed Q carried
  to the scale it would have with known variances (its percentile in the bootstrap's
  distribution, read as a χ²_{k−1} quantile; beyond the bootstrap's last 40 draws a scaled
  χ² carries the tail, ``percentile_beyond``), so homogeneous studies give I² ≥ 50% about as
  rarely as with known variances (P(χ²_6 ≥ 12) = 6% for 7 studies) instead of 30% of the time;
* τ² solves the generalised Q, Σ w_i(τ²)(y_i − μ̂(τ²))² with w_i = 1/(v_i + τ²), against
  the same bootstrap (Paule–Mandel's estimating equation, at the percentile where I² is
  0, so τ² > 0 exactly when I² > 0); its interval is the **Q-profile** (Viechtbauer 2007)
  against the bootstrap's 2.5% and 97.5% quantiles.

**The pooled effect** is the random-effects mean with that τ² and the
**Hartung–Knapp–Sidik–Jonkman** interval: a t-distribution with k − 1 degrees of freedom
on a variance estimated from the studies' own scatter, floored at the model's variance of
the weighted mean (the "modified" HKSJ of Röver, Knapp & Friede 2015), so a handful of
studies that happen to agree never get a narrower interval than their standard errors
allow. With known variances that floor is 1/Σw; with weights from estimated variances the
weighted mean varies more, and the same bootstrap measures by how much. The
**prediction interval** for a new setting's true effect is μ̂ ± t_{k−2} √(τ² + se²)
(Higgins, Thompson & Spiegelhalter 2009, with the HKSJ standard error as IntHout et al.
2016 recommend).

The bootstrap draws are seeded by the number of studies alone, so the same studies give
the same numbers on every run and every surface.

Beside it, a distribution-free check that needs no standard error at all: an exact
two-sided **sign test** of how many studies favour the arm (``scipy.stats.binomtest``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

from .analysis import ALPHA, CONFIDENCE

SE_FLOOR = 1e-6  # points: below this a standard error is zero (``study.analyse.compare`` leaves such studies out)
DRAWS = 4000  # bootstrap replicates of Q: a p-value of 0.05 is known to about ±0.004


@dataclass(frozen=True)
class Pooled:
    k: int  # studies pooled
    estimate: float
    lo: float
    hi: float
    se: float
    p: float
    tau: float  # between-study standard deviation, and its Q-profile interval
    tau_lo: float
    tau_hi: float
    i2: float  # share of the scatter that is between-study heterogeneity, 0..1
    q: float  # Cochran's Q (fixed-effect weights)
    p_heterogeneity: float  # parametric bootstrap, the variances redrawn
    pred_lo: float  # where a new setting's true effect lies (NaN below 3 studies)
    pred_hi: float

    def as_dict(self) -> dict:
        return asdict(self)


def generalised_q(y: np.ndarray, v: np.ndarray, tau2: float) -> np.ndarray:
    """Σ w (y − μ̂)², w = 1/(v + τ²), over the last axis (so a batch of bootstrap studies at once)."""
    w = 1 / (v + tau2)
    mu = np.sum(w * y, axis=-1, keepdims=True) / np.sum(w, axis=-1, keepdims=True)
    return np.sum(w * (y - mu) ** 2, axis=-1)


class Reference:
    """Q's distribution when every study's variance is an estimate: common random numbers, so the
    reference is a smooth function of τ² and root-finding on it is deterministic."""

    def __init__(self, v: np.ndarray, dfs: np.ndarray, draws: int = DRAWS):
        rng = np.random.default_rng([len(v), 20090101])
        self.v = v
        self.z = rng.standard_normal((draws, len(v)))
        self.scale = rng.chisquare(dfs, size=(draws, len(v))) / dfs  # v* = v · χ²_df / df

    def mean_variance(self, tau2: float) -> float:
        """Variance of the weighted mean when the weights 1/(v + τ²) come from estimated variances."""
        y = self.z * np.sqrt(self.v + tau2)
        w = 1 / (self.v * self.scale + tau2)
        return float(np.var(np.sum(w * y, axis=1) / np.sum(w, axis=1)))

    def q(self, tau2: float) -> np.ndarray:
        """Bootstrap Q at τ²: effects drawn around one mean with variance v + τ², weighted by the redrawn v."""
        y = self.z * np.sqrt(self.v + tau2)
        return generalised_q(y, self.v * self.scale, tau2)


def _solve(f, top: float) -> float:
    """The τ² ≥ 0 where f (decreasing) crosses 0; 0 when f(0) ≤ 0."""
    if f(0.0) <= 0:
        return 0.0
    while f(top) > 0:
        top *= 4
    return float(optimize.brentq(f, 0.0, top, xtol=1e-10, rtol=1e-8))


TAIL_DRAWS = 40  # beyond the 40th largest bootstrap Q, its share of draws is too coarse to read a percentile


def percentile_beyond(q0: float, null: np.ndarray) -> float:
    """P(Q ≥ q0) under homogeneity, read from the bootstrap draws ``null``: their share at or beyond q0
    where at least ``TAIL_DRAWS`` of them are; further out, a scaled χ² matched to the draws' mean and
    variance, joined to the share at the ``TAIL_DRAWS``-th largest draw, carries the tail on smoothly.

    Reading the bulk from the draws themselves matters with few seeds: from 3 seeds every weight is
    1/(v·χ²₂/2), the bootstrap Q is heavy-tailed, and a scaled χ² matched to its moments misplaces an
    ordinary Q (it put I² ≥ 50% in a quarter of homogeneous 5-setting pools)."""
    ordered = np.sort(null)[::-1]
    edge = ordered[TAIL_DRAWS - 1]
    if q0 <= edge:
        return float(np.mean(null >= q0))
    c, nu = null.var() / (2 * null.mean()), 2 * null.mean() ** 2 / null.var()
    at_edge = stats.chi2.sf(edge / c, nu)
    return float(TAIL_DRAWS / len(null) * stats.chi2.sf(q0 / c, nu) / at_edge) if at_edge > 0 else 0.0


def heterogeneity(y: np.ndarray, v: np.ndarray, dfs: np.ndarray, confidence: float = CONFIDENCE,
                  ref: Reference | None = None) -> dict:
    """Q, its bootstrap p-value, τ² with its Q-profile interval, and I²."""
    ref = ref or Reference(v, dfs)
    k = len(y)
    q0 = float(generalised_q(y, v, 0.0))
    null = ref.q(0.0)
    p = float((1 + np.sum(null >= q0)) / (1 + len(null)))
    known_scale = float(stats.chi2.isf(percentile_beyond(q0, null), k - 1))
    i2 = (1.0 if not math.isfinite(known_scale) else
          max(0.0, (known_scale - (k - 1)) / known_scale) if known_scale > 0 else 0.0)
    top = float(np.var(y) + v.max()) * 4 + 1e-12
    tail = (1 - confidence) / 2
    centre = stats.chi2.cdf(k - 1, k - 1)  # where Q = k − 1 sits in χ²_{k−1}: I² = 0 there

    def profile(level):
        return _solve(lambda t: generalised_q(y, v, t) - np.quantile(ref.q(t), level), top)

    return {"q": q0, "p_heterogeneity": p, "i2": i2, "tau2": profile(centre),
            "tau_lo": math.sqrt(profile(1 - tail)), "tau_hi": math.sqrt(profile(tail))}


def random_effects(effects, ses, dfs, confidence: float = CONFIDENCE) -> Pooled:
    """Random-effects pooled effect (τ² from the bootstrap-calibrated estimating equation) with the
    modified Hartung–Knapp–Sidik–Jonkman interval and a prediction interval. ``dfs``: each standard
    error's degrees of freedom (a study's seeds − 1)."""
    y = np.asarray(effects, float)
    v = np.maximum(np.asarray(ses, float), SE_FLOOR) ** 2
    dfs = np.asarray(dfs, float)
    k = len(y)
    if k < 2 or not (np.isfinite(y).all() and np.isfinite(v).all()) or not (dfs >= 1).all():
        raise ValueError("random effects need at least 2 studies with finite effects, standard errors and "
                         "degrees of freedom")
    ref = Reference(v, dfs)
    h = heterogeneity(y, v, dfs, confidence, ref)
    tau2 = h.pop("tau2")
    w = 1 / (v + tau2)
    mu = float(np.sum(w * y) / np.sum(w))
    hk = float(np.sum(w * (y - mu) ** 2) / (k - 1))
    # the modified HKSJ floor is the model's variance of the weighted mean, which with estimated weights is
    # larger than 1/Σw: the bootstrap measures it
    se = math.sqrt(max(ref.mean_variance(tau2), hk / np.sum(w)))
    half = stats.t.ppf(0.5 + confidence / 2, k - 1) * se
    p = float(2 * stats.t.sf(abs(mu) / se, k - 1)) if se > 0 else (0.0 if mu != 0 else 1.0)
    pred = stats.t.ppf(0.5 + confidence / 2, k - 2) * math.sqrt(tau2 + se ** 2) if k >= 3 else math.nan
    return Pooled(k=k, estimate=mu, lo=float(mu - half), hi=float(mu + half), se=se, p=p, tau=math.sqrt(tau2),
                  pred_lo=mu - pred, pred_hi=mu + pred, **h)


def sign_test(effects, tie: float = SE_FLOOR) -> dict:
    """How many studies have a positive and a negative effect, and the exact two-sided binomial
    p-value of that split (ties, |effect| <= ``tie``, left out)."""
    y = np.asarray(effects, float)
    positive, negative = int(np.sum(y > tie)), int(np.sum(y < -tie))
    p = stats.binomtest(positive, positive + negative, 0.5).pvalue if positive + negative else 1.0
    return {"positive": positive, "negative": negative, "p_sign": float(p)}


def share_interval(count: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper–Pearson interval for the share of settings like these that answer as ``count`` of ``n`` did."""
    ci = stats.binomtest(count, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def significant(p_adj: float, alpha: float = ALPHA) -> bool:
    return math.isfinite(p_adj) and p_adj < alpha
