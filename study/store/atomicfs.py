"""A local filesystem for Ray Tune on which a file is either whole or absent.

Ray Tune keeps a sweep's state (``experiment_state-*.json``, the search
algorithm's ``basic-variant-state-*.json``, ``tuner.pkl``) and every trial's
checkpoint by copying them from a staging folder onto the storage filesystem
with ``pyarrow.fs.copy_files``. On a plain local filesystem that copy truncates
the destination and then writes into it, so a ``kill -9`` (or a full disk) in
those milliseconds leaves an empty or half-written state file (seen: an empty
``basic-variant-state``): the next ``Tuner.restore`` fails to read it, logs
"Restarting experiment" and starts the sweep over instead of resuming it. Object stores do not have this problem (an object
appears only once its upload completes); this gives local storage the same
guarantee: every output stream writes to a hidden sibling and replaces the
destination with ``os.replace`` only when it is closed after a complete write.
"""
from __future__ import annotations

import io
import os
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

PARTIAL = ".partial"  # a write that never finished: ignored by Tune's globs, removed on resume


class _ReplaceOnClose(io.BufferedWriter):
    """A file written under a temporary name that takes the final name only on an explicit, clean close.

    Buffered, so a short write of the raw file is retried rather than lost. A stream that is
    dropped without ``close`` (its writer raised) is discarded, never renamed into place.
    """

    def __init__(self, path: str):
        self.final = path
        folder, name = os.path.split(path)
        self.temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}{PARTIAL}")
        super().__init__(io.FileIO(self.temporary, "w"))
        self.failed = False

    def write(self, data) -> int:
        try:
            return super().write(data)
        except BaseException:
            self.failed = True
            raise

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.failed:
                self.flush()
                os.fsync(self.fileno())
        except BaseException:
            self.failed = True
            raise
        finally:
            super().close()
            if self.failed:
                os.unlink(self.temporary)
            else:
                os.replace(self.temporary, self.final)

    def __del__(self):
        try:
            if not self.closed:  # abandoned mid-write: its content is not the file's
                self.failed = True
        except ValueError:  # the temporary file could not be created: there is nothing to discard
            return
        super().__del__()


class DelegatingHandler(pafs.FileSystemHandler):
    """A pyarrow filesystem handler that passes every call to ``base``: subclasses change one thing."""

    def __init__(self, base: pafs.FileSystem):
        self.base = base

    def get_type_name(self) -> str:
        return self.base.type_name

    def normalize_path(self, path):
        return self.base.normalize_path(path)

    def get_file_info(self, paths):
        return self.base.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.base.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.base.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.base.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.base.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the filesystem root")

    def delete_file(self, path):
        self.base.delete_file(path)

    def move(self, src, dest):
        self.base.move(src, dest)

    def copy_file(self, src, dest):  # through this handler's own output stream
        with self.base.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while chunk := source.read(1 << 24):
                target.write(chunk)

    def open_input_stream(self, path):
        return self.base.open_input_stream(path)

    def open_input_file(self, path):
        return self.base.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.base.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.base.open_append_stream(path)


class AtomicLocalHandler(DelegatingHandler):
    """pyarrow's LocalFileSystem, except that output streams replace their file atomically."""

    def __init__(self):
        super().__init__(pafs.LocalFileSystem())

    def __eq__(self, other) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other) -> bool:
        return not self == other

    def __reduce__(self):  # Ray ships the storage context to every trial's worker
        return AtomicLocalHandler, ()

    def get_type_name(self) -> str:
        return "local-atomic"

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_ReplaceOnClose(path), mode="w")


def atomic_local_filesystem() -> pafs.FileSystem:
    """The filesystem to give Tune (``storage_filesystem``) for a study on a local or shared disk."""
    return pafs.PyFileSystem(AtomicLocalHandler())


def remove_partial_writes(folder: os.PathLike) -> int:
    """Delete what writes cut short by a kill left behind; they were never any file's content."""
    removed = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if name.startswith(".") and name.endswith(PARTIAL):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed
