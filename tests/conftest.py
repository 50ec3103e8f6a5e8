"""Real services for the tests, started and stopped by the tests themselves."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from study.store.table import read_rows

ROOT = Path(__file__).parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SCRATCH: list[str] = []


def short_tmpdir(tag: str) -> str:
    """A new dir right under /tmp, removed when the test session ends.

    Right under /tmp because Ray's socket paths below it must stay under 108 bytes; removed
    by the session because the Ray temp dirs, checkpoints and locks a killed study leaves
    there are ours to clean up, and nobody else's.
    """
    path = tempfile.mkdtemp(prefix=f"lpwd{tag}", dir="/tmp")
    _SCRATCH.append(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _remove_scratch_dirs():
    # studies run in this process seal their sweep state with the suite's key, not the user's
    os.environ["XDG_CONFIG_HOME"] = os.path.join(_shared_scratch(), "config")
    # weights the platform pretrains go to the suite's scratch cache, not the user's ~/.cache
    os.environ["LPWD_STUDY_CACHE"] = os.path.join(_shared_scratch(), "pretrained")
    yield  # every test has stopped its processes by now
    for path in _SCRATCH:
        shutil.rmtree(path, ignore_errors=True)


def study_env(**extra) -> dict:
    """A clean environment for a study subprocess: no MLflow/Ray settings of the user's, temp files in a scratch dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}, **extra)
    env["RAY_TMPDIR"] = extra.get("RAY_TMPDIR") or _shared_scratch()
    env["TMPDIR"] = extra.get("TMPDIR", env["RAY_TMPDIR"])
    # the seal key of a study's sweep state (study/store/seal.py): the suite's own, not the user's ~/.config
    env["XDG_CONFIG_HOME"] = extra.get("XDG_CONFIG_HOME") or os.path.join(_shared_scratch(), "config")
    env["LPWD_STUDY_CACHE"] = extra.get("LPWD_STUDY_CACHE") or os.path.join(_shared_scratch(), "pretrained")
    return env


@functools.cache
def _shared_scratch() -> str:
    return short_tmpdir("s")


def shows_a_traceback(text: str) -> bool:
    """A Python traceback, or a traceback's frames without their header (as Ray's "Unhandled error" prints them)."""
    return "Traceback" in text or '\n  File "' in text


