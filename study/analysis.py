"""Robustness metrics computed from the tidy table alone (method.md, "How robustness is quantified").

Importable on its own (pandas, numpy, scipy): feed it ``trials.csv`` of a
finished, interrupted or remote study, or a hand-made table. Accuracies are
reported in points (percent). A diverged trial counts as chance accuracy in
every summary and is flagged, never dropped.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CHANCE = {"digits": 0.1, "cifar10": 0.1, "cifar100": 0.01}
DELTAS = (1.0, 2.0)


def scored(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finished trials with ``score`` (the metric in points; chance where diverged)."""
    df = table.copy()
    if "status" in df:
        df = df[df["status"].isin(["TERMINATED"])]
    df = df[pd.to_numeric(df[metric], errors="coerce").notna() | (pd.to_numeric(df.get("diverged", 0)) > 0)]
    diverged = pd.to_numeric(df.get("diverged", 0), errors="coerce").fillna(0).astype(int) > 0
    chance = df["dataset"].map(CHANCE).fillna(0.0) if "dataset" in df else 0.0
    value = pd.to_numeric(df[metric], errors="coerce")
    value = value.where(~diverged, chance)
    scale = 100.0 if "acc" in metric else 1.0
    df = df.assign(score=value * scale, diverged=diverged.astype(int),
                   lr=df["lr"].astype(float), weight_decay=df["weight_decay"].astype(float))
    return df


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and count of ``score`` per (variant, lr, weight_decay) cell."""
    g = df.groupby(["variant", "lr", "weight_decay"])
    out = g["score"].agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"), n="count")
    out["diverged"] = g["diverged"].sum()
    return out.reset_index()


def expected_best_of_k(values: np.ndarray, ks: np.ndarray | None = None) -> np.ndarray:
    """E[max of k cells drawn uniformly with replacement] (Dodge et al., 2019), k = 1..N."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    ks = np.arange(1, n + 1) if ks is None else ks
    i = np.arange(1, n + 1)
    return np.array([float(np.sum(v * ((i / n) ** k - ((i - 1) / n) ** k))) for k in ks])


def best_of_k_band(df: pd.DataFrame, variant: str, boots: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected best-of-k curve and a 90% bootstrap band over seeds (resampled within each cell)."""
    mine = df[df["variant"] == variant]
    groups = [g["score"].to_numpy() for _, g in mine.groupby(["lr", "weight_decay"])]
    curve = expected_best_of_k(np.array([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    draws = np.array([
        expected_best_of_k(np.array([rng.choice(g, len(g)).mean() for g in groups])) for _ in range(boots)
    ])
    return curve, np.percentile(draws, 5, axis=0), np.percentile(draws, 95, axis=0)


def compare(df: pd.DataFrame, variant: str, baseline: str) -> pd.DataFrame:
    """Per cell: variant - baseline mean difference and Welch's t-test p-value over seeds."""
    rows = []
    for (lr, wd), mine in df[df["variant"] == variant].groupby(["lr", "weight_decay"]):
        base = df[(df["variant"] == baseline) & (df["lr"] == lr) & (df["weight_decay"] == wd)]
        if base.empty:
            continue
        a, b = mine["score"].to_numpy(), base["score"].to_numpy()
        p = float("nan")
        if len(a) > 1 and len(b) > 1:
            if np.all(a == a[0]) and np.all(b == b[0]):
                p = 1.0 if a[0] == b[0] else 0.0  # no spread: the difference is exact
            else:
                p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        rows.append({"variant": variant, "lr": lr, "weight_decay": wd, "diff": a.mean() - b.mean(),
                     "p": p, "n": len(a), "n_baseline": len(b)})
    return pd.DataFrame(rows, columns=["variant", "lr", "weight_decay", "diff", "p", "n", "n_baseline"])


def summarize(table: pd.DataFrame, metric: str = "test_acc_at_best_val", baseline: str = "wd",
              alpha: float = 0.05) -> pd.DataFrame:
    """One row of robustness metrics per variant."""
    df = scored(table, metric)
    c = cells(df)
    overall = c["mean"].max()
    rows = []
    for variant, vc in c.groupby("variant"):
        best = vc.loc[vc["mean"].idxmax()]
        worst = vc.loc[vc["mean"].idxmin()]
        at_best_lr = vc[vc["lr"] == best["lr"]]["mean"]
        row = {
            "variant": variant,
            "cells": len(vc),
            "seeds_per_cell": int(vc["n"].min()),
            "best_lr": best["lr"], "best_weight_decay": best["weight_decay"],
            "best_mean": best["mean"], "best_sd": best["sd"],
            "worst_mean": worst["mean"], "worst_lr": worst["lr"], "worst_weight_decay": worst["weight_decay"],
            "grid_mean": vc["mean"].mean(),
            "decay_spread_at_best_lr": at_best_lr.max() - at_best_lr.min(),
            "diverged_cells": int((vc["diverged"] > 0).sum()),
        }
        for d in DELTAS:
            row[f"near_optimal_{d:g}pt"] = float((vc["mean"] >= overall - d).mean())
            row[f"near_own_best_{d:g}pt"] = float((vc["mean"] >= best["mean"] - d).mean())
        if variant != baseline and baseline in set(c["variant"]):
            cmp = compare(df, variant, baseline)
            row["mean_diff_vs_baseline"] = cmp["diff"].mean() if len(cmp) else float("nan")
            tested = cmp["p"].notna().any()
            row["sig_better"] = int(((cmp["p"] < alpha) & (cmp["diff"] > 0)).sum()) if tested else None
            row["sig_worse"] = int(((cmp["p"] < alpha) & (cmp["diff"] < 0)).sum()) if tested else None
        rows.append(row)
    return pd.DataFrame(rows)


def needs_more_seeds(table: pd.DataFrame) -> bool:
    """True when no cell has two seeds, so no significance test is possible."""
    return int(pd.to_numeric(table["seed"]).nunique()) < 2


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
