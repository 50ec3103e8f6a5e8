"""One trial in-process: determinism, CIFAR-format loading, augmentation, lr schedules."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from study.define.config import validate
from study.run.data import augment_batch, load_dataset, load_raw, write_cifar10_archive
from study.run.trial import PrintReporter, lr_factor, run_trial


def config(**sections):
    raw = {"name": "t", "train": {"epochs": 2, "batch_size": 64}, "tracking": {"enabled": False}}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return validate(raw)


def test_same_seed_same_numbers_different_seed_different():
    cfg = config()
    cell = {"variant": "lpwd", "lr": 3e-3, "weight_decay": 0.5}
    a = run_trial(cfg, {**cell, "seed": 0}, PrintReporter())
    b = run_trial(cfg, {**cell, "seed": 0}, PrintReporter())
    c = run_trial(cfg, {**cell, "seed": 1}, PrintReporter())
    keys = ["train_loss", "val_acc", "test_acc", "r_op", "weight_norm"]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert [a[k] for k in keys] != [c[k] for k in keys]


def test_cautious_weight_decay_trains_as_a_study_arm_and_reports_its_decay_mass():
    cfg = config()
    cwd = run_trial(cfg, {"variant": "cwd", "lr": 3e-3, "weight_decay": 0.5, "seed": 0}, PrintReporter())
    wd = run_trial(cfg, {"variant": "wd", "lr": 3e-3, "weight_decay": 0.5, "seed": 0}, PrintReporter())
    assert 0 < cwd["decay_fraction"] < 1 and wd["decay_fraction"] == 1.0
    assert cwd["weight_norm"] > wd["weight_norm"]  # it decays a fraction of what wd decays
    assert cwd["val_acc"] > 0.5


def test_cifar_format_archive_loads_and_trains(tmp_path):
    write_cifar10_archive(tmp_path, n_train=60, n_test=20)
    load_raw.cache_clear()
    train_x, train_y, test_x, test_y, classes = load_raw("cifar10", str(tmp_path))
    assert train_x.shape == (60, 3, 32, 32) and train_x.dtype == np.uint8 and classes == 10
    assert test_x.shape == (20, 3, 32, 32) and test_y.shape == (20,)
    data = load_dataset("cifar10", str(tmp_path), 0.2, seed=3, device=torch.device("cpu"))
    assert len(data.train) == 48 and len(data.val) == 12 and len(data.test) == 20 and data.augment
    assert data.train.x.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # normalised with the training part's stats
    # the validation split is held out of the training set, seeded by the trial's seed
    other = load_dataset("cifar10", str(tmp_path), 0.2, seed=4, device=torch.device("cpu"))
    assert not torch.equal(data.val.y, other.val.y) or not torch.equal(data.val.x, other.val.x)
    cfg = config(data={"name": "cifar10", "root": str(tmp_path)}, train={"epochs": 1})
    out = run_trial(cfg, {"variant": "wd", "lr": 1e-3, "weight_decay": 0.1, "seed": 0}, PrintReporter())
    assert out["diverged"] == 0 and 0 <= out["test_acc"] <= 1


def test_augmentation_crops_and_flips_whole_batches():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    seen_flip = seen_shift = False
    for _ in range(20):
        out = augment_batch(x, gen)
        assert out.shape == x.shape
        for i in range(2):
            img = out[i]
            # every crop is a shifted window of the zero-padded image, maybe mirrored
            for candidate, flipped in ((img, False), (img.flip(2), True)):
                padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
                hits = [(dy, dx) for dy in range(9) for dx in range(9)
                        if torch.equal(padded[:, dy:dy + 32, dx:dx + 32], candidate)]
                if hits:
                    seen_flip |= flipped
                    seen_shift |= hits[0] != (4, 4)
                    break
            else:
                pytest.fail("augmented image is not a crop of the padded input")
    assert seen_flip and seen_shift


@pytest.mark.parametrize("schedule,expected", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("step", [0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]),
])
def test_lr_schedules_with_warmup(schedule, expected):
    cfg = config(train={"epochs": 4, "lr_schedule": schedule, "warmup_epochs": 1})
    f = lr_factor(cfg, steps_per_epoch=2)
    assert [f(t) for t in range(8)] == pytest.approx(expected)


def test_cosine_schedule_decays_to_zero():
    cfg = config(train={"epochs": 2, "lr_schedule": "cosine"})
    f = lr_factor(cfg, steps_per_epoch=50)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(99) < 1e-3


UNRAISABLES = """
import weakref
from study.run.worker_setup import quiet_worker
if {quiet}:
    quiet_worker(); quiet_worker()

class Owner: pass
def stopped(_): raise SystemExit(1)  # what Ray's SIGTERM handler raises inside a weakref callback
def broken(_): raise ValueError("a real bug")
a, b = Owner(), Owner()
keep = weakref.ref(a, stopped), weakref.ref(b, broken)
del a, b
print("worker carried on")
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_a_stopped_trial_worker_prints_no_systemexit_traceback_but_real_errors_still_print(quiet):
    proc = subprocess.run([sys.executable, "-c", UNRAISABLES.format(quiet=quiet)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout == "worker carried on\n"
    assert "ValueError: a real bug" in proc.stderr
    assert ("SystemExit" in proc.stderr) is not quiet  # without the hook Python prints it: the test can fail
    assert proc.stderr.count("Exception ignored in") == (1 if quiet else 2)  # installed once, however often called


WORKER_PROBE = """
import ray
from study.run.sweep import init_ray
init_ray()

@ray.remote
def hook_installed():
    import sys
    return getattr(sys.unraisablehook, "drops_system_exit", False)

print("hook in a fresh worker:", ray.get(hook_installed.remote()))
"""


@pytest.mark.slow
def test_every_ray_worker_drops_the_systemexit_print_from_its_start():
    """Tune may stop a worker before any trial ran in it (a full disk ends the sweep early): the hook is Ray's
    worker_process_setup_hook, so a task that is not a trial already finds it installed."""
    from .conftest import ROOT, no_ray_left, short_tmpdir, study_env

    ray_tmp = short_tmpdir("w")
    proc = subprocess.run([sys.executable, "-c", WORKER_PROBE], cwd=ROOT, env=study_env(RAY_TMPDIR=ray_tmp),
                          capture_output=True, text=True, timeout=300)
    no_ray_left(ray_tmp)
    assert proc.returncode == 0 and "hook in a fresh worker: True" in proc.stdout, proc.stderr[-3000:]


def test_the_table_counts_a_trial_as_running_from_its_start_as_the_progress_bar_does():
    """Tune calls on_trial_start before it marks the trial RUNNING: the table must not write it PENDING
    (``study status`` read one trial fewer running than the bar showed)."""
    from types import SimpleNamespace

    from study.run.table_callback import TidyTable

    cell = {"arm": "lpwd", "variant": "lpwd", "layer_schedule": "linear", "lr": 1e-3, "weight_decay": 1.0, "seed": 0}
    trial = SimpleNamespace(trial_id="t1", status="PENDING", last_result={}, config={"cell": cell})
    table = TidyTable("grid", {"base": "adam", "model": "small_cnn", "dataset": "digits"})
    assert [r["status"] for r in table._rows(trial, started=trial)] == ["RUNNING"]
    assert [r["status"] for r in table._rows(trial)] == ["PENDING"]
