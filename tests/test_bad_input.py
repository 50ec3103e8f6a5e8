"""Mistakes are refused before anything starts: exit 2, one line naming the key and the fix."""

from pathlib import Path

import pytest
import yaml

from study.cli import main

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
    (d / "study.yaml").write_text(yaml.safe_dump({"name": "quick", "search": {"lr": [0.5]}}))
    return d


CASES = [
    # (id, args, expected in the one-line message)
    ("unknown key", ["run", QUICK, "--set", "colour=blue"], "colour: unknown key"),
    ("unknown nested key", ["run", QUICK, "--set", "train.epoch=3"], "train.epoch: unknown key"),
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
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(workdir, capsys, args, expected):
    import ray

    rc, err = run_cli(args, capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not ray.is_initialized()
    assert not (workdir / "mlflow.db").exists()  # nothing was created before refusing


def test_incompatible_existing_study_is_not_overwritten(workdir, capsys):
    d = existing_study(workdir)
    before = (d / "study.yaml").read_text()
    rc, err = run_cli(["run", QUICK], capsys)
    assert rc == 2 and "different config" in err and "search.lr" in err and "--set name=" in err
    assert (d / "study.yaml").read_text() == before


def test_invalid_yaml(workdir, capsys):
    (workdir / "bad.yaml").write_text("name: [unclosed\n")
    rc, err = run_cli(["run", "bad.yaml"], capsys)
    assert rc == 2 and "not valid YAML" in err


def test_corrupt_cifar_archive(workdir, capsys):
    (workdir / "cifar-10-python.tar.gz").write_bytes(b"this is not a tarball")
    rc, err = run_cli(["trial", QUICK, "--variant", "wd", "--lr", "1e-3", "--weight-decay", "0",
                       "--set", "data.name=cifar10", "--set", f"data.root={workdir}", "--set", "tracking.enabled=false"],
                      capsys)
    assert rc == 2 and "data.root" in err and "fetch" in err


def finished_study(workdir):
    """A study dir with two finished seeds of wd and lpwd in one cell, as trials.csv would hold them."""
    from study.config import dump, load_config
    from study.table import write_rows

    cfg = load_config(QUICK, ["search.variants=[wd,lpwd]", "search.layer_schedule=[linear]", "search.lr=[0.001]",
                              "search.weight_decay=[0.1]", "search.seeds=[0,1]"])
    d = workdir / "studies" / "quick"
    d.mkdir(parents=True)
    (d / "study.yaml").write_text(dump(cfg))
    write_rows(d, [{"trial_id": f"t{i}", "experiment": "grid", "status": "TERMINATED", "arm": arm, "variant": arm,
                    "layer_schedule": "linear", "lr": 0.001, "weight_decay": 0.1, "seed": seed, "dataset": "digits",
                    "best_val_acc": 0.9 + 0.01 * i, "val_acc": 0.9, "test_acc_at_best_val": 0.9 + 0.01 * i,
                    "final_test_acc": 0.9, "paper_top10_test_acc": 0.9, "diverged": 0}
                   for i, (arm, seed) in enumerate([("wd", 0), ("wd", 1), ("lpwd", 0), ("lpwd", 1)])])
    return d


@pytest.mark.parametrize("option,value,expected", [
    ("--baseline", "nope", "--baseline 'nope' is not an arm of this study; use one of ['wd', 'lpwd']"),
    ("--metric", "test_acc", "--metric 'test_acc' is not a metric of this study"),
])
def test_report_options_are_checked_against_the_study(workdir, capsys, option, value, expected):
    d = finished_study(workdir)
    rc, err = run_cli(["report", str(d), option, value], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and expected in err
    assert not (d / "report.html").exists()


def test_report_accepts_adamw_for_wd_and_writes_where_asked(workdir, capsys):
    d = finished_study(workdir)
    rc = main(["report", str(d), "--baseline", "adamw", "--out", str(workdir / "elsewhere")])
    out = capsys.readouterr().out
    assert rc == 0 and "lpwd vs wd:" in out
    assert (workdir / "elsewhere" / "report.html").exists() and not (d / "report.html").exists()