def run_study_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run([PYTHON, "-m", "study", *args], cwd=cwd, env=env or study_env(), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"study {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def ray_processes(ray_tmp, title: bytes = b""):
    """Pids of this study's Ray processes (all inherit its RAY_TMPDIR), optionally by title prefix."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline, env = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(title) and f"RAY_TMPDIR={ray_tmp}".encode() in env:
            pids.append(int(proc.name))
    return pids


def stop_ray(ray_tmp):
    """Kill whatever the study's Ray left behind (helpers can outlive a killed driver) and check it is gone."""
    deadline = time.time() + 30
    while (pids := ray_processes(ray_tmp)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    assert not ray_processes(ray_tmp)


def no_ray_left(ray_tmp, timeout: float = 60):
    """A local study's Ray ends with its driver, however it ended: wait for that; if some stays, kill it and fail."""
    deadline = time.time() + timeout
    while ray_processes(ray_tmp) and time.time() < deadline:
        time.sleep(0.2)
    left = [(pid, (Path("/proc") / str(pid) / "cmdline").read_bytes()[:60]) for pid in ray_processes(ray_tmp)]
    stop_ray(ray_tmp)
    assert not left, f"Ray processes outlived their driver: {left}"


def ray_logs_left(ray_tmp, timeout: float = 60) -> list[str]:
    """The local Ray temp dirs (``ray-*``, its logs) left in ``ray_tmp`` once its removal had ``timeout`` s."""
    deadline = time.time() + timeout
    while list(Path(ray_tmp).glob("ray-*")) and time.time() < deadline:
        time.sleep(0.2)
    return [p.name for p in Path(ray_tmp).glob("ray-*")]


def listeners(pids) -> list[str]:
    """Local addresses (ip:port) that these processes listen on, from ``ss -ltnp``."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)]


def wait_until_answers(url: str, proc: subprocess.Popen, timeout: float, token: str | None = None) -> bool:
    """True once ``url`` answers 200; False if ``proc`` died or ``timeout`` seconds passed first.
    ``token``: a Ray cluster's authentication token, sent as its dashboard expects it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            if requests.get(url, timeout=2, headers=headers).ok:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (SQLite backend, one worker)."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
         "--artifacts-destination", str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=home, env=study_env(), stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    if not wait_until_answers(f"{url}/health", proc, 90):
        os.killpg(proc.pid, 9)
        raise RuntimeError("mlflow server did not start:\n" + (home / "server.log").read_text()[-2000:])
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no Chromium: scripts/setup.sh installs Debian's chromium (or set BROWSER_PATH)")
    return path


LAYOUT_PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const figs = [...document.querySelectorAll('.main-svg')].map(e => e.getBoundingClientRect().right);
  const fonts = {}, clipped = [];
  document.querySelectorAll('.js-plotly-plot').forEach(plot => {
    const box = plot.getBoundingClientRect();
    plot.querySelectorAll('text').forEach(t => {
      const r = t.getBoundingClientRect();
      if (!t.textContent.trim() || !r.width) return;
      const kind = t.closest('[class]').getAttribute('class').split(' ')[0];
      (fonts[kind] = fonts[kind] || []).push(parseFloat(getComputedStyle(t).fontSize));
      if (/title/.test(kind) && (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1))
        clipped.push(t.textContent);
    });
  });
  document.body.setAttribute('data-layout', JSON.stringify(
    {page: document.documentElement.scrollWidth, view: window.innerWidth, figs: figs, fonts: fonts, clipped: clipped,
     scrolls: [...document.querySelectorAll('.scroll')].filter(e => e.scrollWidth > e.clientWidth + 1).length}));
}, 1000));</script></body>"""


def layout_in_chromium(chromium: str, page: Path, width: int, scratch: Path) -> tuple[dict, str]:
    """(layout, DOM) of ``page`` in headless Chromium at ``width`` px: the page's scroll width, the
    window's, the right edge of every Plotly figure, the font sizes (px) of its texts by kind (the class
    Plotly gives them: ``xtick``, ``heatmap-label``, ``g-gtitle``, ...) and the titles that reach
    outside their figure, measured by the page itself once loaded."""
    import html
    import re

    probe = scratch / page.name
    probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE))
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                          f"--user-data-dir={scratch / 'profile'}", f"--window-size={width},1000",
                          "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(html.unescape(re.search(r'data-layout="([^"]*)"', dom).group(1))), dom


class ChromiumPage:
    """A page in headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands on fd 3, answers on fd 4, each JSON message ending in NUL), for what ``--dump-dom`` cannot tell:
    the layout of a page built by its own scripts, such as whether a text is cut by its cell."""

    def __init__(self, chromium: str, url: str, profile: Path, width: int = 1400, height: int = 1000):
        import fcntl

        commands, self._out = os.pipe()
        self._in, answers = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (commands, answers)]  # out of the way of 3 and 4

        def on_fds_3_and_4():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            preexec_fn=on_fds_3_and_4, pass_fds=(3, 4), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (commands, answers, *high):
            os.close(fd)
        self._buffer, self._id, self._session = b"", 0, None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
            self.call("Page.navigate", url=url)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        os.write(self._out, json.dumps({**message, **({"sessionId": self._session} if self._session else {})})
                 .encode() + b"\0")
        while True:  # events arrive in between; the answer carries our id
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed its DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def wait_for(self, expression: str, timeout: float = 120):
        """The value of a JavaScript expression once it is truthy (the page renders in its own time)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def close(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        os.close(self._in)
        os.close(self._out)


def tiny_args(name: str, *extra: str) -> list[str]:
    """A small but real grid study on digits."""
    return ["run", str(ROOT / "configs" / "quick.yaml"), "--set", f"name={name}", "--set", "train.epochs=3",
            "--set", "data.train_subset=null", "--set", "train.batch_size=128", "--set", "search.seeds=[0]",
            "--set", "search.variants=[wd,lpwd]", "--set", "search.layer_schedule=[linear]",
            "--set", "search.lr=[3.0e-3,3.0e-2]", "--set", "search.weight_decay=[0.0,0.1,100000.0]",
            "--set", "search.controls=[]", *extra]


# 8 trials x 4 epochs, all healthy, none shared (no lambda = 0), a checkpoint after every epoch
ARGS = ["--set", "search.lr=[3.0e-3]", "--set", "search.weight_decay=[0.1,0.3]", "--set", "search.seeds=[0,1]", "--set", "train.epochs=4",
        "--set", "train.checkpoint_every_s=0", "--no-report"]


def children(db, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if "ray_trial_id" in r.data.tags]  # trials (not the arms' summary runs)


def final_metrics(rows):
    return {(r["arm"], r["lr"], r["weight_decay"], r["seed"]): (r["val_acc"], r["test_acc_at_best_val"], r["train_loss"])
            for r in rows}


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The study of ARGS, uninterrupted: what every interrupted run must end with."""
    work = tmp_path_factory.mktemp("reference")
    run_study_cli(tiny_args("ref", *ARGS), work)
    return final_metrics(read_rows(work / "studies" / "ref"))
