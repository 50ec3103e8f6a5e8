"""``study status``: how far a study has got, read from its tidy table.

The best cell shown per arm is chosen exactly as the report chooses it (on
validation, mean over seeds, ``analysis.cells``), and reported on test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Column, Table

from ..analyse.analysis import arm_of, best_cells, cells, scored
from ..store.loader import load
from ..store.studydir import holder

STATES = {"TERMINATED": "done", "RUNNING": "running", "PENDING": "pending", "PAUSED": "pending",
          "INTERRUPTED": "pending", "ERROR": "errored"}


def study_counts(study_dir: Path) -> tuple[Counter, list[dict], int, str | None]:
    """Planned trials by state, the table's rows, how many trials there are to train, and where a
    sequential plan stands (None for a fixed list of seeds)."""
    study = load(study_dir)  # status only reads: a rebuilt table is not written
    planned, trained, standing = study.planned_trials, study.trained_trials, None
    if study.cfg.search.seed_plan and study.cfg.search.mode == "grid":
        planned, trained, standing = sequential_counts(study)
    counts = Counter(STATES.get(r["status"], "pending") for r in study.rows)
    counts["pending"] += max(0, planned - len(study.rows))
    return counts, study.rows, trained, standing


def sequential_counts(study) -> tuple[int, int, str]:
    """A sequential study's planned and trained trials so far: the waves its looks have asked for (the
    next one too while a question is open), and the look's sentence, from the report's own analysis."""
    from ..analyse.verdict import looks_words
    from ..define.config import baseline_arm, trained_grid, trial_grid
    from .report import analyse

    cfg = study.cfg
    waves = cfg.search.waves()
    decided, words, done = False, f"Sequential plan: no look yet ({len(waves[0])} seeds needed).", 0
    finished = [r for r in study.rows if r["status"] == "TERMINATED"]
    if finished:
        summary = analyse(study, "test_acc_at_best_val", baseline_arm(cfg), "t", "holm")[3]
        decided, words = looks_words(summary) or (False, "")
        done = summary.attrs.get("looks_done") or 0
    asked = waves[:min(len(waves), done + (0 if decided else 1))]
    seeds = [s for wave in asked for s in wave]
    return len(trial_grid(cfg, seeds)), len(trained_grid(cfg, seeds)), words


def timing(study_dir: Path, rows: list[dict], total: int) -> str:
    """The trials to train (as the run's progress bar counts them: a shared trial once), how long trials
    have been running and the ETA at that pace. The time is the union of each trial's first-to-last
    report span, so the hours a stopped study waited for its resume are not in it."""
    from .report import trial_reports

    trials = {x["trial_id"]: x for x in rows}.values()
    spans = sorted((mine[0]["timestamp"], mine[-1]["timestamp"])
                   for mine in (trial_reports(Path(study_dir), row) for row in trials) if mine)
    running, end = 0.0, float("-inf")
    for start, stop in spans:  # the union of the spans
        running += max(0.0, stop - max(start, end))
        end = max(end, stop)
    finished = sum(r["status"] in ("TERMINATED", "ERROR") for r in trials)
    line = f"trials to train: {finished} of {total} finished"
    if not spans:
        return line
    line += f"; trials ran for {running / 60:.1f} min"
    if finished and total > finished:
        line += f", ETA {running / finished * (total - finished) / 60:.1f} min at that pace while a driver runs"
    return line


def print_status(study_dir: Path, shown: str | None = None) -> None:
    """``shown``: how the user named the study (an object-store URI, whose files are read from its mirror)."""
    counts, rows, to_train, standing = study_counts(study_dir)
    import sys

    # a terminal wraps at its own width; a file or a pipe (``status > file``, a log) gets the table whole
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(f"[bold]{shown or study_dir}[/]: planned trials " + ", ".join(
        f"{counts[k]} {k}" for k in ("done", "running", "pending", "errored")), soft_wrap=True)
    when = timing(study_dir, rows, to_train)
    if when:
        console.print(when, soft_wrap=True)
    if standing:
        console.print(standing, soft_wrap=True)
    if counts["running"]:
        from .commands import invocation

        driver = holder(study_dir)
        console.print(f"running: {driver}" if driver else "(no driver is alive: the trials shown running were "
                      f"interrupted; resume with: {invocation()} resume {shown or study_dir})", soft_wrap=True)
    table = pd.DataFrame(rows)
    best = {}
    if not table.empty:
        c = cells(scored(table, "test_acc_at_best_val"))
        for arm, mine in c.groupby("arm", sort=False):
            top = best_cells(mine)
            best[arm] = (f"η={top['lr'].iloc[0]:g} λ={top['weight_decay'].iloc[0]:g}", top["val"].mean(), top["mean"].mean())
    arms = list(dict.fromkeys(arm_of(table))) if not table.empty else []
    # an arm's name is never cut ("lpwd:line…"): the other columns give way in a narrow terminal or a log
    t = Table(Column("arm", no_wrap=True, min_width=max(map(len, arms), default=3)), "done", "running", "errored",
              "best cell (on validation)", "its validation", "its test (points)")
    for arm in arms:
        state = Counter(STATES.get(r["status"], "pending") for r in rows if r.get("arm", r["variant"]) == arm)
        cell, val, test = best.get(arm, ("-", float("nan"), float("nan")))
        t.add_row(arm, str(state["done"]), str(state["running"]), str(state["errored"]), cell,
                  f"{val:.2f}" if val == val else "-", f"{test:.2f}" if test == test else "-")
    console.print(t)
    for r in rows:
        if r["status"] == "ERROR":
            console.print(f"[red]errored[/] {r['trained_as'] or r['variant']}: {r.get('error', '')}")
    report = Path(study_dir) / "report.html"
    if report.exists():
        console.print(f"report: {report}")
