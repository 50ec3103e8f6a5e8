"""A study that adds seeds until its questions are decided: group-sequential answers.

A sequential seed plan (``search.seeds: {start, step, max}``) trains the whole grid for the
first ``start`` seeds, then ``step`` more at a time, up to ``max``. After each wave (a *look*)
the verdict's primary questions are analysed on the seeds so far. Looking repeatedly at a
fixed-α test would inflate its false-positive rate, so each look has its own boundary:

* **Spending.** Each question's α is spent over the looks, α/2 on each side, by a Lan-DeMets
  function of the information fraction t (seeds so far / ``max``): Pocock type (the default,
  (α/2)·ln(1 + (e − 1)t) per side: about even levels, so a clear answer stops early) or
  O'Brien-Fleming type (2 − 2Φ(z_{1−α/4} / √t) per side: almost nothing early, nearly all at
  the last look), as gsDesign's ``sfLDPocock`` and ``sfLDOF`` (Lan & DeMets 1983). The
  boundaries c_k solve P(no |Z_j| ≥ c_j before k, |Z_k| ≥ c_k) = α(t_k) − α(t_{k−1}) for the
  z statistics of one growing sample, computed by recursive numerical integration
  (Armitage, McPherson & Rowe 1969), as gsDesign does.
* **Few seeds.** A look's paired t-test has n − 1 degrees of freedom, not a z's infinity: a
  look rejects when the t-test's p-value is below the boundary's nominal level 2Φ(−c_k), the
  usual way of carrying z boundaries to t statistics (Jennison & Turnbull 2000, §3.8).
* **Many arms.** Holm across the verdict's arms at every look, as the graphical procedure of
  Maurer & Bretz (2013) does it: each open question of an arm spends α/m (m the open arms);
  once one is rejected its α passes to the others, and every look so far is checked again
  at their larger level. That keeps the family's error rate at α whatever the look the study
  stops at.
* **Futility.** With ``verdict.min_effect`` (points), a question also stops when its repeated
  confidence interval lies inside (−min_effect, +min_effect): "no effect of that size".
  Stopping for futility never rejects anything, so it cannot raise the false-positive rate.
* **Intervals.** The repeated confidence interval at look k is diff ± t_{n−1}(1 − α_k/2)·se
  with α_k the full-α boundary's nominal level: all looks' intervals cover together with
  probability 1 − α (Jennison & Turnbull 1989), so the one reported, at the look that
  decided the question, is valid whatever the stopping rule.

* **Stalling.** A question still undecided whose current estimate, with its standard error
  shrunk to the plan's last look, would cross neither that look's boundary nor the futility
  margin is *stalled*: more seeds are not expected to decide it (stochastic curtailment by the
  current trend; ``verdict.curtail: false`` turns it off). It stays "not shown".

A question's answer is fixed at the look that decided it; the study stops at the first look
at which every question of every arm of the family is decided or stalled, or at ``max``. Everything
here is a function of the trials' own numbers, so a resumed study takes the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

def spent(t: float, alpha: float, spending: str = "pocock") -> float:
    """Two-sided α spent by information fraction t, α/2 on each side: by the O'Brien-Fleming-type
    Lan-DeMets function 2 − 2Φ(z_{1−α/4} / √t) per side (gsDesign's ``sfLDOF``), or the Pocock-type
    (α/2)·ln(1 + (e − 1)t) per side (``sfLDPocock``), which spends more at early looks."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if spending == "pocock":
        return float(alpha * math.log1p((math.e - 1) * t))
    return float(4 * stats.norm.sf(stats.norm.isf(alpha / 4) / math.sqrt(t)))


# points of the grid each look's sub-density is carried on (Simpson's rule): boundaries to about 1e-6
_GRID = 1201


def _simpson(n: int) -> np.ndarray:
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w / 3.0


@lru_cache(maxsize=4096)
def boundaries(fractions: tuple[float, ...], alpha: float, spending: str = "pocock") -> tuple[float, ...]:
    """The two-sided z boundaries c_1..c_K at the information ``fractions`` (increasing, in (0, 1]).

    By the recursive numerical integration of Armitage, McPherson & Rowe (1969), as gsDesign and
    ldbounds compute them: the sum S_k = Z_k √t_k of one growing sample has independent normal
    increments of variance t_k − t_{k−1}; the sub-density of S_k on the paths that crossed no boundary
    yet is carried from look to look on a grid, and each c_k solves P(first crossing at look k) =
    α(t_k) − α(t_{k−1}).
    """
    out: list[float] = []
    grid = density = weights = None  # the continuation region's grid, the sub-density on it, Simpson's weights
    previous = 0.0
    for k, t in enumerate(fractions):
        increment = spent(t, alpha, spending) - previous
        previous += increment
        step = t - (fractions[k - 1] if k else 0.0)
        sd = math.sqrt(step)

        def crossing(c: float) -> float:
            edge = c * math.sqrt(t)
            if density is None:
                return float(2 * stats.norm.sf(edge / sd))
            tails = stats.norm.sf((edge - grid) / sd) + stats.norm.cdf((-edge - grid) / sd)
            return float(np.sum(weights * density * tails))

        c = float(optimize.brentq(lambda c: crossing(c) - increment, 0.0, 40.0, xtol=1e-9)) \
            if increment > 0 else math.inf
        out.append(c)
        edge = min(c, 40.0) * math.sqrt(t)
        new_grid = np.linspace(-edge, edge, _GRID)
        if density is None:
            new_density = stats.norm.pdf(new_grid / sd) / sd
        else:
            new_density = (weights * density) @ (stats.norm.pdf((new_grid[None, :] - grid[:, None]) / sd) / sd)
        grid, density, weights = new_grid, new_density, _simpson(_GRID) * (new_grid[1] - new_grid[0])
    return tuple(out)


def nominal_levels(fractions: tuple[float, ...], alpha: float, spending: str = "pocock") -> tuple[float, ...]:
    """Each look's boundary as the two-sided p-value level a test at that look must reach."""
    return tuple(float(2 * stats.norm.sf(c)) for c in boundaries(tuple(fractions), alpha, spending))


@dataclass(frozen=True)
class Look:
    """One question of one arm at one look: the paired difference on the seeds so far."""

    seeds: int
    diff: float
    se: float
    p: float
    n: int  # pairs used

    def interval(self, level: float) -> tuple[float, float]:
        """The repeated confidence interval at nominal two-sided ``level``."""
        if not (self.n >= 2 and math.isfinite(self.se)):
            return math.nan, math.nan
        if self.se == 0:
            return self.diff, self.diff
        half = float(stats.t.isf(level / 2, self.n - 1)) * self.se
        return self.diff - half, self.diff + half


@dataclass(frozen=True)
class Decision:
    """How one question of one arm stands: ``rejected`` (shown either way), ``futile`` (no effect of
    ``min_effect``'s size), ``stalled`` (undecided, and at its current estimate more seeds up to the
    plan's last look would decide it neither way) or ``open`` (undecided, worth more seeds)."""

    outcome: str  # "rejected" | "futile" | "open"
    look: int  # 1-based index of the deciding (or last) look
    seeds: int
    diff: float
    lo: float
    hi: float
    level: float  # the nominal level of that look's boundary at the full α (the interval's)
    p: float
    se: float


def decide(history: dict[str, list[Look]], plan: list[int], alpha: float,
           min_effect: float | None = None, spending: str = "pocock", curtail: bool = True) -> dict[str, Decision]:
    """Each arm's decision on one question from its looks so far (``history[arm][j]``: look j+1).

    ``plan``: the seed counts of every planned look (the last is ``max``), which fix the
    information fractions. Holm across the arms by the graphical procedure: an open arm's
    level is α/m with m the arms not yet rejected, rechecked at every look so far after each
    rejection. An arm decided futile keeps its share of α and is never rejected later. ``curtail``: an
    arm still open at the last look so far is ``stalled`` when more seeds are not expected to decide it.
    """
    arms = list(history)
    if not arms:
        return {}
    fractions = tuple(n / plan[-1] for n in plan)
    done = len(next(iter(history.values())))
    full = nominal_levels(fractions, alpha, spending)
    decided: dict[str, Decision] = {}
    for j in range(done):
        while True:  # Holm: each rejection raises the others' α; look again at every look so far
            open_arms = [a for a in arms if a not in decided]
            rejected_now = False
            remaining = len([a for a in arms if a not in decided or decided[a].outcome != "rejected"])
            levels = nominal_levels(fractions, alpha / max(remaining, 1), spending)
            for a in open_arms:
                for i in range(j + 1):
                    look = history[a][i]
                    if math.isfinite(look.p) and look.n >= 3 and look.p <= levels[i]:
                        lo, hi = look.interval(full[i])
                        decided[a] = Decision("rejected", i + 1, look.seeds, look.diff, lo, hi, full[i], look.p,
                                              look.se)
                        rejected_now = True
                        break
                if rejected_now:
                    break
            if not rejected_now:
                break
        if min_effect is not None:
            for a in arms:
                if a in decided:
                    continue
                look = history[a][j]
                lo, hi = look.interval(full[j])
                if look.n >= 3 and math.isfinite(lo) and -min_effect < lo and hi < min_effect:
                    decided[a] = Decision("futile", j + 1, look.seeds, look.diff, lo, hi, full[j], look.p, look.se)
    remaining = len([a for a in arms if a not in decided or decided[a].outcome != "rejected"])
    last = nominal_levels(fractions, alpha / max(remaining, 1), spending)[-1]
    for a in arms:
        if a not in decided:
            look = history[a][done - 1]
            lo, hi = look.interval(full[done - 1])
            stalled = curtail and done < len(plan) and not decidable(look, plan[-1], last, full[-1], min_effect)
            decided[a] = Decision("stalled" if stalled else "open", done, look.seeds, look.diff, lo, hi,
                                  full[done - 1], look.p, look.se)
    return decided


def decidable(look: Look, most: int, reject_level: float, interval_level: float, min_effect: float | None) -> bool:
    """Whether the question could be decided at the plan's last look if its estimate stayed where it is and
    its standard error shrank as 1/√seeds (the current trend): past the last boundary, or, with a margin,
    the interval inside it. A study stops adding seeds when every open question is past deciding this
    way; stopping early only ever removes rejections, so the false-positive rate cannot rise."""
    if not (look.n >= 2 and math.isfinite(look.se)) or look.se == 0:
        return True  # nothing to project from: more seeds are the only way to know
    se = look.se * math.sqrt(look.n / most)
    if abs(look.diff) / se >= float(stats.t.isf(reject_level / 2, most - 1)):
        return True
    half = float(stats.t.isf(interval_level / 2, most - 1)) * se
    return min_effect is not None and abs(look.diff) + half < min_effect
