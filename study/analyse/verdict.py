"""The study's answer in words, written from the summary numbers alone.

Every sentence is a function of ``analysis.summarize``'s table, so the words cannot
disagree with it. Two questions get an answer, each from its one pre-declared primary
claim (``study.define.claims``): *better?* (level) and *more robust to λ?* (shape around the
arm's own optimum). An answer is one of "shown", "shown worse", "not shown" or
"cannot be shown" (too few seeds, or both arms tune decay off on every seed), decided by the paired t-test over seeds with Holm's
correction across the arms compared with the baseline; a sequential study's answers are
decided look by look (``sequential``) and may also be "ruled out" (no effect of
``verdict.min_effect``'s size). Every other claim is
exploratory: its number and interval are given, never called "shown".

The verdict comes as parts: a headline a reader gets in ten seconds, one part per arm,
the decay-mass decomposition, and the limits. The terminal, report.html,
robustness.json and the MLflow parent's description all show these parts.

**One number per claim.** Every difference is printed as the rounded value of the number
robustness.json holds (never a difference of two rounded means), so a script that reads
the JSON and a reader who reads the sentence see the same digits.
"""

from __future__ import annotations

import math

import pandas as pd

from ..define.roles import MASS_ARM
from .analysis import CONTROL, DECOMPOSITION, MIN_SEEDS, tuned_off_flag
from .sequential import nominal_levels
from ..define.claims import CLAIMS, QUESTIONS

TEST_NAMES = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test", "signflip": "exact sign-flip test"}
CORRECTION_NAMES = {"holm": "Holm-corrected", "bh": "Benjamini-Hochberg-corrected", "none": "uncorrected"}


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


BASE_NAMES = {"adam": "Adam", "sgd": "SGD", "muon": "Muon", "lion": "Lion", "adafactor": "Adafactor"}


def display_name(arm: str, base_optimizer: str | None = None) -> str:
    """``wd`` is AdamW on Adam, SGDW on SGD and the base's own decoupled decay on the others: say so
    where an arm is named for a reader."""
    if arm == "wd":
        base = base_optimizer or "adam"
        named = {"adam": "AdamW", "sgd": "SGDW"}.get(base, f"{BASE_NAMES.get(base, base)}'s own decay")
        return f"{named} (wd)"
    return arm


def _scale(unit: str) -> tuple[float, int, str]:
    """(multiplier, decimals, suffix) a value of this unit is shown with."""
    return {"pt": (1.0, 1, " pt"), "share": (100.0, 0, "% of cells"), "decades": (1.0, 2, " decades")}[unit]


def value(claim: str, x: float) -> str:
    m, digits, suffix = _scale(CLAIMS[claim].unit)
    return "-" if not _finite(x) else f"{m * x:.{digits}f}{suffix}"


def _signed(x: float, digits: int) -> str:
    """A signed number that never reads as 0 when it is not: ``+0.03`` rather than ``+0.0`` (floating-point
    dust below 1e-9, a difference of equal means summed in another order, is 0)."""
    if abs(x) < 1e-9:
        x = 0.0
    text = f"{x:+.{digits}f}"
    while x != 0 and float(text) == 0 and digits < 4:
        digits += 1
        text = f"{x:+.{digits}f}"
    return text.replace("-", "−")


def difference(claim: str, diff: float, lo: float, hi: float) -> str:
    """``+0.5 pt [−0.1, +1.1]``: the paired difference and its interval, each the rounded JSON value."""
    m, digits, suffix = _scale(CLAIMS[claim].unit)
    if not _finite(diff):
        return "-"
    text = _signed(m * diff, digits) + (" pt" if suffix == " pt" else suffix)
    if _finite(lo, hi):
        text += f" [{_signed(m * lo, digits)}, {_signed(m * hi, digits)}]"
    return text


def magnitude(claim: str, x: float, lo: float, hi: float) -> str:
    """``6.1 pt [2.3, 15.0]``: a size that is never negative (τ), with its interval."""
    m, digits, suffix = _scale(CLAIMS[claim].unit)
    return f"{m * x:.{digits}f}{suffix} [{m * lo:.{digits}f}, {m * hi:.{digits}f}]" if _finite(x, lo, hi) else "-"


