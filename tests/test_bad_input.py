"""Mistakes are refused before anything starts: exit 2, one line naming the key and the fix."""

import contextlib
from pathlib import Path

import pytest

from study.cli import main
from study.define.config import dump, load_config

from .conftest import shows_a_traceback

QUICK = str(Path(__file__).parents[1] / "configs" / "quick.yaml")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def run_cli(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    return rc, err


def existing_study(workdir):
    d = workdir / "studies" / "quick"
    d.mkdir(parents=True)
    (d / "study.yaml").write_text(dump(load_config(QUICK, ["search.lr=[0.5]"])))  # only its lr grid differs
    return d


CASES = [
    # (id, args, expected in the one-line message)
    ("unknown key", ["run", QUICK, "--set", "colour=blue"], "colour: unknown key"),
    ("unknown nested key", ["run", QUICK, "--set", "train.epoch=3"],
     "train.epoch: unknown key (did you mean train.epochs?); rename it"),
    ("mistyped variant", ["run", QUICK, "--set", "search.variants=[wd,lpdw]"], "(got 'lpdw'; did you mean 'lpwd'?)"),
    ("wrong type", ["run", QUICK, "--set", "train.epochs=many"], "train.epochs"),
    ("empty lr grid", ["run", QUICK, "--set", "search.lr=[]"], "search.lr"),
    ("lr zero", ["run", QUICK, "--set", "search.lr=[0.0]"], "search.lr"),
    ("lr negative", ["run", QUICK, "--set", "search.lr=[-1e-3]"], "search.lr"),
    ("negative decay", ["run", QUICK, "--set", "search.weight_decay=[-0.1]"], "search.weight_decay"),
    ("empty seeds", ["run", QUICK, "--set", "search.seeds=[]"], "search.seeds"),
    ("unknown variant", ["run", QUICK, "--set", "search.variants=[adamw]"], "search.variants"),
    ("unknown model", ["run", QUICK, "--set", "model.name=resnet_9000"], "model.name"),
    ("unknown dataset", ["run", QUICK, "--set", "data.name=mnist"], "data.name"),
    ("unknown lr schedule", ["run", QUICK, "--set", "train.lr_schedule=linear"], "train.lr_schedule"),
    ("unknown layer schedule", ["run", QUICK, "--set", "search.layer_schedule=cubic"], "search.layer_schedule"),
    ("unknown base", ["run", QUICK, "--set", "train.base=rmsprop"], "train.base"),
    ("fraction out of range", ["run", QUICK, "--set", "data.val_fraction=1.5"], "data.val_fraction"),
    ("label smoothing out of range", ["run", QUICK, "--set", "train.label_smoothing=1"], "train.label_smoothing"),
    ("batch size zero", ["run", QUICK, "--set", "train.batch_size=0"], "train.batch_size"),
    ("bad study name", ["run", QUICK, "--set", "name=a/b"], "name"),
    ("gpu without one", ["run", QUICK, "--set", "resources.gpu=0.5"], "resources.gpu"),
    ("storage not writable", ["run", QUICK, "--set", "storage=/proc/no-such-dir"], "storage"),
    ("storage scheme", ["run", QUICK, "--set", "storage=ftp://host/studies"], "storage: ftp://host/studies is neither"),
    ("status of no bucket", ["status", "s3://"], "s3:// names no bucket; use s3://BUCKET/PREFIX"),
    ("cifar without root", ["run", QUICK, "--set", "data.name=cifar10"], "data.root"),
    ("missing data archive", ["run", QUICK, "--set", "data.name=cifar10", "--set", "data.root=."],
     "python -m study data fetch cifar10"),
    ("tracking server unreachable", ["run", QUICK, "--set", "tracking.uri=http://127.0.0.1:9"], "tracking.uri"),
    ("config file missing", ["run", "nope.yaml"], "nope.yaml"),
    ("override without =", ["run", QUICK, "--set", "train.epochs"], "KEY=VALUE"),
    ("resume of a non-study", ["resume", "."], "not a study dir"),
    ("report of a non-study", ["report", "."], "not a study dir"),
    ("trial with unknown variant", ["trial", QUICK, "--variant", "adamw", "--lr", "1e-3", "--weight-decay", "0"],
     "variant"),
    ("trial with a negative seed", ["trial", QUICK, "--variant", "wd", "--lr", "1e-3", "--weight-decay", "0",
                                    "--seed", "-1"], "--seed -1: use a seed from 0"),
    ("trial with a schedule on pwd", ["trial", QUICK, "--variant", "pwd:linear", "--lr", "1e-3", "--weight-decay",
                                      "0"], "only lpwd takes a layer schedule"),
    ("trial with a mistyped schedule", ["trial", QUICK, "--variant", "lpwd:linear_normalised", "--lr", "1e-3",
                                        "--weight-decay", "0"], "(did you mean lpwd:linear_normalized?)"),
    ("a repeated seed", ["run", QUICK, "--set", "search.seeds=[0,0,1]"], "search.seeds: 0 listed more than once"),
    ("a seed plan's mistyped key", ["run", QUICK, "--set", "search.seeds={start: 3, stp: 2, max: 9}"],
     "search.seeds.stp: unknown key (did you mean search.seeds.step?)"),
    ("a seed plan starting below 3", ["run", QUICK, "--set", "search.seeds={start: 2, step: 1, max: 9}"],
     "search.seeds.start: Input should be greater than or equal to 3"),
    ("a seed plan that adds nothing", ["run", QUICK, "--set", "search.seeds={start: 5, step: 1, max: 5}"],
     "search.seeds: max (5) must be larger than start (5)"),
    ("a seed plan on Optuna", ["run", QUICK, "--set", "search.seeds={start: 3, step: 1, max: 5}", "--set",
                               "search.mode=optuna"], "an Optuna search takes a list of seeds"),
    ("a negative futility margin", ["run", QUICK, "--set", "verdict.min_effect=-1"], "verdict.min_effect"),
    ("YAML nested thousands deep", ["run", QUICK, "--set", "name=" + "[" * 5000 + "]" * 5000],
     "nested more than 32 levels deep"),
    ("a list as a key", ["run", QUICK, "--set", "name={[1]: 2}"], "a key must be a plain name"),
    ("data fetch into an unwritable folder", ["data", "fetch", "cifar10", "--root", "/proc/nope"],
     "give --root a folder you can write"),
    ("a database store without its driver", ["run", QUICK, "--set", "tracking.uri=postgresql://u@127.0.0.1/db"],
     "needs its database driver"),
    ("a CPU share Ray cannot count", ["run", QUICK, "--set", "resources.cpu=0.00001"], "resources.cpu"),
    ("infinite lr", ["run", QUICK, "--set", "search.lr=[.inf]"], "search.lr.0: Input should be a finite number"),
    ("infinite cpu", ["run", QUICK, "--set", "resources.cpu=.inf"], "resources.cpu: Input should be a finite number"),
    ("infinite warmup", ["run", QUICK, "--set", "train.warmup_epochs=.inf"], "train.warmup_epochs"),
    ("negative seed", ["run", QUICK, "--set", "search.seeds=[-1]"], "search.seeds.0"),
    ("seed beyond 32 bits", ["run", QUICK, "--set", "search.seeds=[4294967296]"], "search.seeds.0"),
    ("more cpus than cores", ["run", QUICK, "--set", "resources.cpu=512"], "resources.cpu=512 but this machine has"),
    ("name of dots", ["run", QUICK, "--set", "name=.."], "name: a name of dots"),
    ("unclosed list in --set", ["run", QUICK, "--set", "search.lr=[0.1"], "--set search.lr=[0.1 is not valid YAML"),
    ("empty item in --set", ["run", QUICK, "--set", "search.lr=[0,,1]"], "is not valid YAML"),
    ("alias in --set", ["run", QUICK, "--set", "name=&a [*a, *a]"], "aliases (*name) are not accepted"),
    ("unknown tracking scheme", ["run", QUICK, "--set", "tracking.uri=ftp://x/y"], "tracking.uri: 'ftp://x/y' has an unknown scheme"),
    ("bad timm kwargs", ["run", QUICK, "--set", "model.name=resnet18", "--set", "model.timm_kwargs={bogus: 1}"],
     "model: timm could not build resnet18"),
    ("a grid of a million trials", ["run", QUICK, "--set", "search.lr=" + str([1e-3 + i * 1e-6 for i in range(1000)]),
                                    "--set", "search.weight_decay=" + str([i / 100 for i in range(300)])],
     "planned trials (more than 5000)"),
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(workdir, capsys, args, expected):
    import ray

    rc, err = run_cli(args, capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err
    assert err.startswith("error: ") and not shows_a_traceback(err)
    assert not ray.is_initialized()
    assert not (workdir / "mlflow.db").exists()  # nothing was created before refusing


def test_incompatible_existing_study_is_not_overwritten(workdir, capsys):
    d = existing_study(workdir)
    before = (d / "study.yaml").read_text()
    rc, err = run_cli(["run", QUICK], capsys)
    assert rc == 2 and "different config" in err and "search.lr" in err and "--set name=" in err
    assert (d / "study.yaml").read_text() == before


@pytest.mark.parametrize("content,expected", [
    (b"name: [unclosed\n", "not valid YAML"),
    (b"name: quick\ntrain: {epochs: 3}\ntrain: {batch_size: 8}\n", "duplicate key 'train'"),
    (b"a: &x [1, 2]\nb: &y [*x, *x, *x]\nname: *y\n", "aliases (*name) are not accepted"),
    (b"name: qu\xe9ck\n", "is not UTF-8 text"),
], ids=["syntax", "duplicate key", "alias", "latin-1"])
def test_invalid_config_files(workdir, capsys, content, expected):
    import ray

    (workdir / "bad.yaml").write_bytes(content)
    rc, err = run_cli(["run", "bad.yaml"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not ray.is_initialized() and not (workdir / "studies").exists()


def test_corrupt_cifar_archive(workdir, capsys):
    (workdir / "cifar-10-python.tar.gz").write_bytes(b"this is not a tarball")
    rc, err = run_cli(["trial", QUICK, "--variant", "wd", "--lr", "1e-3", "--weight-decay", "0",
                       "--set", "data.name=cifar10", "--set", f"data.root={workdir}", "--set", "tracking.enabled=false"],
                      capsys)
    assert rc == 2 and "data.root" in err and "fetch" in err


def finished_study(workdir):
    """A study dir as the platform makes one (its config, definition and plan) with two finished seeds of wd
    and lpwd in one cell, as trials.csv would hold them."""
    from study.define.config import dump, load_config
    from study.run.plan import record_plan
    from study.store.studydir import record_definition
    from study.store.table import write_rows

    cfg = load_config(QUICK, ["search.variants=[wd,lpwd]", "search.layer_schedule=[linear]", "search.lr=[0.001]",
                              "search.weight_decay=[0.1]", "search.seeds=[0,1]", "search.controls=[]"])
    d = workdir / "studies" / "quick"
    d.mkdir(parents=True)
    (d / "study.yaml").write_text(dump(cfg))
    record_definition(d, cfg)
    record_plan(d, cfg)
    write_rows(d, [{"trial_id": f"t{i}", "experiment": "grid", "status": "TERMINATED", "arm": arm, "variant": arm,
                    "layer_schedule": "linear", "lr": 0.001, "weight_decay": 0.1, "seed": seed, "dataset": "digits",
                    "best_val_acc": 0.9 + 0.01 * i, "val_acc": 0.9, "test_acc_at_best_val": 0.9 + 0.01 * i,
                    "final_test_acc": 0.9, "paper_top10_test_acc": 0.9, "diverged": 0}
                   for i, (arm, seed) in enumerate([("wd", 0), ("wd", 1), ("lpwd", 0), ("lpwd", 1)])])
    return d


@pytest.mark.parametrize("option,value,expected", [
    ("--baseline", "nope", "--baseline 'nope' is not an arm of this study; use one of ['wd', 'lpwd']"),
    ("--baseline", "lpdw", "--baseline 'lpdw' is not an arm of this study (did you mean 'lpwd'?)"),
    ("--metric", "test_acc", "--metric 'test_acc' is not a metric of this study"),
    # an exact test whose smallest p-value (2 / 2^2) cannot pass the correction draws maps without stars
    ("--test", "signflip", "--test signflip: with 2 seeds its smallest p-value is 0.5, which cannot pass the holm "
                           "correction over 1 cells at α = 0.05; use --test t, or run at least 6 seeds"),
])
def test_report_options_are_checked_against_the_study(workdir, capsys, option, value, expected):
    d = finished_study(workdir)
    rc, err = run_cli(["report", str(d), option, value], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and expected in err
    assert not (d / "report.html").exists()


def test_report_out_that_cannot_be_written_is_one_line(workdir, capsys):
    d = finished_study(workdir)
    rc, err = run_cli(["report", str(d), "--out", "/proc/nope"], capsys)
    assert rc == 2 and "give --out a folder you can write" in err and len(err.splitlines()) == 1, err


def test_report_accepts_adamw_for_wd_and_writes_where_asked(workdir, capsys):
    d = finished_study(workdir)
    rc = main(["report", str(d), "--baseline", "adamw", "--out", str(workdir / "elsewhere")])
    out = capsys.readouterr().out
    assert rc == 0 and "lpwd vs AdamW (wd):" in out
    assert (workdir / "elsewhere" / "report.html").exists() and not (d / "report.html").exists()


def test_an_edited_study_yaml_is_refused(workdir, capsys):
    d = finished_study(workdir)
    edited = (d / "study.yaml").read_text().replace("epochs: 10", "epochs: 9")
    assert edited != (d / "study.yaml").read_text()
    (d / "study.yaml").write_text(edited)
    for command in (["report", str(d)], ["resume", str(d)], ["status", str(d)]):
        rc, err = run_cli(command, capsys)
        assert rc == 2 and "differs from the config" in err and "train.epochs" in err, (command, err)
    assert not (d / "report.html").exists()


@contextlib.contextmanager
def a_driver_holding(d):
    """Another process that owns the study dir's lock, as a running driver does; yields its pid."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from study.store.studydir import owned\n"
                               "with owned(Path(sys.argv[1]), 'run'):\n print('held', flush=True); time.sleep(60)",
                               str(d)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_driver_is_refused_while_the_first_owns_the_study(workdir, capsys):
    d = finished_study(workdir)
    with a_driver_holding(d) as pid:
        rc, err = run_cli(["report", str(d)], capsys)
        assert rc == 2 and f"is in use by a study run (pid {pid}" in err and len(err.splitlines()) == 1
    # the kernel dropped the lock with its holder: nothing stale to clean up
    assert main(["report", str(d), "--out", str(workdir / "after")]) == 0


def test_a_changed_tracking_store_is_refused_on_resume(workdir, capsys):
    import json

    import ray

    d = finished_study(workdir)
    (d / "mlflow_parent.json").write_text(json.dumps({"uri": f"sqlite:///{workdir}/first.db", "experiment_id": "1",
                                                      "parent_run_id": "abc"}))
    rc, err = run_cli(["resume", str(d)], capsys)
    assert rc == 2 and "tracking.uri:" in err and "first.db" in err
    assert not ray.is_initialized()


def cifar_folder(root, labels=None, payload=None):
    """A CIFAR-10 folder in the published format: tiny random batches, or ones with given labels / pickles."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": np.zeros((4, 3072), np.uint8), b"labels": labels or [0, 1, 2, 3]}
        (folder / name).write_bytes(payload if payload is not None else pickle.dumps(entry))


class RunsCode:
    """A pickle that runs a shell command when loaded without restrictions."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case", ["labels out of range", "code in the pickle"])
def test_cifar_data_is_checked_and_never_runs_code(workdir, capsys, case):
    import pickle

    import ray

    marker = workdir / "pwned"
    if case == "labels out of range":
        cifar_folder(workdir, labels=[0, 1, 2, 12])
        expected = "labels run 0..12, expected 0..9"
    else:
        cifar_folder(workdir, payload=pickle.dumps(RunsCode(marker)))
        expected = "posix.system is not data"
    from study.run.data import load_raw

    load_raw.cache_clear()
    rc, err = run_cli(["run", QUICK, "--set", "data.name=cifar10", "--set", f"data.root={workdir}"], capsys)
    assert rc == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not marker.exists() and not ray.is_initialized()


def test_checkpoints_load_no_code_and_bad_ones_fall_back(tmp_path, capsys):
    import torch
    from pyarrow.fs import LocalFileSystem

    from study.run.sweep import RayReporter

    marker = tmp_path / "pwned"
    evil = tmp_path / "checkpoint_000001"
    evil.mkdir()
    torch.save({"model": RunsCode(marker)}, evil / "state.pt")
    assert RayReporter._load(LocalFileSystem(), str(evil), "t") is None and not marker.exists()
    partial = tmp_path / "checkpoint_000002"
    partial.mkdir()
    torch.save({"model": {}, "epoch": 3}, partial / "state.pt")  # unpickles, but is not a trial checkpoint
    assert RayReporter._load(LocalFileSystem(), str(partial), "t") is None
    assert "lacks" in capsys.readouterr().err


def test_a_copied_study_reports_without_writing_into_the_originals_mlflow_run(workdir, capsys):
    import json
    import shutil

    d = finished_study(workdir)
    (d / "mlflow_parent.json").write_text(json.dumps({"uri": f"sqlite:///{workdir}/never.db", "experiment_id": "1",
                                                      "parent_run_id": "abc", "study_dir": str(d.resolve())}))
    copy = workdir / "elsewhere" / "quick"
    shutil.copytree(d, copy)
    assert main(["report", str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"this study dir is a copy of {d.resolve()}" in out and (copy / "report.html").exists()
    assert not (workdir / "never.db").exists()  # the original's store was never opened


@pytest.mark.parametrize("link", ["robustness.json", ".study.lock", "trials.csv"])
def test_a_study_dir_with_a_symbolic_link_is_refused_and_its_target_untouched(workdir, capsys, link):
    """A study dir received as an archive: a link inside it must not make a write land in the user's files."""
    d = finished_study(workdir)
    victim = workdir / "precious.txt"
    victim.write_text("keep me")
    if (d / link).exists():
        (d / link).rename(workdir / f"{link}.orig")
    (d / link).symlink_to(victim)
    for command in (["report", str(d)], ["resume", str(d)], ["status", str(d)]):
        rc, err = run_cli(command, capsys)
        assert rc == 2 and f"{link} is a symbolic link" in err and len(err.splitlines()) == 1, (command, err)
    assert victim.read_text() == "keep me"


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="a read-only bind mount needs root (unshare)")
def test_a_read_only_study_dir_reports_elsewhere(workdir):
    """Read-only for everyone, root included: the study dir bind-mounted read-only in a private mount
    namespace, and the report written to --out elsewhere."""
    import subprocess
    import sys

    d = finished_study(workdir)
    out = workdir / "elsewhere"
    mount = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    no_png = {**__import__("os").environ, "BROWSER_PATH": "/nonexistent"}  # HTML is enough here: quicker
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, str(d),
                           sys.executable, "-m", "study", "report", str(d), "--out", str(out)],
                          capture_output=True, text=True, cwd=workdir, env=no_png)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "robustness.json").exists() and not (d / "robustness.json").exists()


def test_study_trial_touches_no_study_and_logs_a_run_of_its_own(workdir, capsys):
    """A cell tried by hand: no study dir, nothing in the study's experiment; its own run, linked."""
    from mlflow.tracking import MlflowClient

    rc = main(["trial", QUICK, "--variant", "lpwd:linear_normalized", "--lr", "3e-3", "--weight-decay", "0.5",
               "--set", "train.epochs=1", "--set", "tracking.uri=sqlite:///mlflow.db"])
    out = capsys.readouterr().out
    assert rc == 0 and not (workdir / "studies").exists()
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert client.get_experiment_by_name("quick") is None
    (run,) = client.search_runs([client.get_experiment_by_name("quick trials").experiment_id])
    assert "mlflow.parentRunId" not in run.data.tags and run.data.params["layer_schedule"] == "linear_normalized"
    assert f"/runs/{run.info.run_id}" in out and "epoch   0" in out and "best val" in out


def test_damaged_small_files_degrade_instead_of_crashing(workdir, capsys, monkeypatch):
    from study.store.table import reports_in

    trial = workdir / "trial"
    trial.mkdir()
    good = '{"epoch": 0, "val_acc": 0.5}\n{"epoch": 1, "val_acc": 0.6}\n'
    for cut in ['{"epoch": 2, "val', "12", '{"val_acc": 0.7}']:  # cut mid-value, or where it still parses
        (trial / "result.json").write_text(good + cut)
        assert [r["epoch"] for r in reports_in(trial)] == [0, 1], cut
    (trial / "result.json").write_bytes(good.encode() + '{"epoch": 2, "note": "é'.encode()[:-1])  # mid-character
    assert [r["epoch"] for r in reports_in(trial)] == [0, 1]

    d = finished_study(workdir)
    (d / "mlflow_parent.json").write_text('{"uri": "sqlite:///x.db", "experi')
    rc, err = run_cli(["resume", str(d)], capsys)
    assert rc == 2 and "mlflow_parent.json is damaged" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent")  # no PNGs: the HTML report is enough here
    assert main(["report", str(d)]) == 0  # the report is written; only MLflow is left out, said once
    assert "not attached to MLflow" in capsys.readouterr().out and (d / "robustness.json").exists()


def test_a_server_that_refuses_the_host_name_is_one_line_before_anything(workdir, capsys, mlflow_server):
    """MLflow 3's server answers 403 "Invalid Host header" to a host name it was not told to allow
    (its /health answers all the same): the study says which --allowed-hosts to start it with."""
    import socket

    host = socket.gethostname()
    try:
        if not socket.gethostbyname(host).startswith("127."):
            pytest.skip(f"{host} does not resolve to this machine's loopback")
    except OSError:
        pytest.skip(f"{host} does not resolve")
    uri = mlflow_server.replace("127.0.0.1", host)
    rc, err = run_cli(["run", QUICK, "--set", f"tracking.uri={uri}"], capsys)
    assert rc == 2 and f"start it with --allowed-hosts {host}:" in err and len(err.splitlines()) == 1, err
    assert not (workdir / "studies").exists()


def test_a_damaged_pretrained_checkpoint_and_a_silent_ray_address_are_one_line(workdir, capsys, monkeypatch):
    broken = workdir / "weights.pth"
    broken.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    rc, err = run_cli(["run", QUICK, "--set", "model.name=resnet18", "--set", "model.pretrained=true",
                       "--set", f"model.pretrained_path={broken}"], capsys)
    assert rc == 2 and "does not load as a checkpoint" in err and len(err.splitlines()) == 1, err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # nothing listens on the discard port
    rc, err = run_cli(["run", QUICK], capsys)
    assert rc == 2 and "RAY_ADDRESS=127.0.0.1:9: no Ray cluster answers there" in err, err
    assert not (workdir / "studies").exists()


def test_status_names_arms_whole_and_offers_resume_only_without_a_driver(workdir, capsys, monkeypatch):
    from study.store.table import read_rows, write_rows

    d = finished_study(workdir)
    rows = read_rows(d)
    rows[-1].update(status="RUNNING", arm="lpwd:linear_normalized", layer_schedule="linear_normalized")
    write_rows(d, rows)
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal, or a log
    assert main(["status", str(d)]) == 0
    out = capsys.readouterr().out
    assert "lpwd:linear_normalized" in out and "resume with: " in out and f"resume {d}" in out, out
    with a_driver_holding(d) as pid:
        assert main(["status", str(d)]) == 0
        out = capsys.readouterr().out
        assert f"running: a study run (pid {pid}" in out and "resume with" not in out, out


def test_ui_on_a_port_in_use_is_one_line_naming_another(workdir, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["ui", "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and f"--port {port}:" in err and f"--port {port + 1}" in err, err


def test_every_argument_of_every_command_says_what_it_is():
    import argparse

    from study.cli import _parser

    def commands(parser, path=("study",)):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, (*path, name))
        yield " ".join(path), parser

    for name, parser in commands(_parser()):
        bare = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not bare, f"{name}: {bare} have no help"
    status = _parser()._subparsers._group_actions[0].choices["status"].format_help()
    assert "s3://BUCKET/PREFIX/NAME" in status
    assert "(default: 5000)" in _parser()._subparsers._group_actions[0].choices["ui"].format_help()


def test_a_set_mistake_names_the_set_and_shows_the_list_spelling(tmp_path):
    """The file is fine: the line names the --set that is wrong, and a list given as a scalar gets its spelling."""
    from study.define.config import load_config
    from study.errors import UserError

    with pytest.raises(UserError) as e:
        load_config(QUICK, ["search.lr=0.003"])
    assert str(e.value) == ("config error in --set search.lr=0.003: search.lr: Input should be a valid list (got 0.003); "
                            "a list is written in brackets: --set search.lr=[0.003]")
    with pytest.raises(UserError) as e:
        load_config(QUICK, ["train.epoch=3"])
    assert str(e.value).startswith("config error in --set train.epoch=3: train.epoch: unknown key (did you mean "
                                   "train.epochs?); rename it in --set")
