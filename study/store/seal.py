"""Seals on the sweep state, so that resuming a study never unpickles a file this platform did not write.

``Tuner.restore`` unpickles a sweep's ``tuner.pkl``, its search algorithm's state and the
cloudpickled parts of ``experiment_state-*.json``: whoever can write a study dir or its bucket
could otherwise run code on whoever resumes it. Every such file is sealed as it is written: the
filesystem Ray Tune is given (``sealing_filesystem``) computes an HMAC-SHA256 of the content while
it streams and records it in a hidden sibling, ``.NAME.seal``, before the file itself takes its
name. ``check_seals`` recomputes them before any restore, reading the files as bytes only.

The key is outside the study dir: ``$LPWD_STUDY_KEY`` (hex), else ``~/.config/lpwd-study/seal.key``
(``$XDG_CONFIG_HOME`` moves it), made on first use, readable by its owner only. To resume a study on
object storage from another machine, give that machine the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from .atomicfs import DelegatingHandler
from ..errors import UserError

KEY_ENV = "LPWD_STUDY_KEY"
SEALED_PREFIXES = ("tuner.pkl", "experiment_state-", "basic-variant-state-", "searcher-state-")
KEEP = 3  # MACs kept per file: the one being written and the ones a kill mid-write could leave in place


def key_path() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "lpwd-study" / "seal.key"


def key() -> bytes:
    if os.environ.get(KEY_ENV):
        try:
            return bytes.fromhex(os.environ[KEY_ENV])
        except ValueError:
            raise UserError(f"{KEY_ENV} must be hex (the content of {key_path()}); unset it to use that file") from None
    path = key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def is_sealed_name(name: str) -> bool:
    return name.startswith(SEALED_PREFIXES)


def seal_path(path: str) -> str:
    folder, name = path.rsplit("/", 1) if "/" in path else ("", path)
    return f"{folder}/.{name}.seal" if folder else f".{name}.seal"


def _read_seals(fs: pafs.FileSystem, path: str) -> list[str]:
    try:
        with fs.open_input_stream(seal_path(path)) as f:
            macs = json.loads(f.read())
        return [m for m in macs if isinstance(m, str)] if isinstance(macs, list) else []
    except (FileNotFoundError, OSError, ValueError):
        return []


class _SealingWriter:
    """A write stream that records its content's MAC beside the file before the file is complete."""

    def __init__(self, fs: pafs.FileSystem, path: str, secret: bytes):
        self.fs, self.path = fs, path
        self.mac = hmac.new(secret, digestmod=hashlib.sha256)
        self.stream = fs.open_output_stream(path)
        self.closed = False

    def write(self, data) -> int:
        self.mac.update(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        macs = (_read_seals(self.fs, self.path) + [self.mac.hexdigest()])[-KEEP:]
        with self.fs.open_output_stream(seal_path(self.path)) as seal:
            seal.write(json.dumps(macs).encode())
        self.stream.close()  # the file takes its name (or its object appears) only now

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class SealingHandler(DelegatingHandler):
    """Another pyarrow filesystem, with sweep-state files sealed as they are written."""

    def __init__(self, base: pafs.FileSystem):
        super().__init__(base)
        self.secret = None

    def __eq__(self, other) -> bool:
        return isinstance(other, SealingHandler) and other.base.equals(self.base)

    def __ne__(self, other) -> bool:
        return not self == other

    def __reduce__(self):  # Ray ships the storage context to every trial's worker; the key stays behind
        return SealingHandler, (self.base,)

    def get_type_name(self) -> str:
        return f"sealed-{self.base.type_name}"

    def open_output_stream(self, path, metadata):
        if not is_sealed_name(path.rsplit("/", 1)[-1]):
            return self.base.open_output_stream(path)
        self.secret = self.secret or key()
        return pa.PythonFile(_SealingWriter(self.base, path, self.secret), mode="w")


def sealing_filesystem(base: pafs.FileSystem) -> pafs.FileSystem:
    return pafs.PyFileSystem(SealingHandler(base))


def check_seals(fs: pafs.FileSystem, sweep: str, where: str) -> None:
    """Before ``Tuner.restore``: every file it would unpickle carries this key's seal of its content."""
    secret = key()
    infos = fs.get_file_info(pafs.FileSelector(sweep, allow_not_found=True))
    for info in infos:
        if info.type != pafs.FileType.File or not is_sealed_name(info.base_name):
            continue
        mac = hmac.new(secret, digestmod=hashlib.sha256)
        with fs.open_input_stream(info.path) as f:
            while chunk := f.read(1 << 24):
                mac.update(chunk)
        if not any(hmac.compare_digest(mac.hexdigest(), m) for m in _read_seals(fs, info.path)):
            raise UserError(
                f"{where}/{info.base_name} does not carry this machine's seal, so it is not resumed (resuming "
                f"unpickles it, and a file written elsewhere could run code): resume on the machine that "
                f"started the study, or give this one its key ({key_path()} or ${KEY_ENV}); its finished "
                f"trials stay in trials.csv (study report reads them)")