def interval(claim: str, lo: float, hi: float) -> str:
    """``[−25.0, +16.0] pt``: an interval alone (a prediction interval has no point of its own)."""
    m, digits, suffix = _scale(CLAIMS[claim].unit)
    return f"[{_signed(m * lo, digits)}, {_signed(m * hi, digits)}]{suffix}" if _finite(lo, hi) else "-"


def percent_interval(share: dict) -> str:
    """``64% [31%, 97%]`` for a Fieller share, or why there is none."""
    if not share or not share.get("bounded"):
        return "no share: lpwd's edge over pwd is not clearly away from 0"
    return f"{_percent(share['ratio'])} [{_percent(share['lo'])}, {_percent(share['hi'])}]"


def _p(p: float) -> str:
    return "-" if not _finite(p) else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def _seeds_needed(n: int, seeds: int) -> str:
    """Why an answer cannot be given: too few seeds, or too few with a complete grid for both arms."""
    if seeds >= MIN_SEEDS:
        return (f"cannot be shown: {n} of {seeds} seeds have a complete grid for both arms, and the paired test "
                f"needs {MIN_SEEDS} (finish or resume the missing trials; an Optuna search never fills a grid)")
    more = MIN_SEEDS - n
    return f"cannot be shown with {n} seed{'s' if n != 1 else ''}: the paired test needs {MIN_SEEDS} " \
           f"(run {more} more seed{'s' if more != 1 else ''})"


TUNED_OFF = ("cannot be shown: tuning turns decay off for both arms (on every seed the validation-best cell is "
             "λ = 0, the one trial they share), so their tuned accuracies are that trial's and the seeds show no "
             "spread to put an interval on")


def _not_answered(row: pd.Series, claim: str, seeds: int) -> str:
    """Why a claim answered "cannot be shown": both arms tuned decay off, or too few seeds."""
    if tuned_off_flag(row, claim):
        return TUNED_OFF
    n = int(row[f"n_{claim}"]) if _finite(row.get(f"n_{claim}")) else 0
    return _seeds_needed(n, seeds)


def _off_seeds(row: pd.Series, claim: str) -> str:
    """``; both arms tune decay off on 4 of 5 seeds``: how many seeds compare the shared trial with itself."""
    k, n = row.get(f"shared_seeds_{claim}"), row.get(f"n_{claim}")
    if not (_finite(k) and _finite(n)) or not k:
        return ""
    return f"; both arms tune decay off (λ = 0, the trial they share) on {int(k)} of {int(n)} seeds"


def _undefined(attrs: dict, claim: str) -> str | None:
    why = (attrs.get("undefined") or {}).get(claim)
    return f"cannot be shown: {why}" if why else None


def answer_text(row: pd.Series, question: str, attrs: dict, base_optimizer: str | None = None) -> str:
    """``more robust to λ? shown (points lost … 1.2 vs 3.4, −2.2 pt [−3.1, −1.3], Holm-adjusted p = 0.004)``."""
    claim = attrs["primary"][question]
    c = CLAIMS[claim]
    ans = row[f"answer_{question}"]
    undefined = _undefined(attrs, claim)
    if undefined:
        return f"{QUESTIONS[question]}? {undefined}"
    if ans == "cannot be shown":
        return f"{QUESTIONS[question]}? {_not_answered(row, claim, attrs['seeds'])}"
    a, b = row[f"{claim}_paired"], row[f"{claim}_baseline_paired"]
    control = ans == CONTROL
    evidence = (f"uncorrected {_p(row[f'p_{claim}'])}" if control else sequential_evidence(row, question, attrs)
                or f"Holm-adjusted {_p(row[f'p_adj_{question}'])}")
    numbers = (f"{c.label}: {value(claim, a)} vs {value(claim, b)}, "
               f"{difference(claim, row[f'diff_{claim}'], row[f'diff_{claim}_lo'], row[f'diff_{claim}_hi'])}, "
               + evidence + _off_seeds(row, claim))
    if control:
        return f"{QUESTIONS[question]}? not asked of a control ({numbers})"
    return f"{QUESTIONS[question]}? {ans} ({numbers})"


