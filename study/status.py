"""``study status``: how far a study has got, read from its tidy table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import planned_trials
from .sweep import load_study
from .table import read_rows

STATES = {"TERMINATED": "done", "RUNNING": "running", "PENDING": "pending", "PAUSED": "pending",
          "INTERRUPTED": "pending", "ERROR": "errored"}


def study_counts(study_dir: Path) -> tuple[Counter, list[dict]]:
    cfg = load_study(study_dir)
    rows = read_rows(study_dir)
    counts = Counter(STATES.get(r["status"], "pending") for r in rows)
    counts["pending"] += max(0, planned_trials(cfg) - len(rows))
    return counts, rows


def print_status(study_dir: Path) -> None:
    counts, rows = study_counts(study_dir)
    console = Console()
    console.print(f"[bold]{study_dir}[/]: " + ", ".join(f"{counts[k]} {k}" for k in ("done", "running", "pending", "errored")),
                  soft_wrap=True)
    if counts["running"]:
        console.print("(trials shown running while no driver is alive were interrupted: python -m study resume DIR)")
    table = Table("variant", "done", "running", "errored", "best val_acc", "test_acc_at_best_val")
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        state = Counter(STATES.get(r["status"], "pending") for r in mine)
        scored = [r for r in mine if r.get("best_val_acc")]
        best = max(scored, key=lambda r: float(r["best_val_acc"]), default=None)
        table.add_row(variant, str(state["done"]), str(state["running"]), str(state["errored"]),
                      f"{float(best['best_val_acc']):.4f}" if best else "-",
                      f"{float(best['test_acc_at_best_val']):.4f}" if best else "-")
    console.print(table)
    for r in rows:
        if r["status"] == "ERROR":
            console.print(f"[red]errored[/] {r['variant']} lr={r['lr']} wd={r['weight_decay']} s{r['seed']}: {r.get('error', '')}")
