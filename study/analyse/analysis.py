"""Selection and robustness metrics, from the tidy table alone (docs/report.md).

The rules every number here follows, so that the report, ``study status``, the
plots and the verdict can never disagree:

* **Choose on validation, report on test.** A cell's validation score is the
  mean over seeds of its selection metric (``best_val_acc`` for the default
  ``test_acc_at_best_val``); every choice (an arm's best cell, the overall best
  cell that near-optimal areas are measured from, the pick among k cells of the
  best-of-k curve, the learning rate of the lambda-spread) is made on it. Test
  accuracy is only read at the chosen cells. Cells tied on validation (within
  ``claims.TIE``) are averaged, which is what a random tie-break gives in expectation.
* **Seeds pair trials**: the same seed gives every arm the same initialisation,
  split and batch order. Each claim of ``study.define.claims`` is computed per seed (a seed
  is one replicate of the grid) and compared by per-seed differences: a paired
  t-test and t-interval. A seed whose grid is incomplete for either arm of a
  comparison (an errored trial) is dropped from both.
* Accuracies are in points (percent). A diverged trial counts as chance, never
  dropped; unfinished trials are counted, never silently left out.

Importable on its own (numpy, pandas, scipy): feed it ``trials.csv`` of a
finished, interrupted or remote study, or a hand-made table.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from ..define.roles import MASS_ARM, contenders
from ..define.claims import CLAIMS, PRIMARY_DEFAULT, TIE, Claim, SeedGrids, per_seed, per_seed_shared
from .paired import Difference, adjust, compare_cells, paired_difference, ratio_interval
from .sequential import Look, decide

CHANCE = {"digits": 0.1, "mnist1d": 0.1, "mnist1d_noisy": 0.1, "cifar10": 0.1, "cifar100": 0.01}
CONFIDENCE = 0.95
ALPHA = 0.05
# a paired t-test over 2 seeds has one degree of freedom and no way to check its assumptions:
# below 3 seeds a claim is "cannot be shown", and nothing gets an interval
MIN_SEEDS = 3
# the validation metric that chooses cells for each reported test metric
SELECTED_BY = {"test_acc_at_best_val": "best_val_acc", "final_test_acc": "val_acc",
               "paper_top10_test_acc": "best_val_acc", "best_val_acc": "best_val_acc", "val_acc": "val_acc"}
# "ruled out": a sequential study's interval lies inside ±verdict.min_effect (no effect of that size)
ANSWERS = ("shown", "shown worse", "not shown", "ruled out", "cannot be shown")
# a control arm is an instrument of the decomposition, never a contender: it gets no answer and
# stays out of Holm's family (a contender's answer must not depend on the controls a config runs)
CONTROL = "control"
# the arms lpwd's edge is split by (MASS_ARM: pwd trained at lpwd's decay mass)
DECOMPOSITION = {"placement": ("pwd", "wd"), "decay mass": (MASS_ARM, "pwd"), "layer shape": ("lpwd", MASS_ARM)}
# the share of lpwd's edge over pwd that decay mass explains reads as "mostly mass" above this,
# "mostly layer shape" below it, when its whole interval is on that side
MOSTLY = 0.5


def resolution_of(scores) -> float:
    """The step of the accuracies in points (100 / test images), read from the trials' own numbers:
    the largest step of which every value is a whole multiple; 0 when none is (continuous, hand-made)."""
    x = np.asarray(scores, float)
    u = np.unique(np.round(x[np.isfinite(x)], 9))
    if len(u) < 2:
        return 0.0
    gap = float(np.diff(u).min())
    for k in range(1, 21):  # few trials may never differ by exactly one image: try its fractions
        steps = (u - u[0]) / (gap / k)
        if np.all(np.abs(steps - np.round(steps)) < 1e-4):
            return gap / k
    return 0.0


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
    # an accuracy is a share of images: an infinite one (a hand-edited or damaged table) is no number at all
    value = pd.to_numeric(df[metric], errors="coerce").replace([np.inf, -np.inf], np.nan).where(~diverged, chance)
    select = pd.to_numeric(df[selector], errors="coerce").replace([np.inf, -np.inf], np.nan).where(~diverged, chance)
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
    resolution: float = 0.0  # points per test image (``resolution_of``), the floor of every standard error

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
    # a diverged trial scores chance, which is no count of test images: it says nothing of the step
    return Grid(arms, lrs, wds, seeds, val, test, div, resolution_of(df.loc[df["diverged"] == 0, "score"]))


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are missing cells: NaN is right
        return np.nanmean(x, axis=axis)


def seed_grids(g: Grid) -> SeedGrids:
    """The grid as ``claims`` reads it: ``[arm, seed, lr, λ]``."""
    return SeedGrids(np.moveaxis(g.val, 3, 1), np.moveaxis(g.test, 3, 1), np.asarray(g.wds, float))


def answer(claim: Claim, diff: float, pairs: int, p_adj: float, alpha: float) -> str:
    """One of ``ANSWERS`` for arm − baseline on a primary claim, from its mean paired difference,
    the number of pairs and its corrected p-value."""
    if pairs < MIN_SEEDS or not math.isfinite(p_adj):
        return "cannot be shown"
    if p_adj >= alpha:
        return "not shown"
    return "shown" if diff * claim.better_sign() > 0 else "shown worse"


def paired_seeds(stat: np.ndarray, arms: list[int]) -> np.ndarray:
    """Seeds (indices) on which every one of ``arms`` has a complete grid."""
    return np.flatnonzero(np.isfinite(stat[arms]).all(axis=0))


def paired(diffs: np.ndarray, confidence: float = CONFIDENCE, resolution: float = 0.0) -> Difference:
    """``paired_difference``; below ``MIN_SEEDS`` pairs the mean difference only, no interval or p-value."""
    d = paired_difference(diffs, confidence, resolution)
    return d if d.n >= MIN_SEEDS else replace(d, lo=math.nan, hi=math.nan, p=math.nan, se=math.nan)


def compare(stat: np.ndarray, a: int, b: int, confidence: float = CONFIDENCE,
            resolution: float = 0.0) -> tuple[Difference, np.ndarray]:
    """Arm a − arm b on one claim's per-seed statistic ``[arm, seed]``; also the seeds used."""
    both = paired_seeds(stat, [a, b])
    return paired(stat[a, both] - stat[b, both], confidence, resolution), both


