"""Sweep progress on the driver: a rich progress bar on a terminal, one unwrapped line per trial in a log.

Ray's own status tables are too wide for a grid of hundreds of trials; this
shows counts, elapsed time, ETA and the latest finished trial instead.
"""

from __future__ import annotations

import sys
import time

from ray import tune
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressLine(tune.Callback):
    """Counts finished trials of one sweep: ``[done/total] trial: best val, test at best val (elapsed, ETA)``."""

    def __init__(self, total: int, interactive: bool | None = None):
        self.total = total
        self.finished = 0
        self.started = time.time()
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self._bar: Progress | None = None

    def _advance(self, trial, text: str) -> None:
        self.finished += 1
        elapsed = time.time() - self.started
        if self.interactive:
            if self._bar is None:
                self._bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"))
                self._task = self._bar.add_task("", total=self.total)
                self._bar.start()
            self._bar.update(self._task, completed=self.finished, description=f"{trial} {text}")
            return
        eta = elapsed / self.finished * (self.total - self.finished)
        Console(highlight=False, soft_wrap=True).print(
            f"[{self.finished}/{self.total}] {trial}: {text}  ({_clock(elapsed)}, ETA {_clock(eta)})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        if r.get("finished") != 1:
            return  # stopped by Ctrl-C, not finished: it resumes later
        if r.get("diverged"):
            text = f"[red]diverged at epoch {r.get('epoch')}[/]"
        else:
            text = (f"best val {100 * r.get('best_val_acc', float('nan')):.1f}, "
                    f"test at best val {100 * r.get('test_acc_at_best_val', float('nan')):.1f}")
        self._advance(trial, text)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._advance(trial, "[red]errored (see study status)[/]")

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.stop()
