"""Pooling one claim's effect across a handful of studies: random effects, small-sample honest.

Each study gives an effect (its mean paired difference over seeds, arm − baseline), its
standard error and degrees of freedom. The studies differ in task, model and training,
so their true effects differ too: a fixed-effect mean would claim a precision the
settings do not have. The pooled effect is therefore a **random-effects** mean
(DerSimonian–Laird between-study variance τ²) with the **Hartung–Knapp–Sidik–Jonkman**
interval: a t-distribution with k − 1 degrees of freedom on a variance estimated from
the studies' own scatter, floored at the DerSimonian–Laird variance (the "modified"
HKSJ of Röver, Knapp & Friede 2015), so a handful of studies that happen to agree never
get a narrower interval than their standard errors allow. With few studies the plain
DerSimonian–Laird z-interval is known to cover far below its nominal level (IntHout,
Ioannidis & Borm 2014); HKSJ stays near it.

Beside it, a distribution-free check that needs no standard error at all: an exact
two-sided **sign test** of how many studies favour the arm (``scipy.stats.binomtest``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from .analysis import ALPHA, CONFIDENCE

SE_FLOOR = 1e-6  # points: below this a standard error is zero (``study.compare`` leaves such studies out)


@dataclass(frozen=True)
class Pooled:
    k: int  # studies pooled
    estimate: float
    lo: float
    hi: float
    se: float
    p: float
    tau: float  # between-study standard deviation (DerSimonian–Laird)
    i2: float  # share of the scatter that is between-study heterogeneity, 0..1
    q: float  # Cochran's Q
    p_heterogeneity: float

    def as_dict(self) -> dict:
        return asdict(self)


def random_effects(effects, ses, confidence: float = CONFIDENCE) -> Pooled:
    """Random-effects pooled effect with the modified Hartung–Knapp–Sidik–Jonkman interval."""
    y = np.asarray(effects, float)
    v = np.maximum(np.asarray(ses, float), SE_FLOOR) ** 2
    k = len(y)
    if k < 2 or not (np.isfinite(y).all() and np.isfinite(v).all()):
        raise ValueError("random effects need at least 2 studies with finite effects and standard errors")
    w = 1 / v
    fixed = np.sum(w * y) / np.sum(w)
    q = float(np.sum(w * (y - fixed) ** 2))
    c = np.sum(w) - np.sum(w ** 2) / np.sum(w)
    tau2 = max(0.0, (q - (k - 1)) / c)
    w_star = 1 / (v + tau2)
    mu = float(np.sum(w_star * y) / np.sum(w_star))
    hk = float(np.sum(w_star * (y - mu) ** 2) / (k - 1))
    se = math.sqrt(max(1.0, hk) / np.sum(w_star))
    half = stats.t.ppf(0.5 + confidence / 2, k - 1) * se
    p = float(2 * stats.t.sf(abs(mu) / se, k - 1)) if se > 0 else (0.0 if mu != 0 else 1.0)
    return Pooled(k=k, estimate=mu, lo=float(mu - half), hi=float(mu + half), se=se, p=p, tau=math.sqrt(tau2),
                  i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0, q=q,
                  p_heterogeneity=float(stats.chi2.sf(q, k - 1)))


def sign_test(effects, tie: float = SE_FLOOR) -> dict:
    """How many studies have a positive and a negative effect, and the exact two-sided binomial
    p-value of that split (ties, |effect| <= ``tie``, left out)."""
    y = np.asarray(effects, float)
    positive, negative = int(np.sum(y > tie)), int(np.sum(y < -tie))
    p = stats.binomtest(positive, positive + negative, 0.5).pvalue if positive + negative else 1.0
    return {"positive": positive, "negative": negative, "p_sign": float(p)}


def significant(p_adj: float, alpha: float = ALPHA) -> bool:
    return math.isfinite(p_adj) and p_adj < alpha
