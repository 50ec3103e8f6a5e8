"""Stop a sweep whose MLflow server is gone for good, with one line, instead of hanging on it.

Every trial logs to the tracking server itself, retrying each call for at most
``tracking.DEADLINE_S``. A server that never comes back would make each trial fail
in turn, each after its retries: a silent sweep for as long as it has trials. The
driver asks the server's ``/health`` every few seconds instead (a Ray Tune
``Stopper``, consulted on every turn of Tune's loop); once it has not answered for
the deadline, the sweep stops and the command says how to resume.
"""

from __future__ import annotations

import time

from ray.tune import Stopper

from ..errors import UserError
from .ray_logs import abandon_trials

CHECK_EVERY_S = 5.0


class TrackingLost(UserError):
    """The study's MLflow server stopped answering; the sweep was stopped."""


WATCHES: list["TrackingWatch"] = []  # this process's watches, restored ones included (Tune unpickles its own)


class TrackingWatch(Stopper):
    def __init__(self, uri: str, deadline_s: float):
        self.__setstate__({"uri": uri, "deadline_s": deadline_s})

    def __getstate__(self):  # Tune pickles the stopper with the sweep: clocks of a past process mean nothing
        return {"uri": self.uri, "deadline_s": self.deadline_s}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.last_answer, self.next_check, self.lost = time.monotonic(), 0.0, False
        WATCHES.append(self)

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        import requests

        now = time.monotonic()
        if now >= self.next_check and not self.lost:
            self.next_check = now + CHECK_EVERY_S
            try:
                requests.get(self.uri.rstrip("/") + "/health", timeout=3).raise_for_status()
                self.last_answer = now
            except requests.RequestException:
                self.lost = now - self.last_answer > self.deadline_s
                if self.lost:  # the trials Tune now stops raise as they go: not news, the CLI's line says why
                    abandon_trials()
        return self.lost



def raise_if_lost() -> None:
    for watch in WATCHES:
        if watch.lost:
            raise TrackingLost(f"the MLflow server {watch.uri} has not answered for {watch.deadline_s:g} s, so the "
                               "study stopped; nothing finished is lost")
