"""Per-trial overhead of a sweep on local Ray against the same trainings back to back.

Runs N short digits trials twice with the same threads per trial:
  1. in one process, one after another (``run_trial`` with an in-memory checkpoint);
  2. through ``study`` on local Ray, one trial at a time (``resources.cpu`` = all
     cores), with per-epoch checkpoints, the tidy table and MLflow logging to SQLite.
Ray start-up and the study's one-off MLflow set-up are timed apart; the
overhead per trial is (sweep wall time - in-process wall time) / N.

    python benchmarks/sweep_overhead.py [--trials 16] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from study.config import trial_grid, validate
from study.sweep import init_ray, prepare_study_dir, run_study
from study.trial import run_trial
from study.tracking import start_study

from trial_throughput import CheckpointInMemory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    os.chdir(work)
    lrs = [1e-3 * (1 + i) for i in range(args.trials // 2)]
    cfg = validate({"name": "overhead", "storage": str(work / "studies"),
                    "train": {"epochs": args.epochs, "batch_size": 128},
                    "search": {"variants": ["wd", "lpwd"], "lr": lrs, "weight_decay": [0.1], "seeds": [0]},
                    "resources": {"cpu": cores}})
    cells = trial_grid(cfg)

    start = time.perf_counter()
    for cell in cells:
        run_trial(cfg, cell, CheckpointInMemory())
    in_process = time.perf_counter() - start

    start = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - start
    start = time.perf_counter()
    start_study(cfg, prepare_study_dir(cfg), "benchmark")
    tracking_setup = time.perf_counter() - start
    start = time.perf_counter()
    run_study(cfg)
    sweep = time.perf_counter() - start

    n = len(cells)
    print(f"# sweep overhead, {n} trials x {args.epochs} epochs (digits, small_cnn), {cores} cores, "
          f"{torch.get_num_threads()} torch threads, one trial at a time")
    print("| | wall s | per trial s |")
    print("|---|---|---|")
    print(f"| in-process, back to back | {in_process:.1f} | {in_process / n:.2f} |")
    print(f"| study on local Ray (checkpoints, table, MLflow) | {sweep:.1f} | {sweep / n:.2f} |")
    print(f"| **overhead per trial** | | **{(sweep - in_process) / n:.2f}** |")
    print(f"| one-off: Ray start {ray_start:.1f} s, MLflow store + parent run {tracking_setup:.1f} s | | |")


if __name__ == "__main__":
    main()
