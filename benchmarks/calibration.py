"""Every sentence's error rate, measured: per-study claims, pooled answers, heterogeneity, the mass share.

Simulated studies shaped like the quick study (``study.analyse.simulate``: 4 η × 5 λ on digits, a
seed effect shared by every arm, validation and test correlated, accuracies in whole test
images, λ = 0 shared) go through ``analysis.summarize``, the function ``study report``
calls, and pooled settings through ``compare.compare``, the function ``study compare``
calls.

Per study (``--replicates`` studies a column):

* ``null``: two identical arms. Every rate is a false-positive rate (≤ 5% wanted).
* ``null4``: four identical arms, the family of three comparisons (Holm across arms).
* ``level``: the treated arm is 1 point better on every λ > 0 trial, the same shape:
  *better* may fire (power), *more robust* must not (≤ 5%).
* ``robust``: the treated arm regains 10% of its loss at the two largest λ values.
* the same with ugly data (``study.analyse.simulate.SHAPES``): 30 validation images (ties), half
  the trials at 100%, 30% of the largest-η·λ trials collapsed to chance, noise growing
  from 0.5 to 6 points with λ; null at 3 and 5 seeds, robust at 5.

Pooled over 7 settings (``--pooled`` replicates a column): all null; a true robustness
effect (30% of the loss regained) in 2 of 7; the ``robust`` effect in all 7. Counted: the
pooled answer, its interval's coverage of the settings' mean effect, the heterogeneity
test, I² ≥ 50%, the prediction interval's coverage of a new setting's true effect (one of
the 7 drawn at random), and "at least one setting answered shown". Two more put 2 settings
where decay only hurts (both arms tune to the shared λ = 0 trial on every seed; ``compare`` leaves
them out of "better?") beside 5 null settings, or beside 5 where the arm is 2 points better on
every λ > 0 cell; there the coverage and the new setting are those of the settings pooled.
``--pooling`` picks the pooled scenarios to run.

The decay-mass share (``--shares`` replicates a column): four arms identical (the share
is 0/0), mass carrying all of lpwd's edge over pwd (share 1), layer shape carrying all of
it (share 0): how often a share is stated, and how often a stated one covers the truth.

A sequential seed plan (``--sequential`` studies a column): the plan (``--plan``, default 3, 2, 9:
looks at 3, 5, 7, 9 seeds) beside the fixed designs of ``--seeds``, each study simulated at the
plan's most seeds and analysed look by look through ``summarize(looks=...)`` until every question
is decided or stalled (the same code ``study run`` calls between waves), with the futility margin
``--min-effect``; a fixed design is the one-look plan, through the same code. Counted per question:
shown / shown worse (false positives under null, power otherwise), decided (shown, shown worse
or ruled out), coverage of the reported (repeated) interval; the mean seeds and trials per study,
and trials per decided answer. Scenarios: null (2 and 4 identical arms), level, robust, clear
(30% of the loss regained at the two largest λ), and null with each kind of ugly data.

    python benchmarks/calibration.py [--replicates 500] [--pooled 200] [--pooling NAME ...] [--shares 300]
        [--seeds 3 5 10]
        [--sequential 200] [--plan 3 2 9] [--min-effect 2]

A rate over N replicates has a standard error of about sqrt(r (1 − r) / N), e.g. ±1.0
point at 5% and 500 replicates, ±1.5 at 200.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from study.analyse.calibration import (POOLING, SEEDS, measure, measure_decomposition, measure_design,  # noqa: E402
                                      measure_pooling)
from study.define.config import SeedPlan  # noqa: E402
from study.define.claims import CLAIMS, PRIMARY_DEFAULT, QUESTIONS  # noqa: E402
from study.analyse.simulate import DECOMPOSITION_SCENARIOS, SCENARIOS, SHAPES  # noqa: E402

SHARE_TRUTH = {"identical": None, "all mass": 1.0, "all shape": 0.0}


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def table(title: str, columns: list, rows: list[tuple[str, list[float]]]) -> None:
    print(f"\n## {title}\n")
    print("| | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, values in rows:
        print(f"| {name} | " + " | ".join(pct(v) for v in values) + " |")


def per_study(args) -> None:
    rates = {(sc, n): measure(SCENARIOS[sc], n, args.replicates) for sc in args.scenarios for n in args.seeds}
    columns = [(sc, n) for sc in args.scenarios for n in args.seeds]
    names = [f"{sc} {n}" for sc, n in columns]
    table(f"Verdict answers: share of studies where any arm was answered 'shown' or 'shown worse' (Holm across "
          f"arms), {args.replicates} studies each", names,
          [(f"{QUESTIONS[q]} ({claim})", [rates[c].answered[q] for c in columns]) for q, claim in PRIMARY_DEFAULT.items()]
          + [("any λ > 0 cell starred", [rates[c].any_cell for c in columns])])
    table("Every claim: share of studies with p < 0.05 for the first arm against the baseline", names,
          [(f"{name} ({c.question}, {'primary' if PRIMARY_DEFAULT[c.question] == name else 'exploratory'})",
            [rates[col].called[name] for col in columns]) for name, c in CLAIMS.items()])
    table("Every claim: coverage of the true difference by its 95% interval", names,
          [(name, [rates[col].covered[name] for col in columns]) for name in CLAIMS])


def ugly(args) -> None:
    columns = [(shape, sc, n) for shape in SHAPES if shape != "default" for sc, n in
               (("null", 3), ("null", 5), ("robust", 5))]
    rates = {c: measure(SCENARIOS[c[1]], c[2], args.replicates, shape=SHAPES[c[0]]) for c in columns}
    names = [f"{shape} {sc} {n}" for shape, sc, n in columns]
    rows = []
    for q, claim in PRIMARY_DEFAULT.items():
        rows.append((f"{QUESTIONS[q]} answered (any arm)", [rates[c].answered[q] for c in columns]))
        rows.append((f"{claim}: coverage", [rates[c].covered[claim] for c in columns]))
    table(f"Ugly data: answers 'shown' or 'shown worse' and primary coverage, {args.replicates} studies each "
          "(null: false positives; robust: power)", names, rows)


def pooled(args) -> None:
    columns = [(name, n) for name in args.pooling for n in args.seeds]
    rates = {c: measure_pooling(c[0], c[1], args.pooled) for c in columns}
    names = [f"{name}, {n} seeds" for name, n in columns]
    rows = []
    for q in PRIMARY_DEFAULT:
        label = QUESTIONS[q]
        rows += [(f"{label}: pooled answer shown / shown worse", [rates[c].shown[q] for c in columns]),
                 (f"{label}: pooled interval covers the mean effect", [rates[c].covered[q] for c in columns]),
                 (f"{label}: heterogeneity test rejects (bootstrap)", [rates[c].heterogeneity[q] for c in columns]),
                 (f"{label}: I² ≥ 50%", [rates[c].i2_half[q] for c in columns]),
                 (f"{label}: prediction interval covers a new setting", [rates[c].predicted[q] for c in columns]),
                 (f"{label}: at least one setting shown / shown worse", [rates[c].any_setting[q] for c in columns])]
    table(f"Pooled over 7 settings, {args.pooled} replicates each (I² ≥ 50% with known standard errors: "
          "P(χ²_6 ≥ 12) = 6.2% for 7 settings pooled, P(χ²_4 ≥ 8) = 9.2% for 5)", names, rows)


def shares(args) -> None:
    columns = [(name, n) for name in DECOMPOSITION_SCENARIOS for n in args.seeds]
    rates = {c: measure_decomposition(DECOMPOSITION_SCENARIOS[c[0]], SHARE_TRUTH[c[0]], c[1], args.shares)
             for c in columns}
    names = [f"{name}, {n} seeds" for name, n in columns]
    table(f"The λ-regret mass share (Fieller's 95% interval), {args.shares} studies each; with identical arms "
          "the share is 0/0 and any stated one counts as covering", names,
          [("a share is stated", [rates[c].printed for c in columns]),
           ("a stated share's interval covers the truth", [rates[c].covered for c in columns])])


def sequential(args) -> None:
    plan = tuple(SeedPlan(start=args.plan[0], step=args.plan[1], max=args.plan[2]).looks())
    designs = [(n,) for n in args.seeds] + [plan]
    names = [f"fixed {d[0]}" if len(d) == 1 else f"plan {', '.join(map(str, d))}" for d in designs]
    shapes = [("default", sc) for sc in ("null", "null4", "level", "robust", "clear")] + \
        [(shape, "null") for shape in SHAPES if shape != "default"] + [("collapse", "clear")]
    for shape, sc in shapes:
        rates = [measure_design(SCENARIOS[sc], d, args.sequential, args.min_effect, shape=SHAPES[shape])
                 for d in designs]
        rows = []
        for q, claim in PRIMARY_DEFAULT.items():
            rows += [(f"{QUESTIONS[q]}: shown / shown worse (first arm)", [pct(r.answered[q]) for r in rates]),
                     (f"{QUESTIONS[q]}: any arm shown / shown worse", [pct(r.family[q]) for r in rates]),
                     (f"{QUESTIONS[q]}: decided (shown, shown worse, ruled out)", [pct(r.decided[q]) for r in rates]),
                     (f"{claim}: its interval covers the truth", [pct(r.covered[q]) for r in rates])]
        decided = [sum(r.decided.values()) for r in rates]
        rows += [("seeds at the stop (mean)", [f"{r.seeds:.1f}" for r in rates]),
                 ("trials per study (mean)", [f"{r.trials:.0f}" for r in rates]),
                 ("trials per decided answer", [f"{r.trials / d:.0f}" if d else "-" for r, d in zip(rates, decided)])]
        print(f"\n## {sc}{'' if shape == 'default' else ', ' + shape}: {args.sequential} studies a column, "
              f"futility margin ±{args.min_effect:g} pt\n")
        print("| | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for name, values in rows:
            print(f"| {name} | " + " | ".join(values) + " |")
        sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=500, help="studies per per-study column")
    p.add_argument("--pooled", type=int, default=200, help="replicates (of 7 studies) per pooled column")
    p.add_argument("--shares", type=int, default=300, help="four-arm studies per mass-share column")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--pooling", nargs="+", default=list(POOLING), choices=list(POOLING), metavar="SCENARIO",
                   help=f"pooled scenarios (default all: {', '.join(POOLING)})")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--sequential", type=int, default=200, help="studies per column of the sequential tables")
    p.add_argument("--plan", type=int, nargs=3, default=[3, 2, 9], metavar=("START", "STEP", "MAX"),
                   help="the sequential seed plan set beside the fixed designs of --seeds")
    p.add_argument("--min-effect", type=float, default=2.0, help="the futility margin, points (verdict.min_effect)")
    p.add_argument("--parts", nargs="+", default=["study", "ugly", "pooled", "shares", "sequential"],
                   choices=["study", "ugly", "pooled", "shares", "sequential"])
    args = p.parse_args()
    began = time.perf_counter()
    for part in args.parts:
        {"study": per_study, "ugly": ugly, "pooled": pooled, "shares": shares, "sequential": sequential}[part](args)
        sys.stdout.flush()
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