def sequential_evidence(row: pd.Series, question: str, attrs: dict) -> str | None:
    """How a sequential study's answer was reached: the look, its seeds, the boundary its p-value had to
    reach, and that the interval is the repeated one (valid across looks). None for a fixed design."""
    looks = attrs.get("looks")
    if not looks or not _finite(row.get(f"look_{question}")):
        return None
    k, n = int(row[f"look_{question}"]), int(row[f"seeds_{question}"])
    at = f"look {k} of {len(looks)} ({n} seeds)"
    level = row[f"level_{question}"]
    outcome = row[f"stop_{question}"]
    if outcome == "rejected":
        p = row[f"p_{attrs['primary'][question]}"]
        why = f"decided at {at}: p = {p:.2g}, within the look's boundary {level:.2g}"
    elif outcome == "futile":
        why = f"decided at {at}: the interval lies inside ±{attrs['min_effect']:g} pt"
    elif outcome == "stalled":
        why = f"undecided at {at}, where more seeds were not expected to decide it"
    else:
        why = f"undecided at {at}"
    return f"{why}; repeated {100 * (1 - level):.2f}% interval, valid across looks"


def looks_words(summary: pd.DataFrame) -> tuple[bool, str] | None:
    """Where a sequential study stands: (every question decided?, the sentence). None for a fixed design."""
    attrs = summary.attrs
    looks, done = attrs.get("looks"), attrs.get("looks_done") or 0
    if not looks:
        return None
    family = [a for a in attrs.get("family", []) if a in set(summary["arm"])]
    rows = summary.set_index("arm")
    plan = f"looks at {', '.join(map(str, looks))} seeds"
    if not done:
        return False, f"Sequential plan ({plan}): no look yet ({looks[0]} seeds with a complete grid needed)."

    def by_question(outcome: str) -> dict[str, list[str]]:
        return {q: arms for q in QUESTIONS if f"stop_{q}" in rows
                and (arms := [a for a in family if rows.loc[a, f"stop_{q}"] == outcome])}

    def listed(questions: dict[str, list[str]]) -> str:
        return "; ".join(f"{QUESTIONS[q]}? for {', '.join(arms)}" for q, arms in questions.items())

    open_ = by_question("open")
    where = f"look {done} of {len(looks)} ({looks[done - 1]} seeds)"
    stalled = by_question("stalled")
    if not open_ and stalled:
        return True, (f"Sequential plan ({plan}): at {where} every question is decided or past deciding (at its "
                      f"current estimate, more seeds up to {looks[-1]} would not decide {listed(stalled)}); "
                      "the study stops there.")
    if not open_:
        return True, f"Sequential plan ({plan}): every question decided at {where}; the study stops there."
    if done == len(looks):
        answered = sorted({rows.loc[a, f"answer_{q}"] for q, arms in open_.items() for a in arms})
        return True, (f"Sequential plan ({plan}): at the last look, {where}, still undecided: {listed(open_)} "
                      f"(answered {' or '.join(chr(34) + a + chr(34) for a in answered)}).")
    seeds = f"seed {looks[done - 1]}" if looks[done] - looks[done - 1] == 1 else \
        f"seeds {looks[done - 1]}-{looks[done] - 1}"
    # the boundary the next look holds an open question to: Holm's first step over the arms not yet shown
    shown = {q: sum(1 for a in family if rows.loc[a, f"stop_{q}"] == "rejected") for q in QUESTIONS
             if f"stop_{q}" in rows}
    fractions = tuple(n / looks[-1] for n in looks)
    needs = " and ".join(
        f"p ≤ {nominal_levels(fractions, attrs['alpha'] / max(1, len(family) - k), attrs['spending'])[done]:.2g} "
        f"({QUESTIONS[q]}?)" for q, k in shown.items() if q in open_)
    return False, (f"Sequential plan ({plan}): at {where} undecided: {listed(open_)}; the next wave trains {seeds}, "
                   f"whose look needs {needs}.")


