"""``study compare``: several finished studies, one answer to "is it robust across settings?".

Each study answers its two questions (better? more robust to λ?) with its own
pre-declared primary claims, from ``report --json``'s numbers, recomputed here from the
study's trials by the same code as its report. ``compare`` checks the studies can be
pooled (one baseline, the same primary claims, every compared arm in every study, seeds
enough for an interval), then, per arm and question:

* counts the settings by their own answer (shown / shown worse / not shown / cannot be
  shown), with a Clopper–Pearson interval for the share of settings like these that show it;
* pools the per-study effects with random effects and the Hartung–Knapp–Sidik–Jonkman
  interval (``study.analyse.pooling``), Holm-corrected across the contenders compared, like a
  study's answers; with the heterogeneity (a bootstrap test that knows each standard error
  was estimated from a few seeds, τ and its interval, I²) and a prediction interval for a
  new setting; an exact sign test, Holm-corrected the same way, is exploratory;
* draws a forest plot per question.

Control arms (``pwd@lpwd-mass``, ``lpwd:*_normalized``) are pooled when asked for with
``--arms``, with uncorrected p-values, and never enter the contenders' family.

Its words come from the numbers only, in the same vocabulary as a study's verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..define.roles import contenders, is_control
from ..define.claims import CLAIMS, QUESTIONS
from ..define.config import repeated_values
from ..errors import UserError
from .analysis import ALPHA, ANSWERS, CONTROL
from .paired import holm
from .pooling import SE_FLOOR, random_effects, share_interval, sign_test, significant
from .verdict import BASE_NAMES, difference, display_name, interval, magnitude, percent_interval

MIN_STUDIES = 2
METHOD = ("random effects with the modified Hartung–Knapp–Sidik–Jonkman t-interval on k − 1 degrees of freedom; "
          "heterogeneity by a parametric bootstrap of Q that redraws each study's variance from its seeds' χ², τ with "
          "its Q-profile interval, and a prediction interval on k − 2 degrees of freedom")


@dataclass
class Setting:
    """One study as the comparison sees it."""

    name: str
    where: str  # as the user gave it
    context: dict  # dataset, model, start, base, epochs, seeds
    answers: dict  # report --json
    run: object | None  # its MLflow parent run (tracking.StudyRun), if tracked
    identity: str = ""  # what makes it this study wherever its dir is: its parent run, else its trials' ids

    @property
    def arms(self) -> list[str]:
        return [a["arm"] for a in self.answers["arms"]]

    def comparison(self, arm: str) -> dict:
        return next(c for c in self.answers["comparisons"] if c["arm"] == arm)


def context_of(cfg) -> dict:
    pretrain = cfg.model.pretrain
    start = (f"fine-tuned from {pretrain.data}" if pretrain else "fine-tuned from ImageNet" if cfg.model.pretrained
             else "from scratch")
    return {"dataset": cfg.data.name, "model": cfg.model.name, "start": start, "base": cfg.train.base,
            "epochs": cfg.train.epochs, "seeds": len(cfg.search.seed_list)}


def check(settings: list[Setting], arms: list[str] | None) -> tuple[str, list[str], dict]:
    """(baseline, compared arms, primary claims), or one line saying which study cannot be pooled and why."""
    if len(settings) < MIN_STUDIES:
        raise UserError(f"compare: give at least {MIN_STUDIES} study dirs (got {len(settings)})")
    names = [s.name for s in settings]
    repeated = repeated_values(names)
    if repeated:
        raise UserError(f"compare: {', '.join(repeated)} given twice; list each study once")
    seen: dict[str, Setting] = {}
    for s in settings:  # a copied study dir is the same study: counting it twice would double its weight
        twin = seen.setdefault(s.identity, s) if s.identity else s
        if twin is not s:
            raise UserError(f"compare: {s.where} and {twin.where} are one study (the same trials, one a copy of the "
                            "other); list it once")
    first = settings[0]
    baseline, primary = first.answers["settings"]["baseline"], first.answers["settings"]["primary"]
    for s in settings[1:]:
        if s.answers["settings"]["baseline"] != baseline:
            raise UserError(f"compare: {s.where} compares with {s.answers['settings']['baseline']}, {first.where} with "
                            f"{baseline}; compare studies with one baseline")
        if s.answers["settings"]["primary"] != primary:
            raise UserError(f"compare: {s.where} declares primary claims {s.answers['settings']['primary']}, "
                            f"{first.where} {primary}; compare studies that declared the same verdict claims")
    arms = arms or contenders(first.arms, baseline)
    for s in settings:
        missing = [a for a in [baseline, *arms] if a not in s.arms]
        if missing:
            from ..define.config import did_you_mean

            # an arm no study has is likely mistyped in --arms; one the first study has is simply missing here
            guesses = [g for g in (did_you_mean(m, s.arms) for m in missing if m not in first.arms) if g]
            hint = f"; did you mean {', '.join(guesses)}?" if guesses else ""
            raise UserError(f"compare: {s.where} has no arm {', '.join(missing)} (its arms: {', '.join(s.arms)}{hint}); "
                            f"rerun it with that arm, or compare --arms {','.join(a for a in arms if a not in missing)}")
        for arm in arms:
            for question, claim in primary.items():
                c = s.comparison(arm)["claims"][claim]
                if (c["se"] is None or c["diff"] is None) and not c.get("tuned_off"):
                    raise UserError(f"compare: {s.where} gives {arm}'s {CLAIMS[claim].short} no interval "
                                    f"({s.context['seeds']} seeds, or too few complete grids); each study needs "
                                    "3 seeds with complete grids to be pooled")
    return baseline, arms, primary


def compare(settings: list[Setting], arms: list[str] | None = None) -> dict:
    """The comparison as data: per study and arm the primary effects, per arm and question the pooled one."""
    baseline, arms, primary = check(settings, arms)
    family = [a for a in arms if not is_control(a)]
    studies = []
    for s in settings:
        row = {"study": s.name, "where": s.where, **s.context, "arms": {}}
        for arm in arms:
            comp = s.comparison(arm)
            row["arms"][arm] = {q: {**comp["claims"][primary[q]], "answer": comp["answers"][q]} for q in QUESTIONS}
            row["arms"][arm]["effective_decay"] = next(a for a in s.answers["arms"] if a["arm"] == arm)["effective_decay"]
        decomposition = (s.answers.get("decomposition") or {}).get("claims", {})
        row["mass_share"] = {q: d["mass_share"] for q, d in decomposition.items()}
        row["run_id"] = getattr(s.run, "parent_run_id", None)
        studies.append(row)
    bases = sorted({r["base"] for r in studies})
    result = {"baseline": baseline, "baseline_name": display_name(baseline, bases[0]) if len(bases) == 1
              else f"{baseline} (each base's own decoupled decay)", "arms": arms, "family": family,
              "primary": primary, "method": METHOD, "alpha": ALPHA, "studies": studies,
              "pooled": pool(studies, arms, family, primary),
              # each base's settings pooled on their own where the settings span several bases
              "by_base": {b: pool([r for r in studies if r["base"] == b], arms, family, primary)
                          for b in bases} if len(bases) > 1 else {}}
    result["parts"] = verdict_parts(result)
    return result


def pool(studies: list[dict], arms: list[str], family: list[str], primary: dict) -> dict:
    """Per arm and question over ``studies``: the settings counted by answer (with a Clopper–Pearson
    share), the random-effects pool (Holm across the family's arms), the exploratory sign test."""
    pooled: dict = {arm: {} for arm in arms}
    n = len(studies)
    for question, claim in primary.items():
        fits, left_out, tuned_off = {}, {}, {}
        for arm in arms:
            # only a study of hand-made, continuous numbers can have no standard error at all: accuracies
            # in whole test images always have one (``paired.se_floor``), so such studies are weighted. A
            # setting whose arms both tuned decay off on every seed has a difference of 0 by construction and
            # no spread to weight it by: with the floor as its standard error it would outweigh every other
            effects = [r["arms"][arm][question] for r in studies]
            usable = [e.get("se") is not None and e["se"] > SE_FLOOR for e in effects]
            kept = [e for e, ok in zip(effects, usable) if ok]
            left_out[arm] = [r["study"] for r, ok in zip(studies, usable) if not ok]
            tuned_off[arm] = [r["study"] for r, e in zip(studies, effects) if e.get("tuned_off")]
            if len(kept) >= MIN_STUDIES:
                fits[arm] = random_effects([e["diff"] for e in kept], [e["se"] for e in kept], [e["df"] for e in kept])
        signs = {arm: sign_test([r["arms"][arm][question]["diff"] for r in studies]) for arm in arms}
        members = [a for a in family if a in fits]
        adjusted = dict(zip(members, holm([fits[a].p for a in members]))) if members else {}
        sign_adjusted = dict(zip(family, holm([signs[a]["p_sign"] for a in family]))) if family else {}
        for arm in arms:
            sign = CLAIMS[claim].better_sign()
            counts = {a: [r["study"] for r in studies if r["arms"][arm][question]["answer"] == a] for a in ANSWERS}
            shown_lo, shown_hi = share_interval(len(counts["shown"]), n)
            entry = {"claim": claim, "answer": "cannot be shown", "p_adj": float("nan"), "settings_by_answer": counts,
                     "shown_share_lo": shown_lo, "shown_share_hi": shown_hi, "left_out": left_out[arm],
                     "tuned_off": tuned_off[arm],
                     "favour": signs[arm]["positive"] if sign > 0 else signs[arm]["negative"], **signs[arm],
                     "p_sign_adj": float(sign_adjusted.get(arm, signs[arm]["p_sign"])), "control": arm not in family}
            # how much of the pool is the shared trial against itself: seeds on which both arms tuned decay off
            pooled_rows = [r["arms"][arm][question] for r in studies if r["study"] not in left_out[arm]]
            entry["tuned_off_seeds"] = sum(int(e.get("tuned_off_seeds") or 0) for e in pooled_rows)
            entry["paired_seeds"] = sum(int(e["df"]) + 1 for e in pooled_rows)
            if arm in fits:
                fit = fits[arm]
                p_adj = float(adjusted.get(arm, fit.p))
                answer = (CONTROL if arm not in family else "not shown" if not significant(p_adj)
                          else "shown" if fit.estimate * sign > 0 else "shown worse")
                entry |= {**fit.as_dict(), "p_adj": p_adj, "answer": answer, "family": len(members)}
            else:
                entry |= dict.fromkeys(("estimate", "lo", "hi", "se", "p", "tau", "tau_lo", "tau_hi", "i2", "q",
                                        "p_heterogeneity", "pred_lo", "pred_hi"), float("nan"))
                entry |= {"k": n - len(left_out[arm]), "family": len(members)}
            pooled[arm][question] = entry
    return pooled


def _listed(names: list[str]) -> str:
    return ", ".join(names)


def estimate_text(p: dict) -> str:
    """``−4.4 pt [−10.6, +1.7]``: a pooled estimate and its interval."""
    return difference(p["claim"], p["estimate"], p["lo"], p["hi"])


def counts_text(p: dict, n: int) -> str:
    """``4 shown, 0 shown worse, 3 not shown of 7 settings (shown in 57% [18%, 90%] of settings like these)``."""
    by = p["settings_by_answer"]
    words = ", ".join(f"{len(by[a])} {a}" for a in ANSWERS if by[a] or a in ("shown", "shown worse", "not shown"))
    share = f"{100 * p['shown_share_lo']:.0f}–{100 * p['shown_share_hi']:.0f}%"
    return f"{words} of {n} setting{'s' if n != 1 else ''} (shown in {share} of settings like these, Clopper–Pearson)"


def heterogeneity_text(p: dict, alpha: float) -> str:
    """What the scatter of the settings' effects says, in words its test allows."""
    claim = p["claim"]
    tau = magnitude(claim, p["tau"], p["tau_lo"], p["tau_hi"])
    ph = p["p_heterogeneity"]
    test = "bootstrap p " + ("< 0.001" if ph < 0.001 else f"= {ph:.3f}")
    if p["p_heterogeneity"] < alpha:
        return f"the settings differ in size beyond their seeds' noise ({test}; τ = {tau}; I² = {100 * p['i2']:.0f}%)"
    return f"no difference between the settings shown ({test}; τ = {tau}; I² = {100 * p['i2']:.0f}%)"


def tuned_off_text(p: dict) -> str:
    """``; both arms tune decay off on 38 of 45 paired seeds pooled (there the difference is 0 by construction)``"""
    if not p.get("tuned_off_seeds"):
        return ""
    return (f"; both arms tune decay off on {p['tuned_off_seeds']} of {p['paired_seeds']} paired seeds pooled "
            "(λ = 0, the trial they share: there the difference is 0 by construction)")


def pooled_text(p: dict, off: bool = True) -> str:
    p_text = "p < 0.001" if p["p_adj"] < 0.001 else f"p = {p['p_adj']:.3f}"
    which = ("uncorrected, a control" if p["control"] else
             f"Holm-corrected across {p['family']} arms" if p["family"] > 1 else "")
    words = f"pooled {CLAIMS[p['claim']].short} {estimate_text(p)}, {p_text}" + (f" {which}" if which else "")
    if math.isfinite(p["pred_lo"]):
        words += f"; a new setting like these: {interval(p['claim'], p['pred_lo'], p['pred_hi'])}"
    return words + (tuned_off_text(p) if off else "")


def question_sentence(result: dict, arm: str, question: str) -> str:
    """``more robust to λ? 4 shown, … of 7 settings (…); pooled λ-regret −3.1 pt [...], p = …; …``"""
    p = result["pooled"][arm][question]
    claim = CLAIMS[p["claim"]]
    n = len(result["studies"])
    by = p["settings_by_answer"]
    named = [f"{ans} in {_listed(by[ans])}" for ans in ("shown", "shown worse") if by[ans]]
    words = [f"{QUESTIONS[question]}? {counts_text(p, n)}" + (f": {'; '.join(named)}" if named else "")]
    off = p.get("tuned_off", [])
    if off:
        words.append(f"{_listed(off)} left out of the pooled estimate (tuning turns decay off for both arms on every "
                     "seed: the difference is 0 by construction, with no spread to weight it by)")
    hand_made = [name for name in p["left_out"] if name not in off]
    if hand_made:
        words.append(f"{_listed(hand_made)} left out of the pooled estimate (hand-made numbers with no "
                     "standard error to weight them by)")
    if p["answer"] == "cannot be shown":
        words.append(f"pooled: cannot be shown ({p['k']} setting{'s' if p['k'] != 1 else ''} to pool, "
                     f"{MIN_STUDIES} needed)")
    else:
        words.append(f"{pooled_text(p, off=False)} ({claim.reading}): "
                     f"{p['answer'] if p['answer'] != CONTROL else 'not asked of a control'}{tuned_off_text(p)}")
        words.append(heterogeneity_text(p, result["alpha"]))
    words.append(f"exploratory: {p['favour']} of {n} settings favour {arm} (exact sign test p = {p['p_sign']:.3f}"
                 + (f", Holm-corrected across {len(result['family'])} arms p = {p['p_sign_adj']:.3f}"
                    if not p["control"] and len(result["family"]) > 1 else "") + ")")
    return "; ".join(words)


def base_sentence(result: dict, base: str, arm: str) -> str:
    """``Muon, 2 settings: better? not shown (pooled …; 0 shown, … of 2 settings (…)); more robust to λ? …``"""
    k = sum(r["base"] == base for r in result["studies"])
    said = []
    for question in QUESTIONS:
        p = result["by_base"][base][arm][question]
        words = f"{QUESTIONS[question]}? {p['answer']} ("
        if p["answer"] != "cannot be shown":
            words += f"{pooled_text(p)}; {heterogeneity_text(p, result['alpha'])}; "
        said.append(words + counts_text(p, k) + ")")
    return f"{BASE_NAMES.get(base, base)}, {k} setting{'s' if k != 1 else ''}: " + "; ".join(said)


def verdict_parts(result: dict) -> list[str]:
    """The headline (LPWD or the first contender, both questions), one part per arm, then the limits."""
    arms, n = result["arms"], len(result["studies"])
    family = result["family"] or arms
    lead = "lpwd" if "lpwd" in family else family[0]
    studies = result["studies"]

    def kinds(key: str) -> str:
        return ", ".join(dict.fromkeys(str(r[key]) for r in studies))

    heads = []
    for question in QUESTIONS:
        p = result["pooled"][lead][question]
        head = f"{QUESTIONS[question]}? {p['answer']}"
        if p["answer"] != "cannot be shown":
            head += f" ({pooled_text(p)}; {heterogeneity_text(p, result['alpha'])}; {counts_text(p, n)})"
        heads.append(head)
    name = lead.upper() if lead == "lpwd" else lead
    parts = [f"{name} vs {result['baseline_name']} across {n} settings: " + "; ".join(heads) + "."]
    for arm in arms:
        parts.append(f"{arm}{' (control)' if arm not in family else ''} vs {result['baseline_name']}: "
                     + ". ".join(question_sentence(result, arm, q) for q in QUESTIONS) + ".")
    if result["by_base"]:
        parts.append(f"{name} per base optimizer (each base's settings pooled on their own, Holm across its arms): "
                     + ". ".join(base_sentence(result, base, lead) for base in result["by_base"]) + ".")
    shares = [(r["study"], r["mass_share"].get("more_robust")) for r in studies if r["mass_share"].get("more_robust")]
    if shares:
        parts.append("How much of lpwd's λ-regret edge over pwd is decay mass, per setting (Fieller's 95% interval; "
                     "none where the edge is not clearly away from 0): "
                     + "; ".join(f"{name}: {percent_interval(share)}" for name, share in shares) + ".")
    seeds = sorted({r["seeds"] for r in studies})
    seeds_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    parts.append(f"Scope: {n} settings (datasets {kinds('dataset')}; models {kinds('model')}; {kinds('start')}; "
                 f"base optimizers {kinds('base')}), {seeds_text} seeds each. Pooled: {result['method']}, at "
                 f"α = {result['alpha']:g}; it generalises to settings like these, not to every setting. The counts "
                 "are each study's own Holm-corrected answer.")
    return parts
