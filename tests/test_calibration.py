"""The verdict's error rates, measured through the report's own code (``study.analyse.calibration``).

A smaller, seeded version of ``benchmarks/calibration.py``: simulated studies shaped like
the quick study go through ``analysis.summarize``. It fails if any claim's false-positive
rate is above α = 5% beyond its sampling error (a one-sided binomial test at 0.1%), with
clean data or ugly (ties, a ceiling, collapses to chance, noise growing with λ), if "more
robust" fires under a uniform level shift, or if a primary claim's 95% interval covers the
truth less than 93% of the time. The pooled sentences of ``study compare`` are held to the
same: the heterogeneity test and I² ≥ 50% under homogeneity, the prediction interval's
coverage; and the decay-mass share is rarely stated between identical arms and covers
its truth when it is.
"""

from __future__ import annotations

import pytest
from scipy import stats

from study.analyse.calibration import measure, measure_decomposition, measure_pooling
from study.define.claims import CLAIMS, PRIMARY_DEFAULT
from study.analyse.simulate import DECOMPOSITION_SCENARIOS, SCENARIOS, SHAPES

REPLICATES = 200
ALPHA = 0.05


def too_many(rate: float, replicates: int = REPLICATES, level: float = ALPHA) -> bool:
    """A rate whose count is improbable (p < 0.001) if the true rate were ``level``."""
    return stats.binomtest(round(rate * replicates), replicates, level, alternative="greater").pvalue < 0.001


def too_few(rate: float, replicates: int, level: float = 0.95) -> bool:
    """A coverage whose count is improbable (p < 0.001) if the true coverage were ``level``."""
    return stats.binomtest(round(rate * replicates), replicates, level, alternative="less").pvalue < 0.001


@pytest.fixture(scope="module")
def null():
    return {n: measure(SCENARIOS["null"], n, REPLICATES, seed=1) for n in (3, 5, 10)}


@pytest.fixture(scope="module")
def level():
    return {n: measure(SCENARIOS["level"], n, REPLICATES, seed=1) for n in (3, 5, 10)}


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_no_claim_fires_between_identical_arms_more_than_alpha(null, seeds):
    r = null[seeds]
    for name in CLAIMS:
        assert not too_many(r.called[name]), (name, r.called[name])
    for question, rate in r.answered.items():
        assert not too_many(rate), (question, rate)
    assert not too_many(r.any_cell), r.any_cell


def test_the_family_of_four_identical_arms_keeps_alpha():
    for seeds in (3, 10):
        r = measure(SCENARIOS["null4"], seeds, 100, seed=1)
        for question, rate in r.answered.items():
            assert not too_many(rate, 100), (seeds, question, rate)
        assert not too_many(r.any_cell, 100), r.any_cell


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_a_uniform_level_shift_is_never_more_robust(level, seeds):
    r = level[seeds]
    for name, claim in CLAIMS.items():
        if claim.question == "more_robust":
            assert not too_many(r.called[name]), (name, r.called[name])
    assert not too_many(r.answered["more_robust"])


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_primary_intervals_cover_the_truth(null, level, seeds):
    for name in PRIMARY_DEFAULT.values():
        coverage = (null[seeds].covered[name] + level[seeds].covered[name]) / 2
        assert coverage >= 0.93, (name, seeds, coverage)


def test_a_real_robustness_effect_is_found_with_ten_seeds():
    """The calibration also measures power: the robustness scenario is found at least half the time."""
    r = measure(SCENARIOS["robust"], 10, 100, seed=1)
    assert r.answered["more_robust"] > 0.5 and r.called["lambda_regret"] > 0.5


@pytest.mark.parametrize("shape", ["small_val", "ceiling", "collapse", "heteroscedastic"])
def test_ugly_data_keeps_alpha(shape):
    """Ties from 30 validation images, half the trials at 100%, 30% of the largest-η·λ trials collapsed to
    chance, noise growing from 0.5 to 6 points with λ: identical arms are still told apart at most α."""
    r = measure(SCENARIOS["null"], 5, 100, seed=1, shape=SHAPES[shape])
    for name in PRIMARY_DEFAULT.values():
        assert not too_many(r.called[name], 100), (shape, name, r.called[name])
    for question, rate in r.answered.items():
        assert not too_many(rate, 100), (shape, question, rate)


@pytest.fixture(scope="module")
def homogeneous():
    return measure_pooling("7 null", 5, 60, seed=1)


def test_pooling_seven_homogeneous_settings_keeps_every_sentence_at_alpha(homogeneous):
    """7 identical null settings, 5 seeds each: the pooled answer, the heterogeneity test (each study's
    standard error estimated on 4 degrees of freedom) and 'I² ≥ 50%' (6% with known standard errors:
    P(χ²_6 ≥ 12)) keep their levels, and the intervals cover."""
    r = homogeneous
    for question in PRIMARY_DEFAULT:
        assert not too_many(r.shown[question], 60), (question, r.shown)
        assert not too_many(r.heterogeneity[question], 60), (question, r.heterogeneity)
        assert not too_many(r.i2_half[question], 60, level=0.062), (question, r.i2_half)
        assert not too_few(r.covered[question], 60), (question, r.covered)
        assert not too_few(r.predicted[question], 60), (question, r.predicted)


def test_an_effect_in_two_of_seven_settings_is_heterogeneity_and_the_prediction_interval_covers_it():
    r = measure_pooling("2 of 7 robust", 5, 40, seed=1)
    assert r.heterogeneity["more_robust"] > 0.8
    assert not too_few(r.predicted["more_robust"], 40), r.predicted


def test_settings_where_both_arms_tune_decay_off_leave_the_better_pool_without_hiding_an_effect():
    """2 of 7 settings where decay only hurts: both arms tune to the shared λ = 0 trial on every seed. Left
    out of "better?", they neither make the pool falsely confident (5 null settings beside them: level and
    coverage kept) nor swamp a real effect in the other 5: weighted by the one-image floor instead, they
    pull the pooled estimate to 0 and a 2-point level effect is shown in 12.5% of these replicates (35%
    left out; 15.5% against 33.5% over 200 in benchmarks/calibration.py)."""
    null = measure_pooling("5 null, 2 tuned off", 5, 60, seed=1)
    assert not too_many(null.shown["better"], 60) and not too_few(null.covered["better"], 60), null
    better = measure_pooling("5 better, 2 tuned off", 5, 40, seed=1)
    assert better.shown["better"] >= 0.25 and not too_few(better.covered["better"], 40), better


def test_the_mass_share_is_rarely_stated_between_identical_arms_and_covers_its_truth():
    identical = measure_decomposition(DECOMPOSITION_SCENARIOS["identical"], None, 5, 100, seed=1)
    assert not too_many(identical.printed, 100), identical
    for name, truth in (("all mass", 1.0), ("all shape", 0.0)):
        r = measure_decomposition(DECOMPOSITION_SCENARIOS[name], truth, 5, 40, seed=1)
        assert r.printed > 0.9 and not too_few(r.covered, round(r.printed * 40)), r
