"""Tune's saves through study.store.atomicfs leave every file whole or as it was, even under kill -9."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import time

import pyarrow.fs as pafs

from study.store.atomicfs import PARTIAL, atomic_local_filesystem, remove_partial_writes

from .conftest import PYTHON

# a writer that gets half of its new content out, then dies the way a killed driver does
KILLED_MID_WRITE = """
import os, signal, sys
from study.store.atomicfs import atomic_local_filesystem
stream = atomic_local_filesystem().open_output_stream(sys.argv[1])
stream.write(b"new-" * (1 << 18))  # 1 MiB: more than any buffer holds
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_partial_that_resume_removes(tmp_path):
    target = tmp_path / "experiment_state-x.json"
    target.write_bytes(b"old state")
    proc = subprocess.run([PYTHON, "-c", KILLED_MID_WRITE, str(target)], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_bytes() == b"old state"
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(PARTIAL)]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1 << 20  # the half-write went somewhere else
    assert remove_partial_writes(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_copy_files_replaces_whole_files_as_ray_uploads_them(tmp_path):
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    (staging / "checkpoint_000001").mkdir(parents=True)
    state = os.urandom(3 << 20)
    (staging / "checkpoint_000001" / "state.pt").write_bytes(state)
    (staging / "basic-variant-state-x.json").write_bytes(b"\x80\x05new")
    (storage).mkdir()
    (storage / "basic-variant-state-x.json").write_bytes(b"old")
    fs = atomic_local_filesystem()
    pafs.copy_files(str(staging), str(storage), destination_filesystem=fs, chunk_size=1 << 20)  # Ray's call
    assert (storage / "checkpoint_000001" / "state.pt").read_bytes() == state
    assert (storage / "basic-variant-state-x.json").read_bytes() == b"\x80\x05new"
    assert not [p for p in storage.rglob("*") if p.name.endswith(PARTIAL)]


def test_a_stream_dropped_without_close_is_discarded(tmp_path):
    target = tmp_path / "tuner.pkl"
    target.write_bytes(b"old")
    stream = atomic_local_filesystem().open_output_stream(str(target))
    stream.write(b"half")
    del stream  # its writer raised and let go of it: never renamed into place
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuner.pkl"]


def test_the_filesystem_travels_to_ray_workers_by_pickle(tmp_path):
    fs = pickle.loads(pickle.dumps(atomic_local_filesystem()))
    fs.create_dir(str(tmp_path / "a" / "b"))
    with fs.open_output_stream(str(tmp_path / "a" / "b" / "f")) as out:
        out.write(b"ok")
    assert (tmp_path / "a" / "b" / "f").read_bytes() == b"ok"
    assert [i.path for i in fs.get_file_info(pafs.FileSelector(str(tmp_path / "a"), recursive=True))] == [
        str(tmp_path / "a" / "b"), str(tmp_path / "a" / "b" / "f")]


def test_a_failed_write_of_tune_to_the_storage_is_one_line_not_a_traceback(tmp_path):
    """Ray's own syncer logs a failed upload with its traceback; the study shows it as one line."""
    from ray.train._internal.storage import _FilesystemSyncer

    from study.run.ray_logs import quiet_ray_logs

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "experiment_state-x.json").write_text("{}")
    (tmp_path / "blocked").write_text("a file where the storage folder should be")
    quiet_ray_logs()
    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append((record.name.rsplit(".", 1)[1], handler.format(record)))
    logs = [logging.getLogger(f"ray.train._internal.{name}") for name in ("syncer", "storage")]
    for log in logs:  # to this handler only: Ray's own would print them below the test run
        log.addHandler(handler)
        log.propagate = False
    try:
        syncer = _FilesystemSyncer(storage_filesystem=atomic_local_filesystem(), sync_period=0, sync_timeout=60)
        for _ in range(2000):  # Ray logs a failed sync when it launches the next one
            syncer.sync_up(str(staging), str(tmp_path / "blocked" / "grid"))
            if "syncer" in dict(shown):  # its create_dir fails first (storage), then the upload (syncer)
                break
            time.sleep(0.05)
        with contextlib.suppress(Exception):  # the last upload, still under way, fails the same way
            syncer.wait()
    finally:
        for log in logs:
            log.removeHandler(handler)
            log.propagate = True
    assert {"storage", "syncer"} <= set(dict(shown)), shown
    assert all("\n" not in line and "Traceback" not in line for _, line in shown), shown
    assert all(line.startswith("Tune could not write to the study's storage (") and "Error: " in line
               for _, line in shown), shown
