"""What every Ray worker of a study sets up when it starts (Ray's ``worker_process_setup_hook``).

Kept free of heavy imports: it runs before the worker imports torch or the trial, so that
the window in which a stopped worker prints a traceback is as short as Ray allows.
"""

from __future__ import annotations

import sys


def quiet_worker() -> None:
    """The worker prints what a user acts on: no restore notices, no traceback when Tune stops it."""
    _quiet_restores()
    _quiet_system_exit()


def _quiet_restores() -> None:
    """A resumed trial restores from its checkpoint: Ray's INFO line about it ("Restored on 127.0.0.1 from
    checkpoint: Checkpoint(filesystem=py::sealed-py::local-atomic, ...)") is not news in the user's log."""
    import logging

    logging.getLogger("ray.tune.trainable.trainable").setLevel(logging.WARNING)


def _quiet_system_exit() -> None:
    """A trial worker that Tune stops (SIGTERM, at the sweep's end) goes without printing a traceback.

    Ray's SIGTERM handler raises SystemExit. When the signal lands while a weakref callback runs,
    Python cannot raise it there: it prints it ("Exception ignored in ... SystemExit: 1", nine
    lines of Ray's shutdown in the user's terminal) and drops it. Only that print is dropped
    here: every other unraisable error still prints.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_system_exit", False):
        return

    def hook(unraisable) -> None:
        if not issubclass(unraisable.exc_type, SystemExit):
            previous(unraisable)

    hook.drops_system_exit = True
    sys.unraisablehook = hook
