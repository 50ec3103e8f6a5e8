"""Selection and robustness metrics, from the tidy table alone (method.md, "How robustness is quantified").

The rules every number here follows, so that the report, ``study status``, the
plots and the verdict can never disagree:

* **Choose on validation, report on test.** A cell's validation score is the
  mean over seeds of its selection metric (``best_val_acc`` for the default
  ``test_acc_at_best_val``); every choice (an arm's best cell, the overall best
  cell that near-optimal areas are measured from, the pick among k cells of the
  best-of-k curve, the learning rate of the lambda-spread) is made on it. Test
  accuracy is only read at the chosen cells. Cells tied on validation are
  averaged, which is what a random tie-break gives in expectation.
* **Seeds pair trials**: the same seed gives every arm the same initialisation,
  split and batch order, so uncertainty comes from resampling seed indices
  jointly across arms (``scipy.stats.bootstrap``), keeping the pairing.
* Accuracies are in points (percent). A diverged trial counts as chance, never
  dropped; unfinished trials are counted, never silently left out.

Importable on its own (numpy, pandas, scipy): feed it ``trials.csv`` of a
finished, interrupted or remote study, or a hand-made table.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .paired import compare_cells

CHANCE = {"digits": 0.1, "cifar10": 0.1, "cifar100": 0.01}
DELTAS = (1.0, 2.0)
CONFIDENCE = 0.95
# below this, resampling seeds gives at most 3 distinct resamples: no interval at all is more honest
MIN_SEEDS_FOR_INTERVALS = 3
# the validation metric that chooses cells for each reported test metric
SELECTED_BY = {"test_acc_at_best_val": "best_val_acc", "final_test_acc": "val_acc",
               "paper_top10_test_acc": "best_val_acc", "best_val_acc": "best_val_acc", "val_acc": "val_acc"}
# summary metrics with a bootstrap interval, and whether larger is more robust
CLAIMS = {"best": "best cell (test at the validation-best cell)",
          "near_optimal_1pt": "near-optimal area (≤ 1 pt)", "near_optimal_2pt": "near-optimal area (≤ 2 pt)",
          "decay_spread": "λ-spread at the best η", "worst": "worst cell", "grid_mean": "grid mean"}


def arm_of(table: pd.DataFrame) -> pd.Series:
    """The arm column, or the variant for tables written before arms existed (and hand-made ones)."""
    return table["arm"] if "arm" in table else table["variant"]


def scored(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finished trials with ``score`` (the reported metric) and ``select`` (its validation twin), in points.

    A diverged trial scores chance on both.
    """
    if metric not in SELECTED_BY:
        raise ValueError(f"metric {metric!r} unknown; use one of {sorted(SELECTED_BY)}")
    df = table.assign(arm=arm_of(table))
    if "status" in df:
        df = df[df["status"] == "TERMINATED"]
    diverged = pd.to_numeric(df.get("diverged", 0), errors="coerce").fillna(0).astype(int) > 0
    chance = df["dataset"].map(CHANCE).fillna(0.0) if "dataset" in df else 0.0
    selector = SELECTED_BY[metric]
    if selector not in df:
        selector = metric
    value = pd.to_numeric(df[metric], errors="coerce").where(~diverged, chance)
    select = pd.to_numeric(df[selector], errors="coerce").where(~diverged, chance)
    df = df.assign(score=value * 100.0, select=select * 100.0, diverged=diverged.astype(int),
                   lr=df["lr"].astype(float), weight_decay=df["weight_decay"].astype(float),
                   seed=df["seed"].astype(int))
    return df[df["score"].notna() & df["select"].notna()]


@dataclass
class Grid:
    """Every finished trial as arrays ``[arm, lr, lambda, seed]`` (NaN where missing), in points."""

    arms: list[str]
    lrs: list[float]
    wds: list[float]
    seeds: list[int]
    val: np.ndarray
    test: np.ndarray
    diverged: np.ndarray  # [arm, lr, lambda]: diverged seeds

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.arms), len(self.lrs), len(self.wds)


def grid(df: pd.DataFrame, arms: list[str] | None = None) -> Grid:
    arms = arms or list(dict.fromkeys(df["arm"]))
    lrs, wds, seeds = sorted(df["lr"].unique()), sorted(df["weight_decay"].unique()), sorted(df["seed"].unique())
    val = np.full((len(arms), len(lrs), len(wds), len(seeds)), np.nan)
    test = val.copy()
    div = np.zeros(val.shape[:3], dtype=int)
    pos = {a: i for i, a in enumerate(arms)}
    li, wi, si = ({v: i for i, v in enumerate(x)} for x in (lrs, wds, seeds))
    for r in df.itertuples():
        if r.arm not in pos:
            continue
        at = (pos[r.arm], li[r.lr], wi[r.weight_decay], si[r.seed])
        val[at], test[at] = r.select, r.score
        div[at[:3]] += r.diverged
    return Grid(arms, lrs, wds, seeds, val, test, div)


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are missing cells: NaN is right
        return np.nanmean(x, axis=axis)


