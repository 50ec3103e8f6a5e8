"""The embedded local Ray: loopback only, and gone the moment its driver is.

``ray.init()`` on one machine binds GCS, raylet, workers and the metrics
exporters to every interface, and after a ``kill -9`` of the driver its
dashboard and runtime-env agents linger for a minute trying to tell a dead GCS
about it. A laptop study needs neither. So the driver starts a small warden
process (``python -m study.run.localray DRIVER_PID``) in a session of its own; the
warden runs ``ray start --head --block`` on 127.0.0.1 inside that session,
prints the address, and waits on the driver's pidfd. When the driver ends, by
any means, the warden kills its own process group at once (every result is
already checkpointed, so there is nothing to drain): everything Ray started for
this study, and nothing else on the machine. It does so whatever goes wrong in
between (a driver killed before the address could be printed to it); if the
warden itself is killed, ``ray start`` dies with it (a parent-death signal)
and the driver's exit kills the group.

A loaded machine can make ``ray start`` miss the 30 s Ray gives its node to register
("The current node timed out during startup"): the warden tries once more on fresh ports
before the driver says, in one line, that the local Ray did not start. A driver whose head
dies under it stops trying to reach the head's GCS after ``GCS_RECONNECT_S`` (Ray's
default is 60 s), once the warden has said what happened and how to resume.

Ray writes its session logs under a temp dir of the warden's (``ray-*`` in
``RAY_TMPDIR``, else the system's). A driver whose study succeeded calls
:func:`discard_logs`; the warden then removes that dir once the head is down.
After a failure it stays, and the failure's message names it.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own switch (the default on
macOS and Windows) that makes a node use the loopback address for all of its
servers. The head and its driver share a token made for this study alone
(``RAY_AUTH_TOKEN`` in their environment), so other local users cannot submit
work to it either.
"""

from __future__ import annotations

import atexit
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import UserError

LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
READY = "Ray runtime started."
# ``ray start`` gives its node 30 s to register (Ray's own, fixed); a loaded laptop can miss that once,
# so the warden tries this many times, each on fresh ports
START_ATTEMPTS = 2
# a local driver whose head died stops trying to reach its GCS after this long (Ray's default is 60 s, and
# a raylet lost at start-up kept a driver retrying for minutes): the warden has said what happened
GCS_RECONNECT_S = "15"

_wardens: list[subprocess.Popen] = []  # held for the driver's lifetime: the warden outlives nothing else
_temp_dirs: list[Path] = []  # the heads' temp dirs (Ray's logs)
resume_hint = ""  # the command that resumes this driver's study, said if its head dies under it
DISCARD = "discard-on-exit"  # in a head's temp dir: the driver succeeded, remove the dir with the head
_loopback = False


def prefer_loopback() -> None:
    """Before ``ray`` is imported, for a study with no cluster address: every Ray server on 127.0.0.1.

    Ray reads the switch once, at import, so a process that imported ``ray`` first
    (a notebook, say) keeps Ray's own ``ray.init()`` instead (see ``available``).
    """
    global _loopback
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.update(LOOPBACK_ENV)
        os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", GCS_RECONNECT_S)
        if "RAY_AUTH_MODE" not in os.environ:  # a token for this study alone, shared by its processes' env
            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        _loopback = True


def available() -> bool:
    return _loopback


def start_head() -> str:
    """Start a warden-owned local Ray head for this process; returns its GCS address."""
    # the warden's stderr is the driver's: the one line it may have to say (the head died) reaches the user
    warden = subprocess.Popen([sys.executable, "-m", "study.run.localray", str(os.getpid()), resume_hint],
                              stdout=subprocess.PIPE, text=True,
                              start_new_session=True, env={**os.environ, **LOOPBACK_ENV})
    _wardens.append(warden)
    atexit.register(_kill_orphaned_head, warden)
    line = warden.stdout.readline().strip()
    if not line.startswith(LOOPBACK):
        raise UserError(f"local Ray did not start ({line[:300] or 'no output'}); "
                        "or run on a cluster with RAY_ADDRESS")
    address, _, temp = line.partition(" ")
    _temp_dirs.append(Path(temp))
    return address


def logs() -> list[Path]:
    """Where this driver's local Ray heads keep their logs."""
    return [t / "session_latest" / "logs" for t in _temp_dirs]


