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
decay is strongest).
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


@dataclass(frozen=True)
class Scenario:
    """How each treated arm differs from the baseline ``wd``."""

    name: str
    arms: tuple = ("wd", "lpwd")
    level: float = 0.0  # points added to every λ > 0 trial of the treated arms (after its noise: same shape)
    recover: float = 0.0  # fraction of the loss below the row's best regained at the largest λ values
    largest: int = 2  # how many of the largest λ values recover

    def surface(self, shape: Shape, treated: bool) -> np.ndarray:
        mu = shape.surface.astype(float).copy()
        if not treated:
            return mu
        wds = np.asarray(shape.wds)
        if self.recover:
            top = mu.max(axis=1, keepdims=True)
            at = np.zeros(len(wds), dtype=bool)
            at[np.argsort(wds)[-self.largest:]] = True
            mu[:, at] += self.recover * (top - mu[:, at])
        return np.clip(mu, 0.0, 100.0)


SCENARIOS = {
    "null": Scenario("null"),
    "null4": Scenario("null4", arms=("wd", "pwd", "lpwd", "cwd")),
    "level": Scenario("level", level=1.0),
    "robust": Scenario("robust", recover=0.1),
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
    mu = np.stack([scenario.surface(shape, treated=a > 0) for a in range(A)])  # [A, I, J]
    mu[:, :, shared] = shape.surface[:, shared]
    scale = shape.trial_sd * np.sqrt(np.clip(mu * (100 - mu), 25, None) / (96 * 4))
    # a level difference moves every λ > 0 trial of a treated arm as it is: the same shape, noise included
    level = np.zeros((A, 1, J, 1))
    level[1:, :, wds > 0] = scenario.level
    val = mu[..., None] + seed_val + scale[..., None] * noise[..., 0] + level
    test = mu[..., None] + seed_test + scale[..., None] * noise[..., 1] + level
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