def cell_means(values: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
    """Mean over the chosen seeds: ``values[A, I, J, S]``, ``seed_idx[B, S']`` -> ``[B, A, I, J]``."""
    return np.moveaxis(_nanmean(values[..., seed_idx], axis=-1), -1, 0)


def robustness(g: Grid, seed_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every claim metric, per resample and arm (``[B, A]``), choosing on validation only."""
    val, test = cell_means(g.val, seed_idx), cell_means(g.test, seed_idx)
    B, A, I, J = val.shape
    v, t = val.reshape(B, A, I * J), test.reshape(B, A, I * J)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        top = np.nanmax(v, axis=2, keepdims=True)
        best = _nanmean(np.where(v == top, t, np.nan), axis=2)
        overall = np.nanmax(v.reshape(B, -1), axis=1)[:, None, None]
        reference = _nanmean(np.where(v == overall, t, np.nan).reshape(B, -1), axis=1)[:, None, None]
        finished = np.isfinite(t).sum(axis=2)
        out = {"best": best}
        for d in DELTAS:
            out[f"near_optimal_{d:g}pt"] = (t >= reference - d).sum(axis=2) / np.maximum(finished, 1)
        # lambda-spread along the learning rate of the validation-best cell
        best_lr = np.argmax(np.where(np.isfinite(v), v, -np.inf), axis=2) // J
        along = np.take_along_axis(test, best_lr[:, :, None, None], axis=2)[:, :, 0, :]
        out["decay_spread"] = np.nanmax(along, axis=2) - np.nanmin(along, axis=2)
        out["worst"] = np.nanmin(t, axis=2)
        out["grid_mean"] = _nanmean(t, axis=2)
    return out


def bootstrap_intervals(g: Grid, baseline: str | None, resamples: int = 2000, seed: int = 0,
                        confidence: float = CONFIDENCE) -> dict[str, np.ndarray]:
    """Percentile intervals over seeds, resampled jointly across arms (pairing kept).

    For each claim metric ``m``: ``m`` -> ``[A, 2]``, and ``diff_m`` -> ``[A, 2]`` for
    arm - baseline (NaN rows for the baseline itself). All NaN below ``MIN_SEEDS_FOR_INTERVALS`` seeds.
    """
    A = len(g.arms)
    keys = list(CLAIMS)
    nan = {k: np.full((A, 2), np.nan) for k in keys + [f"diff_{k}" for k in keys]}
    if len(g.seeds) < MIN_SEEDS_FOR_INTERVALS:
        return nan
    b = g.arms.index(baseline) if baseline in g.arms else None

    def statistic(idx, axis=-1):
        idx = np.atleast_2d(np.asarray(idx, dtype=int))
        m = robustness(g, idx)
        parts = [m[k].T for k in keys]  # each [A, B]
        if b is not None:
            parts += [(m[k] - m[k][:, [b]]).T for k in keys]
        return np.concatenate(parts, axis=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few seeds make degenerate resamples: the interval says so by its width
        res = stats.bootstrap((np.arange(len(g.seeds)),), statistic, vectorized=True, n_resamples=resamples,
                              confidence_level=confidence, method="percentile", random_state=seed)
    low, high = res.confidence_interval
    out = dict(nan)
    for n, k in enumerate(keys):
        out[k] = np.stack([low[n * A:(n + 1) * A], high[n * A:(n + 1) * A]], axis=1)
        if b is not None:
            o = (len(keys) + n) * A
            diff = np.stack([low[o:o + A], high[o:o + A]], axis=1)
            diff[b] = np.nan
            out[f"diff_{k}"] = diff
    return out


def expected_best_of_k(val: np.ndarray, test: np.ndarray, ks: np.ndarray | None = None) -> np.ndarray:
    """Expected *test* score of the *validation*-best of k cells drawn uniformly with replacement.

    Dodge et al. (2019)'s expected validation performance, made honest: the k
    cells are compared on validation, and the winner's test score is what you
    get. Cells tied on validation share the win (their test scores averaged).
    """
    keep = np.isfinite(val) & np.isfinite(test)
    val, test = np.asarray(val, float)[keep], np.asarray(test, float)[keep]
    n = len(val)
    ks = np.arange(1, n + 1) if ks is None else np.asarray(ks)
    levels, group = np.unique(val, return_inverse=True)
    group_test = np.bincount(group, weights=test) / np.bincount(group)
    below = np.cumsum(np.bincount(group)) / n  # fraction of cells at or below each level
    prev = np.r_[0.0, below[:-1]]
    return np.array([float(np.sum(group_test * (below ** k - prev ** k))) for k in ks])


def best_of_k_band(g: Grid, arm: str, resamples: int = 500, seed: int = 0,
                   confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The expected best-of-k curve of an arm with a bootstrap band over seeds (NaN band with one seed)."""
    a = g.arms.index(arm)
    every = np.arange(len(g.seeds))[None]

    def curve(idx):
        return expected_best_of_k(cell_means(g.val, idx)[0, a].ravel(), cell_means(g.test, idx)[0, a].ravel())

    point = curve(every)
    if len(g.seeds) < MIN_SEEDS_FOR_INTERVALS:
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)

    def statistic(idx, axis=-1):
        idx = np.atleast_2d(np.asarray(idx, dtype=int))
        curves = [curve(row[None]) for row in idx]
        width = len(point)
        return np.stack([np.pad(c, (0, width - len(c)), constant_values=np.nan) for c in curves], axis=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(len(g.seeds)),), statistic, vectorized=True, n_resamples=resamples,
                              confidence_level=confidence, method="percentile", random_state=seed)
    return point, res.confidence_interval.low, res.confidence_interval.high


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, lr, lambda) cell: mean test score, its sd over seeds, mean validation score, counts."""
    g = df.groupby(["arm", "lr", "weight_decay"], sort=False)
    out = g["score"].agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"), n="count")
    out["val"] = g["select"].mean()
    out["diverged"] = g["diverged"].sum()
    return out.reset_index()


def best_cells(arm_cells: pd.DataFrame) -> pd.DataFrame:
    """An arm's validation-best cells (rows of ``cells``): every cell tied at the top validation mean.

    The one selection rule that the summary, ``study status`` and the plots share; the first row
    names the cell, and the reported score is the mean over all of them."""
    return arm_cells[arm_cells["val"] == arm_cells["val"].max()]


def bookkeeping(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm: planned, finished, errored and unfinished trials, from every row of the table."""
    t = table.assign(arm=arm_of(table))
    status = t["status"] if "status" in t else pd.Series("TERMINATED", index=t.index)
    return pd.DataFrame({
        "planned_trials": t.groupby("arm", sort=False).size(),
        "finished_trials": (status == "TERMINATED").groupby(t["arm"], sort=False).sum(),
        "errored_trials": (status == "ERROR").groupby(t["arm"], sort=False).sum(),
    }).assign(unfinished_trials=lambda d: d["planned_trials"] - d["finished_trials"] - d["errored_trials"])


