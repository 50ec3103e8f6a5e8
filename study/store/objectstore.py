"""Studies in object storage (``storage: s3://bucket/prefix``, ``gs://…``): the authoritative copy.

Ray Tune writes a sweep (checkpoints, its state, every trial's ``result.json``)
straight into the bucket through a pyarrow filesystem, so any node and any
machine sees it. The study's own files (``study.yaml``, ``trials.csv``, the
MLflow parent run, the report) are kept by the driver in a local working copy,
the *mirror* under ``~/.cache/lpwd-study``, and pushed to the bucket whenever
they change; ``status``, ``report`` and ``resume`` of an ``s3://`` study pull
the bucket into the mirror first, so they work from any machine that can read it.

S3 endpoint and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``
or ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``); pyarrow reads the credentials itself but not the endpoint.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ..define.location import DEFINITION_FILE, SCHEMES, mirror_dir
from ..errors import UserError

# what a pull brings into the mirror besides the study's own files: each trial's params and reports
TRIAL_FILES = ("params.json", "result.json")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of an object-store URI."""
    scheme = urlparse(uri).scheme
    if scheme not in SCHEMES:
        raise UserError(f"storage: {uri} has scheme {scheme}://, which is not supported; use a local or shared "
                        "folder, s3://bucket/prefix or gs://bucket/prefix")
    path = uri.split("://", 1)[1].strip("/")
    if not path:
        raise UserError(f"{uri} names no bucket; use {scheme}://BUCKET/PREFIX")
    if scheme == "s3":  # pyarrow ignores AWS_ENDPOINT_URL (apache/arrow#49643): pass it on ourselves
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region), path
    return pafs.FileSystem.from_uri(uri)[0], path


def scheme_of(fs: pafs.FileSystem) -> str | None:
    """The object store's URI scheme of a Ray storage filesystem (seen through the sealing wrapper), else None."""
    base = getattr(getattr(fs, "handler", None), "base", fs)
    return SCHEMES.get(base.type_name)


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """The URI of a path on a Ray storage filesystem (the inverse of ``filesystem``)."""
    return f"{scheme_of(fs)}://{path}"


def check_writable(uri: str) -> None:
    """Write and delete a probe object, so a wrong endpoint or key stops the study before Ray starts."""
    fs, path = filesystem(uri)
    probe = f"{path}/.write-test"
    try:
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except OSError as e:
        raise UserError(f"storage: cannot write to {uri} ({str(e).splitlines()[0][:200]}); check the bucket, "
                        "AWS_ENDPOINT_URL and the AWS credentials") from None


def _travels(name: str) -> bool:
    """The study's own top-level files that go to and come from the bucket: all but the local-only
    dotfiles (the lock, partial writes). The recorded definition travels, so every machine refuses
    an edited ``study.yaml``."""
    return not name.startswith(".") or name == DEFINITION_FILE


def push(mirror: Path, uri: str, names: list[str] | None = None) -> None:
    """Upload the study's own files (top level of the mirror; the lock stays local)."""
    fs, path = filesystem(uri)
    for file in sorted(mirror.iterdir()):
        if file.is_file() and _travels(file.name) and not file.suffix == ".tmp" and (
                names is None or file.name in names):
            with open(file, "rb") as source, fs.open_output_stream(f"{path}/{file.name}") as target:
                target.write(source.read())  # an object appears only when complete: never half a table


def pull(uri: str, fresh: bool = False) -> Path:
    """Bring the study's own files and its trials' params and reports into the mirror; return it.

    ``fresh``: a mirror of a study the bucket no longer holds is an old cache, and is cleared.
    """
    fs, path = filesystem(uri)
    mirror = mirror_dir(uri)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as e:
        raise UserError(f"cannot read {uri} ({str(e).splitlines()[0][:200]}); check the bucket, AWS_ENDPOINT_URL "
                        "and the AWS credentials") from None
    if fresh and mirror.exists() and not any(info.path == f"{path}/study.yaml" for info in found):
        shutil.rmtree(mirror)
    for info in found:
        relative = info.path[len(path) + 1:]
        parts = relative.split("/")
        wanted = (len(parts) == 1 and _travels(relative)) or (len(parts) == 3 and parts[2] in TRIAL_FILES)
        local = mirror / relative
        if info.type != pafs.FileType.File or not wanted or not local.resolve().is_relative_to(mirror.resolve()):
            continue  # a key such as grid/../../x is not a file of this study
        local.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as source:
            data = source.read()
        tmp = local.with_name(f".{local.name}.pull")
        tmp.write_bytes(data)
        os.replace(tmp, local)
    return mirror