def headline(summary: pd.DataFrame, base_optimizer: str | None = None) -> str | None:
    """LPWD (or the first contender) against the baseline, both questions, and the decay-mass share."""
    attrs = summary.attrs
    baseline = attrs["baseline"]
    rows = {r["arm"]: r for _, r in summary.iterrows()}
    others = [a for a in rows if a != baseline and a in attrs.get("family", rows)]
    if baseline not in rows or not others or "answer_better" not in summary:
        return None
    arm = "lpwd" if "lpwd" in others else others[0]
    row = rows[arm]
    words = []
    for question in QUESTIONS:
        claim = attrs["primary"][question]
        ans = row[f"answer_{question}"]
        undefined = _undefined(attrs, claim)
        if undefined:
            words.append(f"{QUESTIONS[question]}? {undefined}")
            continue
        if ans == "cannot be shown":
            words.append(f"{QUESTIONS[question]}? {_not_answered(row, claim, attrs['seeds'])}")
            continue
        d = difference(claim, row[f"diff_{claim}"], row[f"diff_{claim}_lo"], row[f"diff_{claim}_hi"])
        words.append(f"{QUESTIONS[question]}? {ans} ({CLAIMS[claim].short} {d}; {CLAIMS[claim].reading}"
                     f"{_off_seeds(row, claim)})")
    text = f"{arm.upper() if arm == 'lpwd' else arm} vs {display_name(baseline, base_optimizer)}: " + "; ".join(words)
    mass = mass_words(attrs.get("decomposition"), short=True)
    return text + (f"; how much is decay mass? {mass}" if mass else "") + "."


READINGS = {"no edge": "no edge of lpwd over pwd", "mostly decay mass": "matching the mass closes most of it",
            "mostly layer shape": "layer shape carries most of it", "both": "mass and layer shape each carry part of it",
            "unclear": "an edge, but too uncertain to apportion"}


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%".replace("-", "−")


def _lambdas(values: list[float]) -> str:
    return "λ = " + ", ".join(f"{v:g}" for v in values)


def mass_words(decomposition: dict | None, short: bool = False) -> str | None:
    """Where decay mass explains lpwd's edge over pwd and where layer shape does, λ by λ (the η-mean
    accuracy, 95% intervals uncorrected), then the primary robustness claim's share with its interval."""
    if not decomposition:
        return None
    cells = decomposition["cells"]
    groups: list[tuple[str, list[float]]] = []
    for lam, what in zip(cells["lambdas"], cells["reading"]):
        if groups and groups[-1][0] == what:
            groups[-1][1].append(lam)
        else:
            groups.append((what, [lam]))
    shares = dict(zip(cells["lambdas"], zip(cells["mass_share"]["ratio"], cells["mass_share"]["lo"],
                                            cells["mass_share"]["hi"])))
    bits = []
    for what, lams in groups:
        text = f"at {_lambdas(lams)} {READINGS[what]}"
        if what != "no edge" and not short:
            text += " (mass share " + ", ".join(f"{_percent(shares[v][0])} [{_percent(shares[v][1])}, "
                                                f"{_percent(shares[v][2])}]" for v in lams) + ")"
        bits.append(text)
    robust = decomposition["claims"].get("more_robust")
    tail = ""
    if robust:
        tail = f"; of the λ-regret edge over pwd, {percent_interval(robust['mass_share'])}"
        if robust["mass_share"].get("bounded"):
            tail += " is mass"
    return "; ".join(bits) + tail


