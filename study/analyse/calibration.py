"""Each claim's error rate, measured: simulated studies through the report's own ``summarize``.

For a scenario and a seed count, ``measure`` simulates ``replicates`` studies
(``study.analyse.simulate``), summarises each exactly as ``study report`` does, and counts:

* per claim, how often arm − baseline was called different (its p-value below α):
  the false-positive rate where the arms are identical, the power where they differ;
* per claim, how often its interval covered the true difference (estimated once
  from a simulation with many seeds);
* per primary question, how often the verdict answered "shown" or "shown worse" for
  any arm (Holm across arms): the family's error rate with several identical arms;
* how often any cell of the per-cell maps was starred (one correction over all arms).

``measure_pooling`` does the same for the sentences ``study compare`` writes: several
settings, each a simulated study through ``summarize`` and ``report.answers_json``, pooled
by ``compare.compare`` itself; it counts the pooled answers, the heterogeneity test, I² ≥
50%, the coverage of the pooled interval and of the prediction interval (a new setting's
true effect drawn from the settings'), and the settings counted "shown".

``measure_decomposition`` puts four-arm studies through ``summarize`` and counts how
often a mass share is printed and how often its interval covers the true share.

``benchmarks/calibration.py`` prints the full tables; the test suite runs a smaller
seeded version and fails if a claim's false-positive rate is above α beyond its
sampling error, or a primary claim's coverage is below 93%.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .analysis import ALPHA, summarize
from ..define.claims import CLAIMS, PRIMARY_DEFAULT, QUESTIONS, SeedGrids, per_seed
from .simulate import DECAY_HURTS, SCENARIOS, Scenario, Shape, simulate, simulate_arrays

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


# settings to pool: 7 like the suite's, all null; a true robustness effect in 2 of them only; in all 7 alike;
# and 2 of 7 where decay only hurts, so both arms tune it off (``compare`` leaves them out of "better?"),
# beside 5 null settings or 5 where the arm is better by 2 points on every λ > 0 cell. A setting is a scenario, or a
# (scenario, shape) pair.
POOLING = {
    "7 null": (SCENARIOS["null"],) * 7,
    "2 of 7 robust": (SCENARIOS["null"],) * 5 + (Scenario("robust", recover=0.3),) * 2,
    "7 robust": (SCENARIOS["robust"],) * 7,
    "5 null, 2 tuned off": (SCENARIOS["null"],) * 5 + ((SCENARIOS["null"], DECAY_HURTS),) * 2,
    "5 better, 2 tuned off": (Scenario("better", level=2.0),) * 5 + ((Scenario("better", level=2.0), DECAY_HURTS),) * 2,
}


@dataclass
class PoolingRates:
    scenario: str
    seeds: int
    replicates: int
    shown: dict = field(default_factory=dict)  # question -> pooled answer shown or shown worse
    covered: dict = field(default_factory=dict)  # question -> pooled interval covers the settings' mean truth
    heterogeneity: dict = field(default_factory=dict)  # question -> bootstrap test rejects homogeneity
    i2_half: dict = field(default_factory=dict)  # question -> I² ≥ 50%
    predicted: dict = field(default_factory=dict)  # question -> prediction interval covers a new setting's truth
    any_setting: dict = field(default_factory=dict)  # question -> at least one setting answered shown/shown worse


def _answers(study, name: str):
    from .compare import Setting
    from .answers import answers_json
    from .verdict import verdict_parts

    s = summarize(study, arms=["wd", "lpwd"])
    context = {"dataset": "digits", "model": "small_cnn", "start": "from scratch", "base": "adam", "epochs": 10,
               "seeds": int(study["seed"].nunique())}
    return Setting(name, name, context, answers_json(s, verdict_parts(s)), None)


def measure_pooling(name: str, seeds: int, replicates: int, seed: int = 0) -> PoolingRates:
    """Pooled answers over the settings of ``POOLING[name]``, each simulated and analysed as a study."""
    from .compare import compare

    settings = [spec if isinstance(spec, tuple) else (spec, Shape()) for spec in POOLING[name]]
    rng = np.random.default_rng([seed, seeds, zlib.crc32(name.encode())])
    truths = [true_differences(sc, shape) for sc, shape in settings]
    counts = {k: {q: 0 for q in QUESTIONS} for k in ("shown", "covered", "heterogeneity", "i2_half", "predicted",
                                                     "any_setting")}
    for _ in range(replicates):
        studies = [_answers(simulate(sc, seeds, rng, shape), f"setting{i}") for i, (sc, shape) in enumerate(settings)]
        result = compare(studies)
        for q, claim in PRIMARY_DEFAULT.items():
            p = result["pooled"]["lpwd"][q]
            # the pool speaks for the settings it pooled: its interval and a new setting are theirs
            truth = [t[claim] for t, s in zip(truths, studies) if s.name not in p["left_out"]]
            new = truth[rng.integers(len(truth))]
            counts["shown"][q] += p["answer"] in ("shown", "shown worse")
            counts["covered"][q] += bool(p["lo"] <= np.mean(truth) <= p["hi"])
            counts["heterogeneity"][q] += bool(p["p_heterogeneity"] < ALPHA)
            counts["i2_half"][q] += bool(p["i2"] >= 0.5)
            counts["predicted"][q] += bool(p["pred_lo"] <= new <= p["pred_hi"])
            by = p["settings_by_answer"]
            counts["any_setting"][q] += bool(by["shown"] or by["shown worse"])
    return PoolingRates(name, seeds, replicates, **{k: {q: v / replicates for q, v in c.items()}
                                                     for k, c in counts.items()})


@dataclass
class ShareRates:
    scenario: str
    seeds: int
    replicates: int
    truth: float | None  # the true share of lpwd's edge over pwd that is decay mass (None: 0/0, any value)
    printed: float = 0.0  # a share was stated (its Fieller interval bounded)
    covered: float = float("nan")  # of the stated shares, those whose interval covers the truth


def measure_decomposition(scenario: Scenario, truth: float | None, seeds: int, replicates: int,
                          seed: int = 0) -> ShareRates:
    """How often the λ-regret mass share is stated, and how often its interval covers ``truth``
    (with identical arms every value is true: the share is 0/0; counted as covered)."""
    rng = np.random.default_rng([seed, seeds, zlib.crc32(scenario.name.encode())])
    printed = covered = 0
    for _ in range(replicates):
        d = summarize(simulate(scenario, seeds, rng), arms=list(scenario.arms)).attrs["decomposition"]
        share = d["claims"]["more_robust"]["mass_share"]
        if share["bounded"]:
            printed += 1
            covered += truth is None or share["lo"] - 1e-9 <= truth <= share["hi"] + 1e-9
    return ShareRates(scenario.name, seeds, replicates, truth, printed / replicates,
                      covered / printed if printed else float("nan"))


@dataclass
class DesignRates:
    scenario: str
    looks: tuple  # the seed counts looked at; one value is a fixed design
    replicates: int
    min_effect: float | None
    spending: str
    answered: dict = field(default_factory=dict)  # question -> rate of "shown"/"shown worse" (first treated arm)
    family: dict = field(default_factory=dict)  # question -> rate of any arm "shown"/"shown worse"
    covered: dict = field(default_factory=dict)  # question -> the reported interval covers the truth
    decided: dict = field(default_factory=dict)  # question -> shown, shown worse or ruled out
    trials: float = 0.0  # mean trials trained per study
    seeds: float = 0.0  # mean seeds at the stop


def trials_per_seed(shape: Shape, arms: int) -> int:
    """Trials a grid trains per seed: λ = 0 once per η, every other cell once per arm."""
    zero = sum(1 for w in shape.wds if w == 0)
    return len(shape.lrs) * (zero + (len(shape.wds) - zero) * arms)


def measure_design(scenario: Scenario, looks: tuple, replicates: int, min_effect: float | None = None,
                   seed: int = 0, shape: Shape = Shape(), alpha: float = ALPHA,
                   spending: str = "pocock") -> DesignRates:
    """A sequential seed plan (``looks``: the seed counts of its looks) run on simulated studies through
    ``summarize(looks=...)``, the report's own path: each study is simulated at the plan's largest seed
    count and analysed on its first seeds look by look, stopping at the first look that decides every
    question of every arm. One look is the fixed design, through the same code."""
    rng = np.random.default_rng([seed, looks[-1], len(looks), zlib.crc32(scenario.name.encode())])
    truth = true_differences(scenario, shape)
    arm = scenario.arms[1]
    counts = {k: {q: 0 for q in PRIMARY_DEFAULT} for k in ("answered", "family", "covered", "decided")}
    trials = seeds_used = 0
    per_seed = trials_per_seed(shape, len(scenario.arms))
    for _ in range(replicates):
        table = simulate(scenario, looks[-1], rng, shape)
        for n in looks:
            s = summarize(table[table["seed"] < n], arms=list(scenario.arms), alpha=alpha, looks=list(looks),
                          min_effect=min_effect, spending=spending)
            rows = s.set_index("arm").drop(index=scenario.arms[0])
            if all((rows[f"stop_{q}"] != "open").all() for q in PRIMARY_DEFAULT):  # decided or stalled
                break
        trials += per_seed * n
        seeds_used += n
        r = rows.loc[arm]
        for q, claim in PRIMARY_DEFAULT.items():
            counts["answered"][q] += r[f"answer_{q}"] in ("shown", "shown worse")
            counts["family"][q] += bool(rows[f"answer_{q}"].isin(["shown", "shown worse"]).any())
            counts["covered"][q] += bool(r[f"diff_{claim}_lo"] - 1e-9 <= truth[claim] <= r[f"diff_{claim}_hi"] + 1e-9)
            counts["decided"][q] += r[f"answer_{q}"] in ("shown", "shown worse", "ruled out")
    n = replicates
    return DesignRates(scenario.name, tuple(looks), n, min_effect, spending,
                       **{k: {q: v / n for q, v in c.items()} for k, c in counts.items()},
                       trials=trials / n, seeds=seeds_used / n)
