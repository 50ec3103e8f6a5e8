"""Talking to MLflow: where the store is, whether it answers, and one retry layer with a deadline.

Every MLflow call of the platform goes through ``retry`` ("database is locked",
transient HTTP errors); a call that still fails raises, so no metric is ever dropped
silently. The study's runs (``tracking``) and its saved views (``mlflow_views``) both
use these, so they live beneath both.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import UserError

# a race in MLflow's telemetry lost whole trials' metrics under concurrency
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# "Creating initial MLflow database tables..." is not news to a user
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
# nor is "View run ... at: http://..." for each of hundreds of child runs (the parent's link is printed once)
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

# one retry layer, ours, with a total deadline: MLflow's HTTP client retries 7 times with a backoff factor
# of 2 by default, which under our retries kept a sweep silent for minutes once its server was gone
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
for _key, _value in HTTP_ENV.items():
    os.environ.setdefault(_key, _value)
# how long one MLflow call is retried, and a server may stay silent, before the study gives up on it
DEADLINE_S = float(os.environ.get("LPWD_TRACKING_DEADLINE_S", 60))

T = TypeVar("T")
SUMMARY_OF = "summary_of"  # the tag of an arm's summary run: the arm


def resolve_uri(uri: str | None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else ./mlflow.db; SQLite paths made absolute
    (Ray runs trials in their own working directories)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    elif "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    return uri


SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def check_uri(uri: str | None) -> None:
    """A tracking URI MLflow can use, checked before anything is started (the server's reachability too)."""
    resolved = resolve_uri(uri)
    scheme = resolved.split("://", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES:
        raise UserError(f"tracking.uri: {resolved[:80]!r} has an unknown scheme {scheme!r}; use sqlite:///FILE, "
                        "http(s)://SERVER, a database URI, or set tracking.enabled=false")
    check_reachable(resolved)


def retry(call: Callable[[], T], what: str, attempts: int = 30, deadline_s: float = DEADLINE_S) -> T:
    """Run ``call``, retrying with jittered exponential backoff for at most ``attempts`` tries and
    ``deadline_s`` seconds (one HTTP request is cut at 10 s); raise after the last."""
    end = time.monotonic() + deadline_s
    for attempt in range(attempts):
        try:
            return call()
        except Exception as e:  # MLflow wraps locks and HTTP errors in several types
            pause = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
            if attempt == attempts - 1 or time.monotonic() + pause > end:
                raise RuntimeError(f"MLflow {what} failed after {attempt + 1} attempts: {e}") from e
            time.sleep(pause)
    raise AssertionError("unreachable")


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str) -> None:
    """Fail before any trial if a tracking server does not answer, or a database store's driver is missing."""
    if uri.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        try:  # builds the engine without connecting: it imports the database's driver package
            sqlalchemy.create_engine(uri)
        except (ImportError, sqlalchemy.exc.ArgumentError) as e:
            raise UserError(f"tracking.uri: {uri.split('://')[0]}:// needs its database driver ({e}); install it "
                            "into .venv (psycopg2-binary for postgresql, pymysql for mysql+pymysql), or use "
                            "another store") from None
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
            # /health is exempt from MLflow's Host-header check; the API a study uses is not
            api = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        except requests.RequestException as e:
            raise UserError(f"tracking.uri: MLflow server {uri} is unreachable ({type(e).__name__}); "
                            "start it, fix tracking.uri, or set tracking.enabled=false") from None
        if api.status_code == 403 and "Host" in api.text:
            host = uri.split("://", 1)[1].split("/", 1)[0]
            raise UserError(f"tracking.uri: MLflow server {uri} refuses the host name {host} (Invalid Host "
                            f"header); start it with --allowed-hosts {host}, or use its IP address")
        if api.status_code in (401, 403):
            raise UserError(f"tracking.uri: MLflow server {uri} refused the study ({api.status_code}); "
                            "set MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN")