def arm_sentences(row: pd.Series, attrs: dict, per_cell_family: int, base_optimizer: str | None = None) -> list[str]:
    arm, baseline = row["arm"], attrs["baseline"]
    control = row.get("answer_better") == CONTROL
    out = [f"{arm}{' (control)' if control else ''} vs {display_name(baseline, base_optimizer)}: "
           + "; ".join(answer_text(row, q, attrs, base_optimizer) for q in QUESTIONS) + "."]
    primaries = set(attrs["primary"].values())
    explore = []
    for name, c in CLAIMS.items():
        if name in primaries or not _finite(row.get(f"{name}_paired")):
            continue
        d = difference(name, row[f"diff_{name}"], row[f"diff_{name}_lo"], row[f"diff_{name}_hi"])
        explore.append(f"{c.label} {value(name, row[f'{name}_paired'])} vs "
                       f"{value(name, row[f'{name}_baseline_paired'])}, {d}" + (f" ({c.note})" if c.note else ""))
    if explore:
        out.append("Exploratory, not claims (95% t-intervals over seeds, uncorrected): " + "; ".join(explore) + ".")
    dropped = row.get("dropped_seeds")
    if isinstance(dropped, list) and dropped:
        out.append(f"Seed{'s' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))} dropped from this "
                   "comparison: its grid is incomplete for one of the two arms (an errored, unfinished or "
                   "never-sampled cell).")
    if _finite(row.get("cells_tested")) and row["cells_tested"] > 0:
        out.append(f"Per cell (exploratory): {int(row['sig_better'])} of {int(row['cells_tested'])} λ > 0 cells "
                   f"significantly better, {int(row['sig_worse'])} worse ({TEST_NAMES[attrs['test']]} over seeds, "
                   f"{CORRECTION_NAMES[attrs['correction']]} over all {per_cell_family} cells of the page, "
                   f"α = {attrs['alpha']:g}).")
    return out


def decomposition_sentences(decomposition: dict | None) -> list[str]:
    """lpwd − wd as placement + decay mass + layer shape, on each primary claim, then λ by λ."""
    if not decomposition:
        return []
    out = []
    for question, d in decomposition["claims"].items():
        claim = d["claim"]
        parts = ", ".join(f"{part} {_diff_only(claim, v)}" for part, v in d["parts"].items())
        edge = f"lpwd's edge over pwd ({_diff_only(claim, d['edge_over_pwd'])})"
        share = (f"decay mass explains {percent_interval(d['mass_share'])} of {edge}" if d["mass_share"].get("bounded")
                 else f"{edge} is not clearly away from 0, so no share of it is stated")
        out.append(f"lpwd − wd on {CLAIMS[claim].label} ({QUESTIONS[question]}), over the {d['seeds']} seeds all "
                   f"four arms finished: {_diff_only(claim, d['total'])} = {parts}; {share}.")
    out.append(f"Placement is pwd − wd, decay mass {MASS_ARM} − pwd ({MASS_ARM}: pwd trained at lpwd's total decay), "
               f"layer shape lpwd − {MASS_ARM}; the split holds in every cell, so the report draws it λ by λ. "
               f"On the test accuracy averaged over η (95% paired intervals, uncorrected, Fieller's interval for "
               f"the share): {mass_words(decomposition)}.")
    return out


def _diff_only(claim: str, d: dict) -> str:
    return difference(claim, d["diff"], d["lo"], d["hi"])


def _family(attrs: dict) -> str:
    family = attrs.get("family") or []
    return f"{len(family)} arm{'s' if len(family) != 1 else ''} ({', '.join(family)})"