def discard_logs() -> None:
    """The study succeeded: its local Ray's temp dir (its logs) goes with the head."""
    for temp in _temp_dirs:
        try:
            (temp / DISCARD).touch()
        except OSError:
            pass


def _kill_orphaned_head(warden: subprocess.Popen) -> None:
    """At the driver's exit: if the warden was killed, take its group (the head) down here instead.
    A live warden does it itself once the driver is gone, after Ray's own shutdown has run."""
    if warden.poll() is not None:
        try:
            os.killpg(warden.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _die_with_parent() -> None:
    """In the ``ray start`` child: SIGKILL when the warden dies, however it dies (Linux's parent-death signal)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def warden(driver_pid: int, hint: str = "") -> int:
    """Run the head until the driver exits, then take every process of this session down with it,
    whatever happens in between (the driver gone before the address could be printed included)."""
    temp = tempfile.mkdtemp(prefix="ray-", dir=os.environ.get("RAY_TMPDIR"))
    try:
        return _run_head(driver_pid, temp, hint)
    except BaseException:  # a closed pipe, a signal, a bug: never leave the head behind
        return 1
    finally:
        if os.path.exists(os.path.join(temp, DISCARD)):
            # a process of its own, outside this group, removes the dir once the group is gone
            subprocess.Popen([sys.executable, "-c", _REMOVE_WHEN_GONE, str(os.getpgid(0)), temp],
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        os.killpg(0, signal.SIGKILL)


# remove a dir once no process of a group is left (checked for a minute at most)
_REMOVE_WHEN_GONE = """
import os, shutil, sys, time
group, temp = int(sys.argv[1]), sys.argv[2]
for _ in range(600):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        break
    time.sleep(0.1)
shutil.rmtree(temp, ignore_errors=True)
"""


def _start_head(temp: str) -> tuple[subprocess.Popen, int, str]:
    """``ray start --head --block`` on fresh loopback ports; returns once it is up (or has given up), with
    its GCS port and the last line it printed."""
    gcs, client, agent = _free_port(), _free_port(), _free_port()
    head = subprocess.Popen([_ray_cli(), "start", "--head", "--block", f"--port={gcs}", f"--temp-dir={temp}",
                             f"--node-ip-address={LOOPBACK}", f"--ray-client-server-port={client}",
                             f"--dashboard-agent-listen-port={agent}", "--include-dashboard=false",
                             "--disable-usage-stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent)
    last = ""
    for line in head.stdout:  # ray start prints its banner, then READY, then blocks
        last = line.strip() or last
        if READY in line:
            break
    if READY not in last:
        head.wait()  # it gave up (its node missed Ray's 30 s to register, or a process died at start-up)
    return head, gcs, last


def _run_head(driver_pid: int, temp: str, hint: str) -> int:
    """``temp``: the head's own temp dir, so a user's `ray status` or ray.init("auto") keeps finding
    their own cluster, not ours. ``hint``: how to resume, said if the head dies before the driver
    (a killed GCS ends the driver from inside Ray's C++ core, where it cannot say it)."""
    driver = os.pidfd_open(driver_pid)  # before anything slow: the driver may already be gone
    for attempt in range(1, START_ATTEMPTS + 1):
        head, gcs, last = _start_head(temp)
        if head.poll() is None:
            break
        if attempt == START_ATTEMPTS:
            print(f"failed {START_ATTEMPTS} times: {last} (Ray's logs: {temp}/session_latest/logs)", flush=True)
            return 1
    print(f"{LOOPBACK}:{gcs} {temp}", flush=True)  # raises if the driver is gone already: the group dies all the same
    # keep draining ray start's output, so that it never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in head.stdout], daemon=True).start()
    ready, _, _ = select.select([driver, os.pidfd_open(head.pid)], [], [])
    if driver not in ready:  # the head went first: the driver's Ray ends it shortly, without a word
        print(f"error: the study's local Ray stopped under it (a process of its head died; logs: {temp}/"
              f"session_latest/logs); nothing finished is lost" + (f". Resume with: {hint}" if hint else ""),
              file=sys.stderr, flush=True)
    # the driver is gone: its trials are lost with it and every result is already checkpointed, so
    # there is nothing to drain; the caller kills this session's group at once, this warden last
    return 0


if __name__ == "__main__":
    sys.exit(warden(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""))
