"""A one-line-per-trial progress view on the driver (Ray's own tables are too wide for a grid)."""

from __future__ import annotations

import time

from ray import tune
from rich.console import Console


class ProgressLine(tune.Callback):
    """Prints ``[done/total] trial: val_acc, test_acc_at_best_val`` as trials finish or fail."""

    def __init__(self, total: int):
        self.total = total
        self.finished = 0
        self.started = time.time()

    def _line(self, trial, text: str) -> None:
        self.finished += 1
        elapsed = time.time() - self.started
        Console(highlight=False).print(f"[{self.finished}/{self.total}] {trial} {text}  ({elapsed:.0f}s)")

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        if r.get("finished") != 1:
            return  # stopped by Ctrl-C, not finished: it resumes later
        if r.get("diverged"):
            text = f"[red]diverged at epoch {r.get('epoch')}[/]"
        else:
            text = f"val_acc={r.get('best_val_acc', float('nan')):.4f} test_acc_at_best_val={r.get('test_acc_at_best_val', float('nan')):.4f}"
        self._line(trial, text)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "[red]errored (see python -m study status)[/]")
