"""The verdict's claims, declared once: the question each answers, its statistic, its test and its family.

Two questions, kept apart:

* **better** (level): is the arm's accuracy after tuning higher than the baseline's?
* **more robust to λ** (shape): does the arm lose less when λ moves off the arm's *own*
  optimum? A uniform shift of an arm's whole grid changes the first answer and leaves the
  second alone.

**A seed is one replicate of the whole grid.** Every statistic below is computed on one
seed's grid of one arm, choosing on that seed's validation accuracy and reading test
accuracy at the chosen cells. Seeds are independent replicates and pair the arms (same
init, split and batch order), so a claim compares arm and baseline by the per-seed
differences: a paired t-test and a t-interval with n − 1 degrees of freedom, whose
error rates ``study.analyse.calibration`` measures at 3, 5 and 10 seeds.

Cells with λ = 0 are one trial shared by every arm: they are never part of a robustness
or level statistic of the decaying grid (they would only add exact zeros to every
difference). The tuned accuracy (``best``) may choose them, as tuning would; where both
arms choose them on every seed, their tuned accuracies are one trial's, the difference is 0
by construction and the seeds show no spread to put an interval on (``Claim.shared``): that
answer is "cannot be shown", and ``study compare`` leaves such a setting out of its pool.

Every reader (the verdict, ``report --json``, MLflow, the calibration benchmark) iterates
over ``CLAIMS``, so a claim added here cannot skip its calibration.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

# differences smaller than this (points) are equal: one test image of difference on every
# seed, (k+1)/359 - k/359, differs between seeds only in floating point
TIE = 1e-6
NEAR_OPTIMAL = 2.0  # points, for near_optimal_2pt
WIDTH_WITHIN = 1.0  # points, for lambda_width
QUESTIONS = {"better": "better", "more_robust": "more robust to λ"}


@dataclass(frozen=True)
class SeedGrids:
    """One study's accuracies as arrays ``[arm, seed, lr, λ]`` in points (NaN: missing trial)."""

    val: np.ndarray
    test: np.ndarray
    wds: np.ndarray  # the λ axis

    @property
    def decaying(self) -> np.ndarray:
        """λ > 0: the cells that differ between arms (λ = 0 is one shared trial)."""
        return self.wds > 0


@dataclass(frozen=True)
class Claim:
    name: str
    question: str  # "better" or "more_robust"
    label: str  # what the number is, in a reader's words
    short: str  # the same in a table row or a headline
    unit: str  # "pt", "share" (fraction of cells) or "decades"
    higher_is_better: bool
    statistic: Callable[[SeedGrids], np.ndarray]  # -> [arm, seed]
    note: str = ""  # its limit, shown where the claim is
    # what the quantity can be on a grid with these λ > 0 values: its intervals are clipped there
    bounds: Callable[[np.ndarray], tuple[float, float]] = lambda lambdas: (-np.inf, np.inf)
    min_lambdas: int = 1  # λ > 0 values the claim needs to mean anything (a shape needs two)
    # [arm, seed] True where the seed's statistic is read from the shared λ = 0 trial alone: where both
    # arms are, on every seed, their difference is 0 by construction and the seeds show no spread
    shared: Callable[[SeedGrids], np.ndarray] | None = None

    def better_sign(self) -> int:
        return 1 if self.higher_is_better else -1

    def undefined(self, lambdas: np.ndarray) -> str | None:
        """Why the claim says nothing on this grid (``lambdas``: its λ > 0 values), or None."""
        if len(lambdas) < self.min_lambdas:
            return (f"the grid has {len(lambdas)} λ > 0 value{'s' if len(lambdas) != 1 else ''}, and "
                    f"{self.short} needs {self.min_lambdas} (with one it is 0 by construction): add λ values")
        return None

    @property
    def reading(self) -> str:
        """How to read the number: "higher is better", "lower is more robust"."""
        return f"{'higher' if self.higher_is_better else 'lower'} is {QUESTIONS[self.question].removesuffix(' to λ')}"


def _mean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice is a missing grid: NaN is right
        return np.nanmean(x, axis=axis)