def summarize(table: pd.DataFrame, metric: str = "test_acc_at_best_val", baseline: str = "wd",
              test: str = "t", correction: str = "holm", alpha: float = 0.05, effective_decay: dict | None = None,
              resamples: int = 2000, arms: list[str] | None = None) -> pd.DataFrame:
    """One row per arm: every robustness claim with its interval, and the paired comparison to the baseline.

    ``effective_decay``: {arm: lambda_eff / lambda} (a property of model and
    schedule, see ``lpwd.effective_decay``), reported as given.
    """
    df = scored(table, metric)
    g = grid(df, arms)
    point = {k: v[0] for k, v in robustness(g, np.arange(len(g.seeds))[None]).items()}
    ci = bootstrap_intervals(g, baseline, resamples)
    books = bookkeeping(table)
    c = cells(df)
    b = g.arms.index(baseline) if baseline in g.arms else None
    rows = []
    for a, arm in enumerate(g.arms):
        mine = c[c["arm"] == arm]
        top = best_cells(mine)
        worst = mine.loc[mine["mean"].idxmin()] if len(mine) else None
        row = {
            "arm": arm,
            "cells": len(mine), "cells_planned": g.shape[1] * g.shape[2],
            "seeds_per_cell": int(mine["n"].min()) if len(mine) else 0,
            **(books.loc[arm].to_dict() if arm in books.index else {}),
            "effective_decay": (effective_decay or {}).get(arm, float("nan")),
            "best_lr": top["lr"].iloc[0] if len(top) else float("nan"),
            "best_weight_decay": top["weight_decay"].iloc[0] if len(top) else float("nan"),
            "best_tied_cells": len(top), "best_val": top["val"].iloc[0] if len(top) else float("nan"),
            "best_sd": top["sd"].mean() if len(top) else float("nan"),
            "worst_lr": worst["lr"] if worst is not None else float("nan"),
            "worst_weight_decay": worst["weight_decay"] if worst is not None else float("nan"),
            "diverged_cells": int((mine["diverged"] > 0).sum()),
            "sign_flip_cells": int((mine["lr"] * mine["weight_decay"] >= 1).sum()),
        }
        for k in CLAIMS:
            row[k], (row[f"{k}_lo"], row[f"{k}_hi"]) = float(point[k][a]), ci[k][a]
            if b is not None and a != b:
                row[f"diff_{k}"] = float(point[k][a] - point[k][b])
                row[f"diff_{k}_lo"], row[f"diff_{k}_hi"] = ci[f"diff_{k}"][a]
        if b is not None and a != b:
            cmp = compare_cells(g, arm, baseline, test, correction, alpha)
            tested = cmp["p"].notna()
            row.update({"cells_compared": len(cmp), "cells_tested": int(tested.sum()),
                        "mean_cell_diff": cmp["diff"].mean() if len(cmp) else float("nan"),
                        "sig_better": int((cmp["significant"] & (cmp["diff"] > 0)).sum()),
                        "sig_worse": int((cmp["significant"] & (cmp["diff"] < 0)).sum())})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update({"metric": metric, "selected_by": SELECTED_BY[metric], "baseline": baseline, "test": test,
                      "correction": correction, "alpha": alpha, "confidence": CONFIDENCE,
                      "seeds": len(g.seeds), "resamples": resamples})
    return out


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