def seeds_off_together(shared: np.ndarray | None, a: int, b: int, seeds: np.ndarray) -> int:
    """On how many of ``seeds`` arms a and b both read a claim from the shared λ = 0 trial (``shared``:
    ``Claim.shared``'s [arm, seed] mask; 0 where the claim never does): those seeds' differences are 0
    by construction, so a reader is told how many."""
    return int((shared[a, seeds] & shared[b, seeds]).sum()) if shared is not None and len(seeds) else 0


def off_on_every_seed(count: int, seeds: np.ndarray) -> bool:
    """Both arms tuned decay off on every one of ``seeds`` (``count`` of them, from ``seeds_off_together``):
    the difference is 0 by construction, and its standard error, 0 over these seeds, says nothing of the
    seeds on which one of them would not."""
    return len(seeds) >= MIN_SEEDS and count == len(seeds)


def tuned_off_flag(row: pd.Series, claim: str) -> bool:
    """A summary row's ``shared_<claim>`` as a plain bool (NaN where the row compares nothing)."""
    off = row.get(f"shared_{claim}")
    return isinstance(off, (bool, np.bool_)) and bool(off)


def own_interval(x: np.ndarray, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-math.inf, math.inf),
                 resolution: float = 0.0) -> tuple[float, float, float, bool]:
    """Mean of an arm's per-seed statistic, its t-interval clipped to what the quantity can be
    (``bounds``), and whether it was clipped. NaN interval below ``MIN_SEEDS``."""
    x = x[np.isfinite(x)]
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < MIN_SEEDS:
        return mean, math.nan, math.nan, False
    # the interval of a mean: one rounded accuracy per seed, not two, so half a difference's rounding variance
    d = paired_difference(x, confidence, resolution / math.sqrt(2))
    lo, hi = max(d.lo, bounds[0]), min(d.hi, bounds[1])
    return mean, lo, hi, (lo, hi) != (d.lo, d.hi)


def _share(num: np.ndarray, den: np.ndarray, resolution: float) -> dict:
    r = ratio_interval(num, den, CONFIDENCE, resolution)
    return {"ratio": r.ratio, "lo": r.lo, "hi": r.hi, "bounded": r.bounded}


