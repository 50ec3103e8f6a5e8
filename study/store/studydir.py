"""The study directory's guards: one owner at a time, and a config that cannot drift from its trials.

A study dir is a researcher's record of days of compute. Two drivers on it
corrupt Ray's experiment state, and a ``study.yaml`` edited after the trials
ran (more epochs, another lr list) describes trials that never existed. So:

* ``owned(study_dir)``: an exclusive ``flock`` held for the whole of ``run``,
  ``resume`` and ``report``. The kernel drops it when its process dies, so a
  killed driver leaves no stale lock to clean up; a second driver gets one
  line naming the holder.
* ``record_definition`` / ``check_definition``: the config sections that
  define the trials (data, model, train, search) are stored beside
  ``study.yaml`` when the study starts; a ``study.yaml`` that no longer
  matches them is refused, naming the keys.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..define.location import DEFINITION_FILE, LOCK_FILE, STUDY_FILE, mirrored_uri
from ..errors import UserError

# config sections that define which trials exist and what they compute
# (and the verdict's pre-declared primary claims: choosing them after seeing the trials is not pre-declaring)
DEFINING = ("data", "model", "train", "search", "verdict")


_held: set[Path] = set()  # dirs this process owns already: ``owned`` nests (a run, then its report)


def refuse_links(study_dir: Path) -> None:
    """A study dir holds no symbolic links: every write into it (the lock, the table, the report) would
    follow one, and a study dir received as an archive could point them at any file of the user's."""
    for root, dirs, files in os.walk(study_dir):  # does not follow links to folders
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise UserError(f"{os.path.join(root, name)} is a symbolic link; a study dir holds only its own "
                                "files, so it is not used: remove the link (or copy the study with cp -rL)")


@contextlib.contextmanager
def owned(study_dir: Path, what: str):
    """Hold the study dir's exclusive lock for ``what`` (run, resume, report), or refuse in one line."""
    if Path(study_dir).is_symlink():
        raise UserError(f"{study_dir} is a symbolic link; pass the study dir it points to")
    path = Path(study_dir).resolve() / LOCK_FILE
    if path in _held:
        yield
        return
    refuse_links(Path(study_dir))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if what == "report" and e.errno in (errno.EROFS, errno.EACCES):
            yield  # a study dir nobody may write to cannot change under a report written elsewhere
            return
        raise UserError(f"cannot write {path} ({e.strerror}); a study {what} needs a writable study dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{study_dir} is in use by {holder}; wait for it to finish (study status shows "
                            "progress) or stop that driver, then try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"a study {what} (pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)
    finally:
        os.close(fd)  # releases the lock


def holder(study_dir: Path) -> str | None:
    """Who holds the study dir's lock now (a driver that is alive), or None. Takes nothing: a shared,
    non-blocking probe of the same ``flock``."""
    path = Path(study_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)


def definition(cfg) -> dict:
    dumped = cfg.model_dump(mode="json")
    return {section: dumped[section] for section in DEFINING}


def record_definition(study_dir: Path, cfg) -> None:
    (Path(study_dir) / DEFINITION_FILE).write_text(json.dumps(definition(cfg), indent=1, sort_keys=True))


def differences(old: dict, new: dict) -> list[str]:
    """Keys whose values differ; a key a study's recorded definition predates counts as its default."""
    from ..define.config import StudyConfig

    defaults = definition(StudyConfig())
    old = {sec: {**defaults[sec], **old.get(sec, {})} for sec in DEFINING}
    return sorted(f"{sec}.{k}" for sec in DEFINING for k in set(old.get(sec, {})) | set(new.get(sec, {}))
                  if old.get(sec, {}).get(k) != new.get(sec, {}).get(k))


def check_definition(study_dir: Path, cfg, source: str) -> None:
    """Refuse a config whose trial-defining sections differ from the ones the study started with."""
    saved = Path(study_dir) / DEFINITION_FILE
    if not saved.exists():
        return  # a study from before definitions were recorded
    try:
        old = json.loads(saved.read_text())
    except (OSError, ValueError):
        raise UserError(f"{saved} is damaged; restore it from a copy of the study dir") from None
    changed = differences(old, definition(cfg))
    if changed:
        raise UserError(f"{source} differs from the config {study_dir} was started with ({', '.join(changed[:4])}); "
                        "restore it, or start a new study with --set name=NEW (a study's trials cannot change)")


def load_study(study_dir: str | os.PathLike):
    """The study's config (a ``StudyConfig``), refused in one line when the dir is not a study or its
    ``study.yaml`` no longer matches what the study started with; located where the dir is now."""
    path = Path(study_dir)
    if path.is_dir():
        refuse_links(path)
    if not (path / STUDY_FILE).is_file():
        raise UserError(f"{path} is not a study dir (no {STUDY_FILE}); pass storage/NAME of a study started with study run")
    source = path / STUDY_FILE
    try:
        text = source.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{source} is unreadable ({type(e).__name__}); restore it from a copy of the study dir") from None
    from ..define.config import parse_yaml, validate

    cfg = validate(parse_yaml(text, str(source)) or {}, str(source))
    check_definition(path, cfg, str(source))
    # the study dir may have moved (copied from a cluster): keep using where it is now;
    # a mirror stands for its object-store study, wherever this machine keeps it
    remote = mirrored_uri(path)
    where = remote.rsplit("/", 1) if remote else (str(path.resolve().parent), path.resolve().name)
    return cfg.model_copy(update={"storage": where[0], "name": where[1]})