def limits(summary: pd.DataFrame, attrs: dict, context: dict) -> list[str]:
    out = []
    seeds = attrs["seeds"]
    where = ", ".join(f"{k} {v}" for k, v in context.items() if v is not None)
    out.append(f"Scope: {where}; {seeds} seed{'s' if seeds != 1 else ''} per cell, "
               f"{int(summary['cells_planned'].max())} cells per arm; cells chosen on validation, "
               f"accuracy reported on test ({attrs['metric']}). Each seed's grid is one replicate: claims compare "
               f"arms by per-seed differences (paired t-test, 95% t-interval, standard errors no smaller than one "
               f"test image allows), answers Holm-corrected across the verdict's {_family(attrs)} compared with "
               f"{attrs['baseline']}.")
    sequential = looks_words(summary)
    if sequential:
        margin = (f", stopping for futility when the interval lies inside ±{attrs['min_effect']:g} pt"
                  if attrs.get("min_effect") else "")
        kind = {"pocock": "Pocock"}.get(attrs.get("spending"), "O'Brien-Fleming")
        out.append(f"{sequential[1]} The looks spend α by a {kind}-type Lan-DeMets function, with Holm across the "
                   f"arms at every look{margin}; intervals of the primary claims are repeated confidence "
                   f"intervals at the deciding look.")
    if seeds < MIN_SEEDS:
        out.append(f"With {seeds} seed{'s' if seeds != 1 else ''} no claim can be shown; run at least {MIN_SEEDS}.")
    base = summary.set_index("arm")
    baseline = attrs["baseline"]
    if not attrs.get("decomposition") and baseline in base.index and _finite(base.loc[baseline, "effective_decay"]):
        ref = base.loc[baseline, "effective_decay"]
        needed = dict.fromkeys(a for pair in DECOMPOSITION.values() for a in pair)
        missing = [a for a in needed if a not in base.index]
        how = " and ".join(f"the {a} control (search.controls)" if a == MASS_ARM else f"the {a} arm (search.variants)"
                           for a in missing)
        for arm, r in base.iterrows():
            e = r["effective_decay"]
            if _finite(e) and ref > 0 and abs(e / ref - 1) > 0.05 and missing:
                out.append(f"Decay mass: at equal nominal λ, {arm} applies {e / ref:.0%} of {baseline}'s total "
                           f"decay; add {how} to measure how much of a difference that explains.")
    missing = int((summary.get("errored_trials", 0) + summary.get("unfinished_trials", 0)).sum())
    if missing:
        out.append(f"{missing} trials errored or did not finish; their seeds are dropped from the comparisons "
                   "that need them.")
    flips = int(summary["sign_flip_cells"].max())
    if flips:
        out.append(f"{flips} cells per arm have η·λ ≥ 1, where decay zeroes or flips every weight each step.")
    return out


def verdict_parts(summary: pd.DataFrame, context: dict | None = None) -> list[str]:
    """The verdict as parts: the headline, one per arm against the baseline, the decay-mass
    decomposition, then the limits."""
    attrs = summary.attrs
    context = context or {}
    base_optimizer = context.get("base optimizer")
    baseline = attrs["baseline"]
    rows = {r["arm"]: r for _, r in summary.iterrows()}
    if baseline not in rows:
        return [f"No verdict: the baseline {baseline} has no finished trials."]
    others = [a for a in rows if a != baseline]
    if not others:
        return [f"No verdict: only the baseline {baseline} has finished trials."]
    family = int(sum(rows[a].get("cells_tested", 0) or 0 for a in others))
    parts = [headline(summary, base_optimizer)]
    parts += [" ".join(arm_sentences(rows[a], attrs, family, base_optimizer)) for a in others]
    decomposition = decomposition_sentences(attrs.get("decomposition"))
    if decomposition:
        parts.append(" ".join(decomposition))
    return [p for p in parts if p] + [" ".join(limits(summary, attrs, context))]


def answers(summary: pd.DataFrame, parts: list[str], context: dict | None = None) -> list[str]:
    """The verdict a reader takes in at once: the headline of ``parts`` (``verdict_parts``'s), then each
    contender's two answers with the numbers they rest on; every exploratory number, the decomposition
    and the limits are the details."""
    attrs = summary.attrs
    rows = {r["arm"]: r for _, r in summary.iterrows()}
    family = [a for a in attrs.get("family", []) if a in rows]
    if len(parts) < 2 or not family or "answer_better" not in summary:
        return parts[:1]
    base_optimizer = (context or {}).get("base optimizer")
    return parts[:1] + [f"{arm} vs {display_name(attrs['baseline'], base_optimizer)}: "
                        + "; ".join(answer_text(rows[arm], q, attrs, base_optimizer) for q in QUESTIONS) + "."
                        for arm in family]


def verdict(summary: pd.DataFrame, context: dict | None = None) -> str:
    """One paragraph: the headline, each arm against the baseline, and the limits."""
    return " ".join(verdict_parts(summary, context))


def markdown(parts: list[str]) -> str:
    """The verdict for MLflow's run description: a bold headline, then one bullet per part."""
    if not parts:
        return ""
    return f"**{parts[0]}**\n\n" + "\n".join(f"- {p}" for p in parts[1:])
