"""What Ray prints on the driver, cut to what a user acts on: the platform's own lines say the rest.

A failed trial is one progress line and its error in the table (Tune would print its whole
traceback); a failed save to a full disk is one line; the results of trials abandoned by a
Ctrl-C or a lost tracking server are not news. The sweep, the tracking watch and the CLI
all call these, so they live beneath all three.
"""

from __future__ import annotations

import logging


class _TrialFailureTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Trial task failed for trial")


class _StorageWriteTracebacks(logging.Filter):
    """A failed write of Tune's to the storage (its sweep state, a folder), one line instead of a traceback.

    A full or unwritable storage is the user's to fix, and the run ends with a line that says
    so (cli); until then Tune retries at its next save, which is worth one line, not a page.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            error = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        elif "Traceback (most recent call last)" in message:
            error = message.strip().splitlines()[-1]
        else:
            return True
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"Tune could not write to the study's storage ({error}); it tries again at its next save", (), None, None)
        return True


class _AbandonedTrialErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unhandled error")


def abandon_trials() -> None:
    """The sweep stops early (Ctrl-C, a full disk): what its running trials raise as they go is not news.

    Ray logs each result that nobody collected, with its traceback ("Unhandled error"), when
    it is garbage-collected, which is after the driver's one line that says what happened.
    """
    _filter_once("ray._private.worker", _AbandonedTrialErrors)


def _filter_once(logger: str, kind: type[logging.Filter]) -> None:
    """Add a ``kind`` filter to the logger unless it has one (the CLI and tests call these more than once)."""
    log = logging.getLogger(logger)
    if not any(isinstance(f, kind) for f in log.filters):
        log.addFilter(kind())


def quiet_ray_logs() -> None:
    """Ray's console output, cut to what a user acts on (our progress lines and errors say the rest)."""
    # on Ctrl-C Ray's multi-line "Tuner.restore(...)" advice is replaced by the CLI's one line,
    # and trials that never started have no results to complain about
    # and a resumed trial that had not yet synced its progress.csv ("Remote file not found") starts a new one
    # and on a busy machine Tune's "The `process_trial_result` operation took 0.7 s, which may be a performance
    # bottleneck" is about the driver's own pace, which the progress line's ETA already shows
    for noisy in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis", "ray.tune.logger.logger",
                  "ray.tune.utils.util"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # a failed trial is one progress line ("errored (see study status)"), its error in the table, study
    # status and the trial's error.txt; Tune would also print each failure's whole traceback; a failed
    # save of the sweep state (a full disk) is one line, and the run's last line says what to do
    for name, kind in (("ray.tune.execution.tune_controller", _TrialFailureTracebacks),
                       ("ray.train._internal.syncer", _StorageWriteTracebacks),
                       ("ray.tune.execution.experiment_state", _StorageWriteTracebacks),
                       ("ray.train._internal.storage", _StorageWriteTracebacks)):
        _filter_once(name, kind)
