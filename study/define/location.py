"""Where a study lives and what its files are called: a folder, or an object-store URI and its local mirror.

The config needs to know this (``StudyConfig.study_dir``), and so do the study dir's
guards and the object store; it lives here, beneath them all, so none of them imports
the other to find out. Pure path arithmetic: nothing here touches a file.
"""

from __future__ import annotations

import os
from pathlib import Path

SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs"}  # URI scheme, or pyarrow's type_name, -> the URI scheme
STUDY_FILE = "study.yaml"
LOCK_FILE = ".study.lock"
DEFINITION_FILE = ".study-definition.json"
PLAN_FILE = "plan.json"


def is_remote(storage: str) -> bool:
    return "://" in str(storage) and not str(storage).startswith("file://")


def mirrors() -> Path:
    """Where this machine keeps the working copies of object-store studies."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").resolve() / "lpwd-study"


def mirror_dir(uri: str) -> Path:
    """The local working copy of a study stored at ``uri``: the same on every run on this machine."""
    return mirrors() / uri.replace("://", "/", 1).strip("/")


def mirrored_uri(study_dir: Path) -> str | None:
    """The URI a mirror stands for, None for a study dir of its own (``mirror_dir``'s inverse)."""
    try:
        scheme, rest = Path(study_dir).resolve().relative_to(mirrors()).as_posix().split("/", 1)
    except ValueError:
        return None
    return f"{scheme}://{rest}"
