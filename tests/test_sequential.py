"""A sequential seed plan's statistics (``study.analyse.sequential``): the boundaries against gsDesign's
published values, Holm across arms look by look, futility, the one-look plan equal to the fixed design,
and the error rates measured through the report's own ``summarize`` (``calibration.measure_design``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.analyse.analysis import summarize
from study.analyse.calibration import measure_design
from study.analyse.sequential import Look, boundaries, decide, nominal_levels, spent
from study.analyse.simulate import SCENARIOS, simulate
from study.define.config import SeedPlan
from study.define.claims import PRIMARY_DEFAULT

from .test_calibration import too_few, too_many

# gsDesign(k, test.type = 2, alpha = 0.025, sfu = sfLDOF)$upper$bound, equally spaced looks: the
# O'Brien-Fleming-type Lan-DeMets boundaries of a two-sided test at α = 0.05 as the R package prints them
GSDESIGN = {2: (2.9626, 1.9686), 3: (3.7103, 2.5114, 1.9930), 5: (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)}


@pytest.mark.parametrize("k", sorted(GSDESIGN))
def test_boundaries_are_gsdesigns(k):
    fractions = tuple((i + 1) / k for i in range(k))
    assert np.allclose(boundaries(fractions, 0.05, "obrien-fleming"), GSDESIGN[k], atol=6e-4)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_each_look_spends_what_its_function_says_in_brownian_paths(spending):
    """An independent check for any spending function and unequal looks (3, 5, 7, 9 of 9 seeds): 400,000
    simulated z paths of one growing sample cross each look's boundary first as often as the function
    spends there, within 4 Monte-Carlo standard errors."""
    t = np.array([3, 5, 7, 9]) / 9
    c = np.array(boundaries(tuple(t), 0.05, spending))
    rng = np.random.default_rng(0)
    steps = rng.standard_normal((400_000, len(t))) * np.sqrt(np.diff(t, prepend=0.0))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    crossed = np.abs(z) >= c
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    for k in range(len(t)):
        want = spent(t[k], 0.05, spending) - (spent(t[k - 1], 0.05, spending) if k else 0.0)
        got = np.mean(first == k)
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / len(first)) + 1e-5, (k, got, want)


def test_spending_ends_at_alpha_and_one_look_is_the_fixed_test():
    assert spent(1.0, 0.05, "obrien-fleming") == pytest.approx(0.05) and spent(0.0, 0.05) == 0
    assert spent(1.0, 0.05, "pocock") == pytest.approx(0.05)
    assert spent(0.3, 0.05, "pocock") > spent(0.3, 0.05, "obrien-fleming")  # Pocock spends more early
    assert boundaries((1.0,), 0.05)[0] == pytest.approx(1.959964, abs=1e-5)
    levels = nominal_levels((0.3, 0.6, 1.0), 0.05, "obrien-fleming")
    assert levels[0] < levels[1] < levels[2] < 0.05  # early looks ask for far more evidence


def looks(*ps, n=(3, 5), diff=1.0, se=0.1):
    return [Look(seeds, diff, se, p, seeds) for seeds, p in zip(n, ps)]


def test_holm_passes_a_rejected_arms_alpha_on_at_every_look_so_far():
    plan = [3, 5]
    full, half = nominal_levels((0.6, 1.0), 0.05), nominal_levels((0.6, 1.0), 0.025)
    between = (half[1] + full[1]) / 2  # rejected at α, not at α/2
    # b alone would need α/2 at look 2; a's rejection at look 1 gives b the whole α, so b is rejected too
    d = decide({"a": looks(full[0] / 10, 0.5), "b": looks(0.5, between)}, plan, 0.05)
    assert (d["a"].outcome, d["a"].look) == ("rejected", 1)
    assert (d["b"].outcome, d["b"].look) == ("rejected", 2)
    # without a's rejection b keeps α/2 and stays open
    d = decide({"a": looks(0.5, 0.5), "b": looks(0.5, between)}, plan, 0.05)
    assert d["b"].outcome == "open" and d["a"].outcome == "open"


def test_a_look_before_its_boundary_does_not_reject():
    plan = [3, 5]
    level = nominal_levels((0.6, 1.0), 0.05)[0]
    assert decide({"a": looks(level * 2)[:1]}, plan, 0.05)["a"].outcome == "open"
    assert decide({"a": looks(level / 2)[:1]}, plan, 0.05)["a"].outcome == "rejected"


def test_futility_when_the_repeated_interval_lies_inside_the_margin_and_never_a_rejection_after():
    plan = [3, 5]
    small = [Look(3, 0.1, 0.05, 0.2, 3), Look(5, 5.0, 0.1, 1e-9, 5)]  # tiny then, at look 2, huge
    d = decide({"a": small}, plan, 0.05, min_effect=1.0)
    assert (d["a"].outcome, d["a"].look) == ("futile", 1)
    assert -1.0 < d["a"].lo < d["a"].hi < 1.0
    level = nominal_levels((0.6, 1.0), 0.05)[0]
    assert d["a"].hi - d["a"].lo == pytest.approx(2 * 0.05 * _t(level, 2))
    assert decide({"a": small}, plan, 0.05)["a"].outcome == "rejected"  # no margin: no futility


def _t(level: float, df: int) -> float:
    from scipy import stats
    return float(stats.t.isf(level / 2, df))


@pytest.mark.parametrize("scenario", ["null4", "robust"])
def test_a_one_look_plan_is_the_fixed_design(scenario):
    """Through summarize, a plan with its only look at n seeds answers as the fixed design of n seeds:
    the same answers (Holm across the arms), differences and t-intervals."""
    rng = np.random.default_rng(7)
    sc = SCENARIOS[scenario]
    for _ in range(8):
        table = simulate(sc, 5, rng)
        fixed = summarize(table, arms=list(sc.arms)).set_index("arm")
        one = summarize(table, arms=list(sc.arms), looks=[5]).set_index("arm")
        for q, claim in PRIMARY_DEFAULT.items():
            assert list(fixed[f"answer_{q}"]) == list(one[f"answer_{q}"])
            for col in (f"diff_{claim}", f"diff_{claim}_lo", f"diff_{claim}_hi"):
                assert np.allclose(fixed[col].astype(float), one[col].astype(float), equal_nan=True), col


def test_seed_plans_look_where_they_say():
    assert SeedPlan(start=3, step=2, max=9).looks() == [3, 5, 7, 9]
    assert SeedPlan(start=3, step=3, max=10).looks() == [3, 6, 9, 10]


PLAN = tuple(SeedPlan(start=3, step=1, max=9).looks())


@pytest.mark.parametrize("scenario, spending", [("null4", "pocock"), ("null", "obrien-fleming")])
def test_a_sequential_study_keeps_alpha_across_its_looks(scenario, spending):
    """Identical arms (four: a family of three), analysed at every look of 3, 4, ..., 9 seeds: any arm
    answered shown or shown worse at most α, whatever look the study stopped at, and the first arm's
    repeated intervals cover the truth (benchmarks/calibration.py --parts sequential measures more)."""
    r = measure_design(SCENARIOS[scenario], PLAN, 60, min_effect=2.0, seed=1, spending=spending)
    for q in PRIMARY_DEFAULT:
        assert not too_many(r.family[q], 60), (q, r.family)
        assert not too_many(r.answered[q], 60), (q, r.answered)
        assert not too_few(r.covered[q], 60), (q, r.covered)


def test_a_clear_effect_stops_early_and_is_found():
    """30% of the loss regained at the two largest λ: found nearly always, in fewer seeds than a fixed
    design of 5 (Pocock spending, the default); its repeated intervals cover the truth."""
    r = measure_design(SCENARIOS["clear"], PLAN, 40, min_effect=2.0, seed=1)
    assert r.answered["more_robust"] > 0.9, r
    assert r.seeds < 5, r
    assert not too_few(r.covered["more_robust"], 40), r


def test_a_look_waits_for_complete_seeds():
    """A wave still training is no look: the plan's answers come from complete seeds only."""
    sc = SCENARIOS["null"]
    table = simulate(sc, 5, np.random.default_rng(3))
    partial = table[~((table["seed"] == 4) & (table["arm"] == "lpwd") & (table["weight_decay"] == 30.0))]
    s = summarize(partial, arms=list(sc.arms), looks=[3, 5])
    assert s.attrs["looks_done"] == 1
    assert all(s.set_index("arm").loc["lpwd", f"seeds_{q}"] == 3 for q in PRIMARY_DEFAULT)
    assert math.isfinite(s.set_index("arm").loc["lpwd", "diff_lambda_regret_lo"])


