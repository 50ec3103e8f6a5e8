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
the 7 drawn at random), and "at least one setting answered shown".

The decay-mass share (``--shares`` replicates a column): four arms identical (the share
is 0/0), mass carrying all of lpwd's edge over pwd (share 1), layer shape carrying all of
it (share 0): how often a share is stated, and how often a stated one covers the truth.

    python benchmarks/calibration.py [--replicates 500] [--pooled 200] [--shares 300] [--seeds 3 5 10]

A rate over N replicates has a standard error of about sqrt(r (1 − r) / N), e.g. ±1.0
point at 5% and 500 replicates, ±1.5 at 200.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from study.analyse.calibration import POOLING, SEEDS, measure, measure_decomposition, measure_pooling  # noqa: E402
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
    columns = [(name, n) for name in POOLING for n in args.seeds]
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
          "P(χ²_6 ≥ 12) = 6.2%)", names, rows)


def shares(args) -> None:
    columns = [(name, n) for name in DECOMPOSITION_SCENARIOS for n in args.seeds]
    rates = {c: measure_decomposition(DECOMPOSITION_SCENARIOS[c[0]], SHARE_TRUTH[c[0]], c[1], args.shares)
             for c in columns}
    names = [f"{name}, {n} seeds" for name, n in columns]
    table(f"The λ-regret mass share (Fieller's 95% interval), {args.shares} studies each; with identical arms "
          "the share is 0/0 and any stated one counts as covering", names,
          [("a share is stated", [rates[c].printed for c in columns]),
           ("a stated share's interval covers the truth", [rates[c].covered for c in columns])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=500, help="studies per per-study column")
    p.add_argument("--pooled", type=int, default=200, help="replicates (of 7 studies) per pooled column")
    p.add_argument("--shares", type=int, default=300, help="four-arm studies per mass-share column")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--parts", nargs="+", default=["study", "ugly", "pooled", "shares"],
                   choices=["study", "ugly", "pooled", "shares"])
    args = p.parse_args()
    began = time.perf_counter()
    for part in args.parts:
        {"study": per_study, "ugly": ugly, "pooled": pooled, "shares": shares}[part](args)
        sys.stdout.flush()
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
