"""Real Ray clusters that the tests start and stop: ``ray job submit`` to a head, and a study on three
nodes that loses one. Every node runs in its own process group and is stopped by that group alone."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import (PYTHON, ROOT, free_port, ray_processes, short_tmpdir, stop_ray, study_env, tiny_args,
                       wait_until_answers)
from .test_resilience import freeze_a_trial_mid_training, newest_checkpoint_in

pytestmark = pytest.mark.slow
RAY = str(Path(PYTHON).parent / "ray")


# a sequential seed plan whose first look leaves its questions open (λ too small to tell the arms apart, no
# curtailment): the job runs both waves and its looks unattended
SEQUENTIAL = ["--set", "search.seeds={start: 3, step: 1, max: 4}", "--set", "search.weight_decay=[0.001,0.003]",
              "--set", "verdict.curtail=false"]


@pytest.mark.parametrize("plan", [[], SEQUENTIAL], ids=["fixed seeds", "sequential plan"])
def test_ray_job_submit_runs_a_study(tmp_path, plan):
    """docs/cluster.md's recipe as written: token authentication on, the same token and mode given to
    the head and to the machine that submits; a sequential study runs to its decision the same way."""
    import secrets

    temp = short_tmpdir("h")
    env = study_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_TMPDIR=temp)
    dash = free_port()
    start = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--temp-dir={temp}", "--num-cpus=2", "--disable-usage-stats"]
    # its own process group: the test stops this head and nothing else (never `ray stop`, which would
    # also end a user's own running study)
    head = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_until_answers(f"http://127.0.0.1:{dash}/api/version", head, 120, env["RAY_AUTH_TOKEN"]), \
            "the Ray head did not start"
        args = tiny_args("job", "--set", f"storage={tmp_path}/studies", "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                         "--set", "search.weight_decay=[0.0,0.1]", "--set", "train.epochs=2", *plan, "--no-report")
        args[1] = "configs/quick.yaml"  # relative to the uploaded working dir
        job = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(ROOT),
                              "--", PYTHON, "-m", "study", *args], env=env, capture_output=True, text=True, timeout=400)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in (job.stdout + job.stderr)
        # what to run next, in the form the study was started: a job (the head's interpreter path means
        # nothing to the machine that submits)
        assert "ray job submit --address http://HEAD:8265 --working-dir . -- python -m study status" in job.stdout
        rows = list(csv.DictReader(open(tmp_path / "studies" / "job" / "trials.csv")))
        if plan:  # seeds 0-2, a look, then seed 3: 2 η × 2 λ × 2 arms a seed
            assert "at look 1 of 2 (3 seeds) undecided" in job.stdout, job.stdout[-3000:]
            assert sorted({(r["experiment"], r["seed"]) for r in rows}) == [
                ("grid", "0"), ("grid", "1"), ("grid", "2"), ("grid-wave2", "3")]
            assert len(rows) == 2 * 2 * 2 * 4 and all(r["status"] == "TERMINATED" for r in rows)
        else:
            assert len(rows) == 2 * 2 * 2 and all(r["status"] == "TERMINATED" for r in rows)
        assert max(float(r["test_acc_at_best_val"]) for r in rows) > 0.5
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        stop_ray(temp)  # anything of this head's that left its group (found by its RAY_TMPDIR), and only that


class LocalCluster:
    """Ray nodes on this machine (1 CPU each), each in a process group of its own.

    A node may be started in a private mount namespace with a tmpfs over ``hide``: a
    node of a real cluster that does not mount the driver's folder.
    """

    def __init__(self):
        self.temp = short_tmpdir("3")
        self.env = study_env(RAY_AUTH_MODE="disabled", RAY_TMPDIR=self.temp)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []

    def start(self, head: bool = False, hide: Path | None = None) -> subprocess.Popen:
        # every port chosen here, none left to the node: nodes on one machine must not pick the same one
        ports = [f"--{name}-port={free_port()}" for name in ("node-manager", "object-manager", "dashboard-agent-listen",
                                                             "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")]
        where = ["--head", f"--port={self.port}", f"--temp-dir={self.temp}", "--include-dashboard=false",
                 f"--ray-client-server-port={free_port()}"] if head else [f"--address={self.address}"]
        command = [RAY, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                   *where, *ports]
        if hide is not None:
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount -t tmpfs none "$0" && exec "$@"', str(hide), *command]
        log = open(Path(self.temp) / f"node{len(self.nodes)}.log", "w")
        node = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, count: int, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env, capture_output=True,
                                 text=True, timeout=120).stdout
            if out.count(" node_") >= count and "Pending" in out:
                active = out.split("Active:", 1)[-1].split("Pending", 1)[0]
                if active.count("node_") >= count:
                    return
            time.sleep(1)
        logs = "".join(f"\n{p.name}: " + p.read_text()[-1500:] for p in sorted(Path(self.temp).glob("node*.log")))
        pytest.fail(f"the cluster never had {count} nodes:{logs}")

    def stop(self) -> None:
        for node in self.nodes:
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait()
        stop_ray(self.temp)  # anything of these nodes' that left their groups (found by RAY_TMPDIR), and only that


@pytest.fixture
def cluster():
    c = LocalCluster()
    yield c
    c.stop()


EPOCHS = 6


def test_a_study_on_three_nodes_loses_one_and_finishes_every_trial_once(cluster, tmp_path):
    cluster.start(head=True)
    cluster.wait_for_nodes(1)
    doomed = cluster.start()
    cluster.wait_for_nodes(2)
    cluster.start()
    cluster.wait_for_nodes(3)
    args = tiny_args("nodes", "--set", "search.weight_decay=[0.1,0.3,1.0]", "--set", f"train.epochs={EPOCHS}",
                     "--set", "train.checkpoint_every_s=0", "--set", "max_failures=3", "--no-report")
    driver = subprocess.Popen([PYTHON, "-m", "study", *args], cwd=tmp_path, env={**cluster.env, "RAY_ADDRESS": cluster.address},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    study_dir = tmp_path / "studies" / "nodes"
    # kill the doomed node while a trial on it has a checkpoint and epochs left to train: its one worker
    # is frozen there first, so that trial is the one lost with the node (1 CPU: the only one on it)
    def on_doomed():
        return [pid for pid in ray_processes(cluster.temp, b"ray::ImplicitFunc") if _descends_from(pid, doomed.pid)]

    victim, _ = freeze_a_trial_mid_training(on_doomed, newest_checkpoint_in(study_dir), epochs=EPOCHS)
    os.killpg(doomed.pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    rows = list(csv.DictReader(open(study_dir / "trials.csv")))
    assert len(rows) == len({r["trial_id"] for r in rows}) == 2 * 2 * 3  # every trial exactly once
    assert all(r["status"] == "TERMINATED" and r["epochs_done"] == str(EPOCHS) for r in rows)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("nodes")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=100) if "ray_trial_id" in r.data.tags]
    assert sorted(r.data.tags["ray_trial_id"] for r in runs) == sorted(r["trial_id"] for r in rows)  # one run each
    for run in runs:  # MLflow gets an epoch when it is checkpointed: none twice, none missing
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "images_per_s"))
        assert sorted(set(steps)) == list(range(EPOCHS)), steps
        # a lost trial may retrain only the epoch that was in flight on the lost node
        assert len(steps) <= EPOCHS + (run.data.tags["ray_trial_id"] == victim), steps


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` is a descendant of ``ancestor`` (a trial's worker of a node's ``ray start``)."""
    while pid > 1:
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
        if pid == ancestor:
            return True
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs in a private mount namespace (unshare needs root)")
def test_a_node_that_cannot_see_the_study_dir_stops_the_study_before_any_trial(cluster, tmp_path):
    storage = tmp_path / "studies"
    storage.mkdir()
    cluster.start(head=True)
    cluster.wait_for_nodes(1)
    cluster.start(hide=storage)  # this node mounts something else over the driver's storage folder
    cluster.wait_for_nodes(2)
    proc = subprocess.run([PYTHON, "-m", "study", *tiny_args("hidden", "--set", f"storage={storage}")], cwd=tmp_path,
                          env={**cluster.env, "RAY_ADDRESS": cluster.address}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, proc.stderr[-3000:]
    assert error[0].startswith(f"error: storage: {storage / 'hidden'} is not visible from Ray node ")
    assert error[0].endswith("(one of 2 nodes); set storage to a folder every node mounts (NFS) or to object "
                             "storage (s3://bucket/prefix), so checkpoints and resume work")
    assert not list((storage / "hidden").glob("grid*"))  # no trial
    assert not (storage / "hidden" / "mlflow_parent.json").exists()  # no MLflow run