def test_a_question_no_seed_up_to_max_would_decide_is_stalled_unless_curtailing_is_off():
    plan = [3, 5, 9]
    flat = [Look(3, 0.05, 1.0, 0.95, 3)]  # no effect in sight, far from any margin
    trend = [Look(3, 2.0, 0.8, 0.12, 3)]  # not yet significant; at 9 seeds, were it to hold, it would be
    assert decide({"a": flat}, plan, 0.05)["a"].outcome == "stalled"
    assert decide({"a": flat}, plan, 0.05, curtail=False)["a"].outcome == "open"
    assert decide({"a": trend}, plan, 0.05)["a"].outcome == "open"
    # at the last look nothing is stalled: the question is simply not shown
    assert decide({"a": flat + [Look(5, 0.0, 1.0, 1.0, 5), Look(9, 0.0, 1.0, 1.0, 9)]}, plan, 0.05)["a"].outcome == "open"


def test_arms_that_both_tune_decay_off_are_never_ruled_out_on_that_alone():
    """Every seed's tuned cell is the shared λ = 0 trial for both arms: the difference is 0 with no spread,
    which bounds nothing. The look leaves "better?" open (more seeds may show a seed where they part) and
    answers "cannot be shown" at the last look, where a floor-width interval would have ruled out ±2 pt."""
    from dataclasses import replace

    from study.analyse.simulate import DECAY_HURTS
    from study.analyse.verdict import looks_words

    table = simulate(replace(SCENARIOS["robust"], recover=0.5), 5, np.random.default_rng(3), DECAY_HURTS)
    mid = summarize(table, looks=[3, 4, 5, 6], min_effect=2.0).set_index("arm").loc["lpwd"]
    assert (mid["stop_better"], mid["answer_better"]) == ("open", "cannot be shown") and mid["shared_best"]
    assert mid["stop_more_robust"] == "rejected" and mid["answer_more_robust"] == "shown"
    last = summarize(table, looks=[3, 4, 5], min_effect=2.0)
    assert last.set_index("arm").loc["lpwd", "answer_better"] == "cannot be shown"
    assert looks_words(last) == (True, 'Sequential plan (looks at 3, 4, 5 seeds): at the last look, look 3 of 3 '
                                       '(5 seeds), still undecided: better? for lpwd (answered "cannot be shown").')
