"""On a cluster of several nodes: the study dir and a file tracking store must be the same files everywhere.

Ray Tune (since 2.7) syncs checkpoints through ``storage``, so on a multi-node
cluster that has to be a folder every node reaches; and a ``sqlite:///`` or
``file:`` tracking store is a file on the driver's disk, so trials on other
nodes would log into files nobody reads. A path cannot tell whether it is an
NFS mount, so each node is asked instead: the driver writes a random token into
the study dir (and into the tracking store's folder), and one zero-CPU task
pinned to every alive node reads it back. Any node that does not see it stops
the study, in one line, before a trial starts.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import UserError

PROBE_TIMEOUT_S = 300  # a node that has to set up its runtime env first can take a while


def file_store_folder(uri: str) -> Path | None:
    """The local folder a file-based tracking store lives in (sqlite or file URIs), else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None


def _sees(paths: dict[str, str], token: str) -> dict[str, bool]:
    """On one node: which of the driver's token files it can read."""
    out = {}
    for key, path in paths.items():
        try:
            out[key] = Path(path).read_text() == token
        except OSError:
            out[key] = False
    return out


def check_shared(study_dir: Path | None, tracking_uri: str | None) -> None:
    """Refuse a multi-node study whose storage or file tracking store some node cannot see.

    ``study_dir`` None: the study is in object storage, which every node reaches by URI.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    places = {"storage": Path(study_dir)} if study_dir is not None else {}
    folder = file_store_folder(tracking_uri) if tracking_uri else None
    if folder is not None:
        places["tracking.uri"] = folder
    if not places:
        return
    token = secrets.token_hex(16)
    probes = {key: where / f".shared-probe-{token}" for key, where in places.items()}
    for probe in probes.values():
        probe.write_text(token)
    sees = ray.remote(num_cpus=0)(_sees)
    try:
        pending = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                   .remote({k: str(p) for k, p in probes.items()}, token) for n in nodes]
        try:
            answers = ray.get(pending, timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise UserError(f"some of the cluster's {len(nodes)} nodes did not answer within {PROBE_TIMEOUT_S} s "
                            "whether they see the study dir; check `ray status`, then run again") from None
    finally:
        for probe in probes.values():
            probe.unlink(missing_ok=True)
    for node, seen in zip(nodes, answers):
        where = node["NodeManagerAddress"]
        if not seen.get("storage", True):
            raise UserError(f"storage: {study_dir} is not visible from Ray node {where} (one of {len(nodes)} nodes); "
                            "set storage to a folder every node mounts (NFS) or to object storage (s3://bucket/prefix), so "
                            "checkpoints and resume work")
        if not seen.get("tracking.uri", True):
            raise UserError(f"tracking.uri: {tracking_uri} is a file that Ray node {where} does not see, so its "
                            "trials' metrics would be lost; set tracking.uri to an MLflow server every node reaches "
                            "(http://HOST:5000, see the README's cluster section)")
