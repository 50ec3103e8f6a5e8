"""Each claim's error rate, measured: simulated studies through the report's own ``summarize``.

For a scenario and a seed count, ``measure`` simulates ``replicates`` studies
(``study.simulate``), summarises each exactly as ``study report`` does, and counts:

* per claim, how often arm − baseline was called different (its p-value below α):
  the false-positive rate where the arms are identical, the power where they differ;
* per claim, how often its interval covered the true difference (estimated once
  from a simulation with many seeds);
* per primary question, how often the verdict answered "shown" or "shown worse" for
  any arm (Holm across arms): the family's error rate with several identical arms;
* how often any cell of the per-cell maps was starred (one correction over all arms).

``benchmarks/calibration.py`` prints the full table; the test suite runs a smaller
seeded version and fails if a claim's false-positive rate is above α beyond its
sampling error, or a primary claim's coverage is below 93%.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .analysis import ALPHA, summarize
from .claims import CLAIMS, PRIMARY_DEFAULT, SeedGrids, per_seed
from .simulate import SCENARIOS, Scenario, Shape, simulate, simulate_arrays

SEEDS = (3, 5, 10)
TRUTH_SEEDS = 20000


@dataclass
class Rates:
    scenario: str
    seeds: int
    replicates: int
    called: dict = field(default_factory=dict)  # claim -> rate of p < alpha (first treated arm vs baseline)
    covered: dict = field(default_factory=dict)  # claim -> coverage of the true difference
    answered: dict = field(default_factory=dict)  # question -> rate of any arm "shown"/"shown worse"
    any_cell: float = 0.0  # rate of any starred cell
    truth: dict = field(default_factory=dict)


_truths: dict = {}


def true_differences(scenario: Scenario, shape: Shape = Shape()) -> dict[str, float]:
    """E[arm − baseline] of every claim's per-seed statistic, from one study with many seeds
    (exactly 0 where the arms are identical: the simulation's own error would only blur it)."""
    if scenario.level == 0 and scenario.recover == 0:
        return {k: 0.0 for k in CLAIMS}
    if scenario.recover == 0:  # a level shift: the shape claims' truth is exactly 0, as the shape is the same
        shape_claims = {k: 0.0 for k, c in CLAIMS.items() if c.question == "more_robust"}
    else:
        shape_claims = {}
    key = (scenario, id(shape))
    if key not in _truths:
        val, test = simulate_arrays(scenario, TRUTH_SEEDS, np.random.default_rng(12345), shape)
        as_claims = [np.moveaxis(100 * x, 3, 1) for x in (val, test)]  # [arm, seed, lr, λ], points
        stat = per_seed(SeedGrids(*as_claims, np.asarray(shape.wds, float)))
        _truths[key] = {k: float(np.nanmean(v[1] - v[0])) for k, v in stat.items()} | shape_claims
    return _truths[key]


def measure(scenario: Scenario, seeds: int, replicates: int, seed: int = 0, shape: Shape = Shape(),
            alpha: float = ALPHA) -> Rates:
    # crc32, not hash(): Python salts str hashes per process, and a seeded run must repeat exactly
    rng = np.random.default_rng([seed, seeds, zlib.crc32(scenario.name.encode())])
    truth = true_differences(scenario, shape)
    arm = scenario.arms[1]
    called = {k: 0 for k in CLAIMS}
    covered = {k: 0 for k in CLAIMS}
    answered = {q: 0 for q in PRIMARY_DEFAULT}
    any_cell = 0
    for _ in range(replicates):
        s = summarize(simulate(scenario, seeds, rng, shape), arms=list(scenario.arms), alpha=alpha)
        rows = s.set_index("arm")
        r = rows.loc[arm]
        for k in CLAIMS:
            called[k] += bool(r[f"p_{k}"] < alpha)
            covered[k] += bool(r[f"diff_{k}_lo"] - 1e-9 <= truth[k] <= r[f"diff_{k}_hi"] + 1e-9)
        others = rows.drop(index=scenario.arms[0])
        for q in PRIMARY_DEFAULT:
            answered[q] += bool(others[f"answer_{q}"].isin(["shown", "shown worse"]).any())
        any_cell += bool((others["sig_better"] + others["sig_worse"]).sum() > 0)
    n = replicates
    return Rates(scenario.name, seeds, n, {k: v / n for k, v in called.items()},
                 {k: v / n for k, v in covered.items()}, {q: v / n for q, v in answered.items()}, any_cell / n, truth)


def calibrate(replicates: int, seeds=SEEDS, scenarios=tuple(SCENARIOS), seed: int = 0) -> list[Rates]:
    return [measure(SCENARIOS[name], n, replicates, seed) for name in scenarios for n in seeds]
