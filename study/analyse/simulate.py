"""Synthetic studies shaped like a real grid, with a known truth, for measuring error rates.

A simulated study is a tidy table like ``trials.csv``, so it goes through the very
``analysis.summarize`` that ``study report`` calls. What it keeps from a real study
on digits (the quick study's ``wd`` arm, 3 seeds, is the default surface):

* a seed effect shared by every arm and cell of that seed: on validation (the seed
  draws the validation split) and, smaller, on test (the seed draws the init);
* per-trial noise, validation and test correlated (a lucky trial is lucky on both),
  larger where accuracy is far from 0 and 100 (binomial-like);
* accuracies in whole images (359 test, 216 validation images);
* λ = 0 cells trained once and shared by every arm.

Scenarios say how the treated arms differ from the baseline arm ``wd``: not at all
(``null``), by a constant on every λ > 0 cell (``level``: better, not more robust), or
by losing less at the largest λ values (``robust``: more robust, concentrated where
decay is strongest); an effect may differ per arm (the decomposition's scenarios).

``SHAPES`` are the ugly data real studies have, each a variant of the default:
``small_val`` (30 validation images: many cells tie on validation), ``ceiling`` (half
the cells at 100% on average, so their trials sit at the bound), ``collapse`` (30% of
the trials at the largest η·λ collapse to chance, independently per arm) and
``heteroscedastic`` (trial noise growing from 0.5 to 6 points with λ).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

QUICK_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
QUICK_WDS = (0.0, 1.0, 3.0, 10.0, 30.0)
# test accuracy (points) of wd on the quick study's grid (digits, small_cnn, 10 epochs), rows lr, columns λ
QUICK_SURFACE = np.array([
    [89.5, 89.6, 89.6, 88.8, 87.3],
    [95.1, 94.9, 95.7, 94.4, 14.8],
    [96.7, 96.2, 96.9, 82.9, 7.8],
    [96.2, 96.7, 95.4, 69.2, 7.8],
])


@dataclass(frozen=True)
class Shape:
    """The grid and the noise of a simulated study (defaults: the quick study on digits)."""

    lrs: tuple = QUICK_LRS
    wds: tuple = QUICK_WDS
    surface: np.ndarray = field(default_factory=lambda: QUICK_SURFACE.copy())
    seed_sd_val: float = 1.5  # the validation split a seed draws moves every cell of that seed
    seed_sd_test: float = 0.5  # the init a seed draws, shared by the arms
    trial_sd: float = 2.0  # per trial, at 96 points; scaled like a binomial elsewhere
    val_test_corr: float = 0.6
    n_test: int = 359
    n_val: int = 216
    collapse: float = 0.0  # chance that a trial in the largest quarter of η·λ collapses to chance (10%)
    noise_by_lambda: tuple | None = None  # (sd at the smallest λ, sd at the largest): trial noise in points


@dataclass(frozen=True)
class Scenario:
    """How each treated arm differs from the baseline ``wd``."""

    name: str
    arms: tuple = ("wd", "lpwd")
    # points added to every λ > 0 trial of the treated arms (after its noise: same shape); a tuple gives
    # each arm its own (the baseline's first)
    level: float | tuple = 0.0
    recover: float | tuple = 0.0  # fraction of the loss below the row's best regained at the largest λ values
    largest: int = 2  # how many of the largest λ values recover

    def effect(self, name: str, arm: int) -> float:
        value = getattr(self, name)
        return float(value[arm]) if isinstance(value, tuple) else (float(value) if arm > 0 else 0.0)

    def surface(self, shape: Shape, arm: int) -> np.ndarray:
        mu = shape.surface.astype(float).copy()
        wds = np.asarray(shape.wds)
        recover = self.effect("recover", arm)
        if recover:
            top = mu.max(axis=1, keepdims=True)
            at = np.zeros(len(wds), dtype=bool)
            at[np.argsort(wds)[-self.largest:]] = True
            mu[:, at] += recover * (top - mu[:, at])
        return mu  # may exceed 100 (a latent accuracy): the trials then sit at the ceiling


SCENARIOS = {
    "null": Scenario("null"),
    "null4": Scenario("null4", arms=("wd", "pwd", "lpwd", "cwd")),
    "level": Scenario("level", level=1.0),
    "robust": Scenario("robust", recover=0.1),
    "clear": Scenario("clear", recover=0.3),  # a clear robustness effect: 30% of the loss regained
}
# the decomposition's arms: lpwd − wd = (pwd − wd) + (pwd@lpwd-mass − pwd) + (lpwd − pwd@lpwd-mass)
FOUR = ("wd", "pwd", "lpwd", "pwd@lpwd-mass")
DECOMPOSITION_SCENARIOS = {
    "identical": Scenario("identical", arms=FOUR),  # the share is 0/0: any value is true
    "all mass": Scenario("all mass", arms=FOUR, recover=(0.0, 0.0, 0.3, 0.3)),  # share 1
    "all shape": Scenario("all shape", arms=FOUR, recover=(0.0, 0.0, 0.3, 0.0)),  # share 0
}
# decay only hurts: every λ > 0 cell 8 points below the λ = 0 trial, so tuning turns decay off for every arm
DECAY_HURTS = Shape(surface=np.where(np.asarray(QUICK_WDS) > 0, QUICK_SURFACE - 8.0, QUICK_SURFACE))
CEILING_SURFACE = QUICK_SURFACE + 9.0  # a latent accuracy above 100 for half the cells: their trials sit at 100
SHAPES = {
    "default": Shape(),
    "small_val": Shape(n_val=30),
    "ceiling": Shape(surface=CEILING_SURFACE),
    "collapse": Shape(collapse=0.3),
    "heteroscedastic": Shape(noise_by_lambda=(0.5, 6.0)),
}


def _quantise(points: np.ndarray, n: int) -> np.ndarray:
    return np.round(np.clip(points, 0, 100) / 100 * n) / n


def simulate_arrays(scenario: Scenario, seeds: int, rng: np.random.Generator,
                    shape: Shape = Shape()) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test accuracy, fractions ``[arm, lr, λ, seed]``."""
    wds = np.asarray(shape.wds)
    I, J, A = len(shape.lrs), len(wds), len(scenario.arms)
    seed_val = rng.normal(0, shape.seed_sd_val, seeds)
    seed_test = rng.normal(0, shape.seed_sd_test, seeds)
    cov = [[1, shape.val_test_corr], [shape.val_test_corr, 1]]
    noise = rng.multivariate_normal([0, 0], cov, size=(A, I, J, seeds))  # [A, I, J, S, 2]
    shared = np.flatnonzero(wds == 0)
    noise[:, :, shared] = noise[:1, :, shared]  # λ = 0: one trial shared by every arm
    mu = np.stack([scenario.surface(shape, a) for a in range(A)])  # [A, I, J]
    mu[:, :, shared] = shape.surface[:, shared]
    if shape.noise_by_lambda:
        scale = np.broadcast_to(np.interp(np.arange(J), [0, J - 1], shape.noise_by_lambda), mu.shape)
    else:
        scale = shape.trial_sd * np.sqrt(np.clip(mu * (100 - np.minimum(mu, 99.0)), 25, None) / (96 * 4))
    # a level difference moves every λ > 0 trial of a treated arm as it is: the same shape, noise included
    level = np.zeros((A, 1, J, 1))
    for a in range(A):
        level[a, :, wds > 0] = scenario.effect("level", a)
    val = mu[..., None] + seed_val + scale[..., None] * noise[..., 0] + level
    test = mu[..., None] + seed_test + scale[..., None] * noise[..., 1] + level
    if shape.collapse:
        rate = np.outer(shape.lrs, wds)
        risky = rate >= np.quantile(rate[rate > 0], 0.75)  # the largest quarter of η·λ
        down = (rng.random((A, I, J, seeds)) < shape.collapse) & risky[None, :, :, None]
        down[:, :, shared] = down[:1, :, shared]
        val, test = np.where(down, 10.0, val), np.where(down, 10.0, test)
    return _quantise(val, shape.n_val), _quantise(test, shape.n_test)


def simulate(scenario: Scenario, seeds: int, rng: np.random.Generator, shape: Shape = Shape()) -> pd.DataFrame:
    """One study as a tidy table (fractions, as trials.csv holds them)."""
    val, test = simulate_arrays(scenario, seeds, rng, shape)
    A, I, J, S = val.shape
    a, i, j, s = (x.ravel() for x in np.meshgrid(np.arange(A), np.arange(I), np.arange(J), np.arange(S),
                                                  indexing="ij"))
    arm = np.asarray(scenario.arms)[a]
    return pd.DataFrame({"arm": arm, "variant": arm, "lr": np.asarray(shape.lrs)[i],
                         "weight_decay": np.asarray(shape.wds, float)[j], "seed": s, "status": "TERMINATED",
                         "dataset": "digits", "diverged": 0, "best_val_acc": val.ravel(),
                         "test_acc_at_best_val": test.ravel()})