def reading(edge: Difference, share: dict, alpha: float = ALPHA) -> str:
    """Which part carries lpwd's difference from pwd, in words the intervals allow: ``no edge`` (its
    interval spans 0), ``mostly decay mass`` / ``mostly layer shape`` (the share's whole interval
    above / below ``MOSTLY``), ``both`` (the whole interval strictly between 0 and 1: each carries a
    part), else ``unclear`` (an interval too wide to apportion)."""
    if not (math.isfinite(edge.p) and edge.p < alpha) or not share["bounded"]:
        return "no edge"
    if share["lo"] >= MOSTLY:
        return "mostly decay mass"
    if share["hi"] <= MOSTLY:
        return "mostly layer shape"
    return "both" if 0 < share["lo"] and share["hi"] < 1 else "unclear"


def decompose(per_seed_stats: dict[str, np.ndarray], g: SeedGrids, arms: list[str], lrs: list[float],
              primary: dict[str, str], alpha: float = ALPHA, resolution: float = 0.0) -> dict | None:
    """lpwd − wd as placement + decay mass + layer shape, on the seeds all four arms completed.

    ``claims``: per question, on its primary claim, each part's paired difference and the share of
    lpwd's edge over pwd that decay mass explains (Fieller's interval; ``bounded`` False when the
    edge is not clearly away from 0, and then no share is stated).

    ``cells``: the same split of test accuracy cell by cell, for every λ > 0 and η (``per_lr``) and
    averaged over η (``parts``), each with its paired interval (uncorrected: the decomposition
    describes, the verdict's answers decide); and per λ the mass share and its ``reading``. The
    split holds exactly in every cell, and the share moves with λ, so it is drawn as curves.
    """
    needed = {"wd", "pwd", "lpwd", MASS_ARM}
    if not needed <= set(arms):
        return None
    idx = {a: arms.index(a) for a in needed}
    seeds = paired_seeds(np.stack([per_seed_stats[n] for n in primary.values()]).min(axis=0), list(idx.values()))
    if not len(seeds):
        return None

    def diff(stat, x, y):
        return paired(stat[idx[x]] - stat[idx[y]], resolution=resolution)

    claims = {}
    for question, name in primary.items():
        stat = per_seed_stats[name][:, seeds]
        parts = {part: diff(stat, *pair) for part, pair in DECOMPOSITION.items()}
        edge = diff(stat, "lpwd", "pwd")
        share = _share(stat[idx[MASS_ARM]] - stat[idx["pwd"]], stat[idx["lpwd"]] - stat[idx["pwd"]], resolution)
        claims[question] = {"claim": name, "seeds": len(seeds), "total": asdict(diff(stat, "lpwd", "wd")),
                            "parts": {k: asdict(v) for k, v in parts.items()}, "edge_over_pwd": asdict(edge),
                            "mass_share": share, "reading": reading(edge, share, alpha)}
    decaying = g.decaying
    test = g.test[:, seeds][..., decaying]  # [arm, seed, lr, λ > 0]
    by_lambda = test.mean(axis=2)  # [arm, seed, λ]: the η-mean accuracy at each λ
    I, J = test.shape[2:]

    def split(x: np.ndarray) -> dict:
        """{part: Difference} of lpwd − wd's parts on per-seed values x [arm, seed]."""
        return {"total": diff(x, "lpwd", "wd"), **{part: diff(x, *pair) for part, pair in DECOMPOSITION.items()},
                "edge over pwd": diff(x, "lpwd", "pwd")}

    per_lambda = [split(by_lambda[..., j]) for j in range(J)]
    shares = [_share(by_lambda[idx[MASS_ARM], :, j] - by_lambda[idx["pwd"], :, j],
                     by_lambda[idx["lpwd"], :, j] - by_lambda[idx["pwd"], :, j], resolution) for j in range(J)]
    per_cell = [[split(test[..., i, j]) for j in range(J)] for i in range(I)]
    names = list(per_lambda[0])

    def table(rows) -> dict:
        return {part: {k: [getattr(r[part], k) for r in rows] for k in ("diff", "lo", "hi", "p")} for part in names}

    cells = {"lambdas": [float(w) for w in g.wds[decaying]], "lrs": [float(x) for x in lrs], "seeds": len(seeds),
             "parts": table(per_lambda),
             "per_lr": [table(row) for row in per_cell],
             "mass_share": {k: [s[k] for s in shares] for k in ("ratio", "lo", "hi", "bounded")},
             "reading": [reading(per_lambda[j]["edge over pwd"], shares[j], alpha) for j in range(J)]}
    return {"claims": claims, "cells": cells}


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


