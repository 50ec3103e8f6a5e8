"""The benchmark scripts still run and print a complete, well-formed table.

Benchmarks are how speed claims in the README are checked, so they must not
rot. These runs are tiny (one round, one epoch) and assert only the shape of
what is printed: every row present, every ratio a finite positive number.
Wall-clock figures are never asserted.
"""

from __future__ import annotations

import math
import re
import subprocess
import time

import lpwd

from .conftest import PYTHON, ROOT, ray_processes, short_tmpdir, stop_ray, study_env

RATIO = re.compile(r"([0-9]+\.[0-9]+)x")


def run_benchmark(script: str, *args: str, cwd=ROOT, env=None) -> str:
    proc = subprocess.run([PYTHON, str(ROOT / "benchmarks" / script), *args], cwd=cwd, env=env or study_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def table_rows(out: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # drop the header


def test_optimizer_step_times_every_variant_and_the_floor():
    out = run_benchmark("optimizer_step.py", "--models", "resnet18", "--rounds", "1", "--warmup", "0")
    rows = table_rows(out)
    for base in ("adam", "sgd", "sgd, no momentum"):
        variants = [row[2] for row in rows if row[1] == base]
        assert variants[0].startswith("floor") and variants[1:] == list(lpwd.VARIANTS), variants
    for row in rows:
        ratios = [float(r) for r in RATIO.findall(" ".join(row))]
        assert ratios and all(math.isfinite(r) and r > 0 for r in ratios), row


def test_train_step_compares_each_variant_with_its_base_end_to_end():
    out = run_benchmark("train_step.py", "--models", "resnet18", "--batch", "4", "--steps", "1", "--rounds", "2",
                        "--bases", "adam", "lion")
    rows = table_rows(out)
    assert [row[:4] for row in rows] == [["resnet18", "eager", base, v] for base in ("adam", "lion") for v in ("lpwd", "cwd")]
    for row in rows:
        assert float(row[4]) > 0 and float(row[5]) > 0 and math.isfinite(float(RATIO.search(row[6]).group(1)))


def test_trial_throughput_compares_against_the_bare_loop():
    out = run_benchmark("trial_throughput.py", "--cases", "digits", "--epochs", "1", "--repeats", "1")
    (row,) = table_rows(out)
    assert row[0] == "small_cnn / digits"
    bare, trial = float(row[1]), float(row[2])
    assert bare > 0 and trial > 0 and float(RATIO.search(row[3]).group(1)) > 0


def test_sweep_overhead_runs_a_real_ray_sweep():
    ray_tmp = short_tmpdir("b")
    try:
        out = run_benchmark("sweep_overhead.py", "--trials", "1", "--epochs", "1", "--rounds", "1",
                            env=study_env(RAY_TMPDIR=ray_tmp, TMPDIR=ray_tmp))
        assert "1 epochs per trial" in out and "slope of 1 -> 3 trials" in out
        ratio = re.search(r"\*\*ratio in-process / study per trial\*\* \| \*\*(-?[0-9.]+) ", out)
        assert ratio and math.isfinite(float(ratio.group(1))), out
        deadline = time.time() + 20  # a clean exit stops the local Ray it started, within seconds
        while ray_processes(ray_tmp) and time.time() < deadline:
            time.sleep(0.5)
        assert not ray_processes(ray_tmp), "the benchmark's local Ray outlived it"
    finally:
        stop_ray(ray_tmp)


def test_gpu_study_skips_cleanly_without_cuda():
    import torch

    out = run_benchmark("gpu_study.py", "--cells", "2", "--epochs", "1", "--train-images", "512")
    if torch.cuda.is_available():
        assert "projected paper grid" in out
    else:
        assert "no CUDA device here; skipped" in out


def test_atomic_save_compares_against_the_plain_local_filesystem(tmp_path):
    out = run_benchmark("atomic_save.py", "--sizes-mb", "0.01", "1", "--rounds", "1",
                        env=study_env(BENCH_DIR=str(tmp_path)))
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["0.01 MB", "1 MB"]
    for row in rows:
        ratio = float(RATIO.search(row[3]).group(1))
        assert math.isfinite(ratio) and ratio > 0, row
    assert not list(tmp_path.iterdir())  # its scratch folder is gone
