"""The verdict's error rates, measured: false positives, power and interval coverage at 3, 5 and 10 seeds.

Simulated studies shaped like the quick study (``study.simulate``: 4 η × 5 λ on
digits, a seed effect shared by every arm, validation and test correlated,
accuracies in whole test images, λ = 0 shared) go through ``analysis.summarize``,
the function ``study report`` calls, and every claim of ``study.claims`` is counted:

* ``null``: two identical arms. Every claim's rate is a false-positive rate (≤ 5% wanted).
* ``null4``: four identical arms, the family of three comparisons (Holm across arms).
* ``level``: the treated arm is 1 point better on every λ > 0 trial, the same shape:
  *better* claims may fire (power), *more robust* ones must not (≤ 5%).
* ``robust``: the treated arm regains 10% of its loss at the two largest λ values:
  a real robustness effect concentrated at large λ (power of *more robust*).

    python benchmarks/calibration.py [--replicates 500] [--seeds 3 5 10]

Rates are over ``--replicates`` studies; their standard error is about
sqrt(r (1 − r) / replicates), e.g. ±1.0 point at 5% and 500 replicates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from study.calibration import SEEDS, measure  # noqa: E402
from study.claims import CLAIMS, PRIMARY_DEFAULT, QUESTIONS  # noqa: E402
from study.simulate import SCENARIOS  # noqa: E402


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = p.parse_args()
    began = time.perf_counter()
    rates = {(sc, n): measure(SCENARIOS[sc], n, args.replicates) for sc in args.scenarios for n in args.seeds}
    columns = [(sc, n) for sc in args.scenarios for n in args.seeds]
    head = "| | " + " | ".join(f"{sc} {n}" for sc, n in columns) + " |"
    rule = "|---|" + "---|" * len(columns)

    print(f"## Verdict answers: share of studies where any arm was answered 'shown' or 'shown worse' "
          f"(Holm across arms), {args.replicates} studies each\n")
    print("| question (primary claim) | " + " | ".join(f"{sc} {n}" for sc, n in columns) + " |")
    print(rule)
    for q, claim in PRIMARY_DEFAULT.items():
        print(f"| {QUESTIONS[q]} ({claim}) | " + " | ".join(pct(rates[c].answered[q]) for c in columns) + " |")
    print("| any λ > 0 cell starred | " + " | ".join(pct(rates[c].any_cell) for c in columns) + " |")

    print("\n## Every claim: share of studies with p < 0.05 for the first arm against the baseline\n")
    print(head.replace("| |", "| claim (question) |", 1))
    print(rule)
    for name, c in CLAIMS.items():
        role = "primary" if PRIMARY_DEFAULT[c.question] == name else "exploratory"
        print(f"| {name} ({c.question}, {role}) | " + " | ".join(pct(rates[col].called[name]) for col in columns) + " |")

    print("\n## Every claim: coverage of the true difference by its 95% interval\n")
    print(head.replace("| |", "| claim |", 1))
    print(rule)
    for name in CLAIMS:
        print(f"| {name} | " + " | ".join(pct(rates[col].covered[name]) for col in columns) + " |")
    print(f"\n{len(columns) * args.replicates} simulated studies in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
