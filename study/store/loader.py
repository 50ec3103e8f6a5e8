"""One loader per study dir: what ``report``, ``report --json``, ``status`` and ``compare`` know of a study.

Every read command goes through ``load``, so they cannot disagree about what a study
is: its config (checked against the definition it started with), its arms, its planned
and trained trials, its plan and its trials' rows. Loading reads and never writes: a
damaged ``trials.csv`` is rebuilt in memory from the trial folders, and a missing or
stale ``plan.json`` is returned as ``None`` for the caller to compute in memory (only
``run`` and ``resume`` record one). An object-store study is read from its local mirror,
pulled now.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..define.config import StudyConfig, arms, planned_trials, trained_trials
from ..define.location import PLAN_FILE, STUDY_FILE, is_remote
from ..errors import UserError
from .studydir import load_study
from .table import fixed_columns, read_table


@dataclass(frozen=True)
class Study:
    """A study as every read command sees it."""

    where: str  # as the user named it (a folder or an object-store URI)
    study_dir: Path  # the folder read: the study dir, or an object-store study's mirror
    cfg: StudyConfig
    arms: list[dict]
    planned_trials: int
    trained_trials: int
    plan: dict | None  # plan.json when it matches the config; None when missing, damaged or stale
    rows: list[dict]  # trials.csv, or the table rebuilt in memory from the trial folders


def local_study_dir(given: str) -> Path:
    """The folder a command works in: the study dir itself, or an object-store study's mirror, pulled now."""
    if not is_remote(given):
        return Path(given)
    from .objectstore import pull

    mirror = pull(given)
    if not (mirror / STUDY_FILE).is_file():
        raise UserError(f"{given} is not a study (no {STUDY_FILE} there); pass storage/NAME of a study started "
                        "with study run")
    return mirror


def plan_matches(plan, cfg) -> bool:
    """A plan of this config's arms with finite, non-negative numbers (a file from elsewhere is checked)."""
    try:
        return [a["arm"] for a in plan["arms"]] == [a["arm"] for a in arms(cfg)] and all(
            isinstance(a["effective_decay"], (int, float)) and math.isfinite(a["effective_decay"])
            and a["effective_decay"] >= 0 for a in plan["arms"])
    except (TypeError, KeyError):
        return False


def read_plan(study_dir: Path, cfg) -> dict | None:
    """The study's recorded plan, or None when there is none this config can use."""
    try:
        plan = json.loads((Path(study_dir) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return plan if plan_matches(plan, cfg) else None


def effective_decays(plan: dict) -> dict[str, float]:
    return {a["arm"]: float(a["effective_decay"]) for a in plan["arms"]}


def load(given: str | Path, write_back: bool = False) -> Study:
    """The study at ``given`` (``write_back``: a rebuilt table is written back, for the report, which
    owns the study dir while it writes; every other read leaves the dir as it is)."""
    study_dir = local_study_dir(str(given))
    cfg = load_study(study_dir)
    rows = read_table(study_dir, fixed_columns(cfg), write_back=write_back)
    return Study(str(given), study_dir, cfg, arms(cfg), planned_trials(cfg), trained_trials(cfg),
                 read_plan(study_dir, cfg), rows)