def best_of_k_band(g: Grid, arm: str, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An arm's expected best-of-k curve, one per seed (each seed's grid is one replicate of the
    tuning), as their mean and t-band; at k = every cell it is the ``best`` claim's
    tuned accuracy. NaN band below ``MIN_SEEDS`` complete seeds."""
    a = g.arms.index(arm)
    curves = [expected_best_of_k(g.val[a, ..., s].ravel(), g.test[a, ..., s].ravel())
              for s in range(len(g.seeds)) if np.isfinite(g.test[a, ..., s]).all()]
    if not curves:
        return np.array([]), np.array([]), np.array([])
    c = np.array(curves)
    point = c.mean(axis=0)
    if len(c) < MIN_SEEDS:
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    half = stats.t.ppf(0.5 + confidence / 2, len(c) - 1) * stats.sem(c, axis=0)
    return point, point - half, point + half


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
    return arm_cells[arm_cells["val"] >= arm_cells["val"].max() - TIE]


def bookkeeping(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm: planned, finished, errored and unfinished trials, from every row of the table."""
    t = table.assign(arm=arm_of(table))
    status = t["status"] if "status" in t else pd.Series("TERMINATED", index=t.index)
    return pd.DataFrame({
        "planned_trials": t.groupby("arm", sort=False).size(),
        "finished_trials": (status == "TERMINATED").groupby(t["arm"], sort=False).sum(),
        "errored_trials": (status == "ERROR").groupby(t["arm"], sort=False).sum(),
    }).assign(unfinished_trials=lambda d: d["planned_trials"] - d["finished_trials"] - d["errored_trials"])


def claim_step(claim: Claim, g: Grid, lambdas: np.ndarray) -> float:
    """The smallest step a claim's per-seed value moves by, in its own unit: one test image for a claim
    in points, one cell of the λ > 0 grid for a share of cells, the grid's smallest step of λ for decades."""
    if claim.unit == "pt":
        return g.resolution
    if claim.unit == "share":
        return 1.0 / (len(lambdas) * len(g.lrs)) if len(lambdas) else 0.0
    logs = np.log10(np.sort(lambdas))
    return float(np.diff(logs).min()) if len(logs) > 1 else 0.0


