"""The verdict's error rates, measured through the report's own code (``study.calibration``).

A smaller, seeded version of ``benchmarks/calibration.py``: simulated studies shaped like
the quick study go through ``analysis.summarize``. It fails if any claim's false-positive
rate is above α = 5% beyond its sampling error (a one-sided binomial test at 0.1%), if
"more robust" fires under a uniform level shift, or if a primary claim's 95% interval
covers the truth less than 93% of the time.
"""

from __future__ import annotations

import pytest
from scipy import stats

from study.calibration import measure
from study.claims import CLAIMS, PRIMARY_DEFAULT
from study.simulate import SCENARIOS

REPLICATES = 200
ALPHA = 0.05


def too_many(rate: float, replicates: int = REPLICATES) -> bool:
    """A rate whose count is improbable (p < 0.001) if the true rate were α."""
    return stats.binomtest(round(rate * replicates), replicates, ALPHA, alternative="greater").pvalue < 0.001


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
