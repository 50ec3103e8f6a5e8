"""Sweep progress on the driver: a rich progress bar on a terminal, one unwrapped line per trial in a log.

Ray's own status tables are too wide for a grid of hundreds of trials; this
shows the trials to train (the count ``study status`` calls "to train"), how many
run and have failed, elapsed time, ETA and the latest finished trial instead.
The clock and the rate behind the ETA are this driver's own: a resumed sweep's
ETA does not count the time it was stopped.
"""

from __future__ import annotations

import sys
import time

from ray import tune
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressLine(tune.Callback):
    """``[done/total] trial: best val, test at best val (N running, M failed; elapsed, ETA)``."""

    def __init__(self, total: int, interactive: bool | None = None):
        self.total = total
        self.__setstate__({"total": total, "interactive": interactive})

    def __getstate__(self):  # pickled with a sweep: a restored one starts its own clock and counts
        return {"total": self.total, "interactive": self._interactive}

    def __setstate__(self, state):
        self.total, self._interactive = state["total"], state["interactive"]
        self.interactive = sys.stdout.isatty() if self._interactive is None else self._interactive
        self.started, self.finished, self.finished_before, self._bar = time.time(), 0, None, None

    @staticmethod
    def _counts(trials, done=None, failed=None, started=None) -> tuple[int, int, int]:
        """(finished, running, failed) over ``trials``. Tune calls back before it sets the status of the
        trial the event is about: ``done`` finished, ``failed`` errored, ``started`` runs."""
        finished = sum(t is done or t.status == "TERMINATED" and (t.last_result or {}).get("finished") == 1
                       for t in trials)
        running = sum(t is started or t.status == "RUNNING" and t is not done and t is not failed for t in trials)
        return finished, running, sum(t is failed or t.status == "ERROR" for t in trials)

    def _eta(self, finished: int) -> str:
        if self.finished_before is None:
            self.finished_before = finished
        rate_of = finished - self.finished_before  # trials this driver finished
        elapsed = time.time() - self.started
        return _clock(elapsed / rate_of * (self.total - finished)) if rate_of > 0 else "-"

    def _show(self, trials, text: str, done=None, failed=None, started=None, line: bool = True) -> None:
        finished, running, failed = self._counts(trials, done, failed, started)
        counts = f"{running} running" + (f", [red]{failed} failed[/]" if failed else "")
        eta = self._eta(finished)
        if self.interactive:
            if self._bar is None:
                self._bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.fields[counts]}, ETA {task.fields[eta]}  {task.description}"))
                self._task = self._bar.add_task("", total=self.total, counts=counts, eta=eta)
                self._bar.start()
            room = self._bar.console.width - 75  # the bar, counts and clock first; the latest trial if it fits
            text = text if len(text) <= room else (text[:room - 1] + "…" if room > 20 else "")
            self._bar.update(self._task, completed=finished + failed, description=text, counts=counts, eta=eta)
        elif line:
            Console(highlight=False, soft_wrap=True).print(
                f"[{finished + failed}/{self.total}] {text}  ({counts}; {_clock(time.time() - self.started)}, "
                f"ETA {eta})")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._show(trials, "", started=trial, line=False)  # the bar from the first start, not the first finish

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result or {}
        if r.get("finished") != 1:
            return  # stopped by Ctrl-C, not finished: it resumes later
        if r.get("diverged"):
            text = f"{trial}: [red]diverged at epoch {r.get('epoch')}[/]"
        else:
            text = (f"{trial}: best val {100 * r.get('best_val_acc', float('nan')):.1f}, "
                    f"test at best val {100 * r.get('test_acc_at_best_val', float('nan')):.1f}")
        self._show(trials, text, done=trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(trials, f"{trial}: [red]errored (see study status)[/]", failed=trial)

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.stop()