def _complete(x: np.ndarray) -> np.ndarray:
    """[A, S]: the seed's grid of the arm has every cell (a statistic of a partial grid is not comparable)."""
    return np.isfinite(x).all(axis=(2, 3))


def _chosen(val: np.ndarray) -> np.ndarray:
    """[A, S, I, J] mask of each seed's validation-best cells: ties (within TIE) share the choice."""
    filled = np.where(np.isfinite(val), val, -np.inf)
    top = filled.max(axis=(2, 3), keepdims=True)
    return filled >= top - TIE


def _at_chosen(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Mean of ``values`` [A, S, I, J] over the chosen cells: a random tie-break in expectation."""
    return (np.where(chosen, values, 0.0).sum(axis=(2, 3)) / np.maximum(chosen.sum(axis=(2, 3)), 1))


def _only_complete(stat: np.ndarray, *grids: np.ndarray) -> np.ndarray:
    ok = np.logical_and.reduce([_complete(g) for g in grids])
    return np.where(ok, stat, np.nan)


def tuned(g: SeedGrids) -> np.ndarray:
    """Test accuracy at the seed's validation-best cell of the whole grid."""
    return _only_complete(_at_chosen(g.test, _chosen(g.val)), g.val, g.test)


def tuned_off(g: SeedGrids) -> np.ndarray:
    """[arm, seed]: the seed's validation-best cells are all λ = 0 (tuning turned decay off), so its tuned
    accuracy is the shared trial's, the same for every arm that does the same."""
    return ~_chosen(g.val)[..., g.decaying].any(axis=(2, 3))


def _decaying(g: SeedGrids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = g.decaying
    return g.val[..., d], g.test[..., d], g.wds[d]


def lambda_regret_best_lr(g: SeedGrids) -> np.ndarray:
    """Mean points lost over the λ > 0 grid at the arm's best η, against the arm's own best cell.

    The best cell (η*, λ*) is the seed's validation-best among λ > 0; the regret at λ is
    test(η*, λ*) − test(η*, λ), averaged over every λ > 0. Shift-invariant, lower is more robust.
    """
    val, test, _ = _decaying(g)
    chosen = _chosen(val)
    row_mean = test.mean(axis=3, keepdims=True)  # [A, S, I, 1]
    return _only_complete(_at_chosen(test - row_mean, chosen), val, test)


def lambda_regret(g: SeedGrids) -> np.ndarray:
    """Mean points lost over the λ > 0 grid against the best λ *of each η row* (chosen on the seed's
    validation), averaged over every η: how much mis-setting λ costs at whatever η is used.

    Adding a constant to the arm's grid leaves it unchanged: it measures shape, not level.
    Lower is more robust. It is the primary robustness claim because it does not jump when the
    best η changes from seed to seed, which makes ``lambda_regret_best_lr`` (the same loss at
    the arm's best η only) several times noisier: in ``study.analyse.calibration``'s robustness
    scenario its power at 5 seeds is about a quarter of this one's."""
    val, test, _ = _decaying(g)
    filled = np.where(np.isfinite(val), val, -np.inf)
    chosen = filled >= filled.max(axis=3, keepdims=True) - TIE  # per row
    best = (np.where(chosen, test, 0).sum(axis=3) / np.maximum(chosen.sum(axis=3), 1))  # [A, S, I]
    return _only_complete((best[..., None] - test).mean(axis=(2, 3)), val, test)


def decay_spread(g: SeedGrids) -> np.ndarray:
    """max − min of test accuracy along λ > 0 at the arm's best η (lower: flatter in λ)."""
    val, test, _ = _decaying(g)
    spread = test.max(axis=3, keepdims=True) - test.min(axis=3, keepdims=True)
    return _only_complete(_at_chosen(np.broadcast_to(spread, test.shape), _chosen(val)), val, test)


def lambda_width(g: SeedGrids) -> np.ndarray:
    """Decades of λ around the arm's best λ (at its best η) whose test accuracy stays within
    ``WIDTH_WITHIN`` points of the best cell's; 0 when only the best λ is (higher: wider)."""
    val, test, wds = _decaying(g)
    logs = np.log10(wds)
    J = test.shape[3]
    width = np.zeros(test.shape)
    for j in range(J):  # the contiguous run of λ within reach, for a best cell at column j
        within = test >= test[..., j:j + 1] - WIDTH_WITHIN
        lo = np.full(test.shape[:3], j)
        hi = np.full(test.shape[:3], j)
        for step in range(1, J):
            left = (lo == j - step + 1) & (j - step >= 0) & within[..., max(j - step, 0)]
            lo = np.where(left, j - step, lo)
            right = (hi == j + step - 1) & (j + step < J) & within[..., min(j + step, J - 1)]
            hi = np.where(right, j + step, hi)
        width[..., j] = logs[hi] - logs[lo]
    return _only_complete(_at_chosen(width, _chosen(val)), val, test)


def grid_mean(g: SeedGrids) -> np.ndarray:
    """Mean test accuracy over the λ > 0 grid (level and shape mixed)."""
    val, test, _ = _decaying(g)
    return _only_complete(test.mean(axis=(2, 3)), val, test)


def near_optimal_2pt(g: SeedGrids) -> np.ndarray:
    """Fraction of λ > 0 cells within 2 points of the seed's best cell over *every* arm (chosen on
    validation): rewards a higher level as much as a flatter shape."""
    val, test, _ = _decaying(g)
    everyone = np.moveaxis(val, 0, 1)[None].reshape(1, val.shape[1], -1, val.shape[3])  # [1, S, A*I, J]
    reference = _at_chosen(np.moveaxis(test, 0, 1)[None].reshape(everyone.shape), _chosen(everyone))  # [1, S]
    close = (test >= reference[..., None, None] - NEAR_OPTIMAL).mean(axis=(2, 3))
    return _only_complete(close, val, test)


def _points(lambdas):
    return 0.0, 100.0


def _decades(lambdas):
    return 0.0, float(np.log10(lambdas.max() / lambdas.min())) if len(lambdas) else 0.0


CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim("best", "better", "tuned test accuracy (each seed's validation-best cell)", "tuned accuracy", "pt",
          True, tuned, bounds=_points, shared=tuned_off),
    Claim("lambda_regret", "more_robust", "λ-regret: points lost off each η's own best λ (mean over η and "
          "λ > 0)", "λ-regret", "pt", False, lambda_regret, bounds=lambda lambdas: (-100.0, 100.0), min_lambdas=2),
    Claim("lambda_regret_best_lr", "more_robust", "λ-regret at its best η only (mean over λ > 0)",
          "λ-regret at best η", "pt", False, lambda_regret_best_lr, bounds=lambda lambdas: (-100.0, 100.0),
          min_lambdas=2),
    Claim("grid_mean", "better", "grid mean over λ > 0", "grid mean", "pt", True, grid_mean,
          "mixes level and shape", bounds=_points),
    Claim("near_optimal_2pt", "better", "near-optimal area (≤ 2 pt of the best of any arm)", "near-optimal area",
          "share", True, near_optimal_2pt, "mixes level and shape", bounds=lambda lambdas: (0.0, 1.0)),
    Claim("decay_spread", "more_robust", "λ-spread at its best η (max − min over λ > 0)", "λ-spread", "pt", False,
          decay_spread, bounds=_points, min_lambdas=2),
    Claim("lambda_width", "more_robust", f"λ-width: decades of λ within {WIDTH_WITHIN:g} pt of its own best",
          "λ-width", "decades", True, lambda_width, bounds=_decades, min_lambdas=2),
)}
PRIMARY_DEFAULT = {"better": "best", "more_robust": "lambda_regret"}


def claims_for(question: str) -> list[str]:
    return [name for name, c in CLAIMS.items() if c.question == question]


def per_seed(g: SeedGrids) -> dict[str, np.ndarray]:
    """Every claim's statistic, ``[arm, seed]``."""
    return {name: c.statistic(g) for name, c in CLAIMS.items()}


def per_seed_shared(g: SeedGrids) -> dict[str, np.ndarray]:
    """For the claims that can be read from the shared λ = 0 trial: where they are, ``[arm, seed]``."""
    return {name: c.shared(g) for name, c in CLAIMS.items() if c.shared}