def summarize(table: pd.DataFrame, metric: str = "test_acc_at_best_val", baseline: str = "wd",
              test: str = "t", correction: str = "holm", alpha: float = ALPHA, effective_decay: dict | None = None,
              arms: list[str] | None = None, primary: dict[str, str] | None = None,
              family: list[str] | None = None, looks: list[int] | None = None,
              min_effect: float | None = None, spending: str = "pocock", curtail: bool = True) -> pd.DataFrame:
    """One row per arm: descriptive numbers, every claim with its interval, and the paired
    comparison with the baseline; the primary claims' answers (Holm across the family per question).

    ``effective_decay``: {arm: lambda_eff / lambda} (recorded when the study is planned,
    see ``study.run.plan``), reported as given. ``primary``: {question: claim name}. ``family``: the
    arms whose answers are the verdict (``verdict.arms``; default every arm but the baseline and
    the controls); Holm's correction runs over them alone, and every other arm is a ``control``.
    """
    primary = {**PRIMARY_DEFAULT, **(primary or {})}
    df = scored(table, metric)
    g = grid(df, arms)
    by_seed = seed_grids(g)
    stat = per_seed(by_seed)
    shared = per_seed_shared(by_seed)
    books = bookkeeping(table)
    c = cells(df)
    b = g.arms.index(baseline) if baseline in g.arms else None
    family = [a for a in (family if family is not None else contenders(g.arms, baseline)) if a in g.arms]
    lambdas = np.asarray([w for w in g.wds if w > 0], float)
    undefined = {k: why for k, claim in CLAIMS.items() if (why := claim.undefined(lambdas))}
    steps = {k: claim_step(claim, g, lambdas) for k, claim in CLAIMS.items()}
    per_cell = compare_cells(g, baseline, test, correction, alpha) if b is not None else None
    rows = []
    for a, arm in enumerate(g.arms):
        mine = c[c["arm"] == arm]
        top = best_cells(mine)
        decaying = mine[mine["weight_decay"] > 0]
        worst_cell = decaying.loc[decaying["mean"].idxmin()] if len(decaying) else None
        row = {
            "arm": arm,
            "cells": len(mine), "cells_planned": g.shape[1] * g.shape[2],
            "seeds_per_cell": int(mine["n"].min()) if len(mine) else 0,
            **(books.loc[arm].to_dict() if arm in books.index else {}),
            "effective_decay": (effective_decay or {}).get(arm, float("nan")),
            "best_lr": top["lr"].iloc[0] if len(top) else float("nan"),
            "best_weight_decay": top["weight_decay"].iloc[0] if len(top) else float("nan"),
            "best_tied_cells": len(top), "best_val": top["val"].mean() if len(top) else float("nan"),
            "best_cell_test": top["mean"].mean() if len(top) else float("nan"),
            "best_sd": top["sd"].mean() if len(top) else float("nan"),
            "worst_lr": worst_cell["lr"] if worst_cell is not None else float("nan"),
            "worst_weight_decay": worst_cell["weight_decay"] if worst_cell is not None else float("nan"),
            "diverged_cells": int((mine["diverged"] > 0).sum()),
            "sign_flip_cells": int((mine["lr"] * mine["weight_decay"] >= 1).sum()),
        }
        for k, claim in CLAIMS.items():
            row[k], row[f"{k}_lo"], row[f"{k}_hi"], row[f"{k}_clipped"] = own_interval(
                stat[k][a], bounds=claim.bounds(lambdas), resolution=steps[k])
            if b is not None and a != b:
                d, seeds = compare(stat[k], a, b, resolution=steps[k])
                if k in undefined:
                    d = replace(d, lo=math.nan, hi=math.nan, p=math.nan, se=math.nan)
                count = seeds_off_together(shared.get(k), a, b, seeds)
                off = off_on_every_seed(count, seeds)
                if off:  # the p-value (1: every difference is 0) stays in Holm's family; no interval
                    d = replace(d, lo=math.nan, hi=math.nan, se=math.nan)
                row.update({f"shared_{k}": off, f"shared_seeds_{k}": count, f"diff_{k}": d.diff, f"diff_{k}_lo": d.lo, f"diff_{k}_hi": d.hi,
                            f"p_{k}": d.p,
                            f"n_{k}": d.n, f"se_{k}": d.se,
                            f"{k}_paired": float(stat[k][a, seeds].mean()) if len(seeds) else float("nan"),
                            f"{k}_baseline_paired": float(stat[k][b, seeds].mean()) if len(seeds) else float("nan")})
                if k == primary["better"]:
                    row["dropped_seeds"] = [int(x) for i, x in enumerate(g.seeds) if i not in set(seeds)]
        if per_cell is not None and a != b:
            mine_cmp = per_cell[per_cell["arm"] == arm]
            tested = mine_cmp["p"].notna()
            row.update({"cells_compared": len(mine_cmp), "cells_tested": int(tested.sum()),
                        "sig_better": int((mine_cmp["significant"] & (mine_cmp["diff"] > 0)).sum()),
                        "sig_worse": int((mine_cmp["significant"] & (mine_cmp["diff"] < 0)).sum())})
        rows.append(row)
    out = pd.DataFrame(rows)
    if b is not None and len(g.arms) > 1:
        members = out["arm"].isin(family)
        for question, name in primary.items():  # one family per question: Holm across the declared arms
            p = out.loc[members, f"p_{name}"].to_numpy(dtype=float)
            out[f"p_adj_{question}"] = np.nan
            if members.any():
                out.loc[members, f"p_adj_{question}"] = adjust(p, "holm")
            out[f"answer_{question}"] = [
                "" if r["arm"] == baseline else CONTROL if r["arm"] not in family else
                "cannot be shown" if r[f"shared_{name}"] else
                answer(CLAIMS[name], r[f"diff_{name}"], int(r[f"n_{name}"]), r[f"p_adj_{question}"], alpha)
                for _, r in out.iterrows()]
    done = looks_done(looks, stat, g, b, family, primary) if looks and b is not None else None
    if done:
        sequential_answers(out, stat, shared, g, b, family,
                           {q: n for q, n in primary.items() if n not in undefined}, looks, done, alpha, min_effect,
                           steps, spending, curtail)
    out.attrs.update({"metric": metric, "selected_by": SELECTED_BY[metric], "baseline": baseline, "test": test,
                      "correction": correction, "alpha": alpha, "confidence": CONFIDENCE, "min_seeds": MIN_SEEDS,
                      "seeds": len(g.seeds), "primary": primary, "cells_per_arm": g.shape[1] * g.shape[2],
                      "decaying_cells": int(np.sum(np.asarray(g.wds) > 0)) * g.shape[1], "family": family,
                      "resolution": g.resolution, "undefined": undefined,
                      "decomposition": decompose(stat, by_seed, g.arms, g.lrs, primary, alpha, g.resolution),
                      "looks": list(looks) if looks else None, "min_effect": min_effect,
                      "spending": spending if looks else None,
                      "looks_done": done})
    return out


def looks_done(looks: list[int], stat: dict, g: Grid, b: int, family: list[str], primary: dict) -> int:
    """How many of a plan's looks the study has reached: a look counts once every one of its seeds has
    a complete grid for the baseline and every arm of the family on each primary claim (a wave still
    training is no look yet)."""
    idx = [b] + [g.arms.index(a) for a in family]
    complete = set.intersection(*(set(paired_seeds(stat[name], idx).tolist()) for name in primary.values()))
    return sum(1 for n in looks if set(range(n)) <= complete)


def sequential_answers(out: pd.DataFrame, stat: dict, shared: dict, g: Grid, b: int, family: list[str],
                       primary: dict, looks: list[int], done: int, alpha: float, min_effect: float | None, steps: dict,
                       spending: str, curtail: bool) -> None:
    """Each family arm's primary answers decided over the first ``done`` of the plan's ``looks``
    (``sequential``), written into ``out``: the answer, the look and seeds that decided it and why
    (``stop_*``), and the primary claim's difference and repeated confidence interval at that look, so
    every word has its number."""
    for question, name in primary.items():
        history, used, off, count = {}, {}, {}, {}
        for arm in family:
            a = g.arms.index(arm)
            history[arm] = []
            for n in looks[:done]:
                d, used[arm, n] = compare(stat[name][:, :n], a, b, resolution=steps[name])
                count[arm, n] = seeds_off_together(shared.get(name), a, b, used[arm, n])
                off[arm, n] = off_on_every_seed(count[arm, n], used[arm, n])
                # tuned off together: no spread to bound the difference by, so no interval and no futility;
                # the look stays open and the next wave may show a seed on which they part
                history[arm].append(Look(n, d.diff, math.nan if off[arm, n] else d.se, d.p, d.n))
        decisions = decide(history, looks, alpha, min_effect, spending, curtail)
        for arm, dec in decisions.items():
            i = out.index[out["arm"] == arm][0]
            a, both = g.arms.index(arm), used[arm, dec.seeds]
            ans = out.at[i, f"answer_{question}"]
            if off[arm, dec.seeds]:
                ans = "cannot be shown"
            elif ans != "cannot be shown":
                ans = ("ruled out" if dec.outcome == "futile" else "not shown" if dec.outcome in ("open", "stalled")
                       else "shown" if dec.diff * CLAIMS[name].better_sign() > 0 else "shown worse")
            values = {f"answer_{question}": ans, f"shared_{name}": off[arm, dec.seeds],
                      f"shared_seeds_{name}": count[arm, dec.seeds],
                      f"look_{question}": dec.look,
                      f"seeds_{question}": dec.seeds,
                      f"stop_{question}": dec.outcome, f"level_{question}": dec.level, f"p_adj_{question}": math.nan,
                      f"diff_{name}": dec.diff, f"diff_{name}_lo": dec.lo, f"diff_{name}_hi": dec.hi,
                      f"p_{name}": dec.p, f"n_{name}": len(both), f"se_{name}": dec.se,
                      f"{name}_paired": float(stat[name][a, both].mean()) if len(both) else math.nan,
                      f"{name}_baseline_paired": float(stat[name][b, both].mean()) if len(both) else math.nan}
            for column, v in values.items():
                if column not in out:
                    out[column] = None if isinstance(v, str) else math.nan
                out.at[i, column] = v


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
