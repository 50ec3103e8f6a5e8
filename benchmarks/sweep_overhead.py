"""What running trials through ``study`` on local Ray costs, against the same trainings back to back.

A sweep has one-off costs (Ray start, the MLflow store and parent run, the
first worker importing torch) and a cost per trial. The second is what grows
with a 630-trial grid, so it is measured as a slope: sweeps of N and of 3N
trials, (T(3N) - T(N)) / 2N, against the per-trial time of the same trainings
back to back in one process (``run_trial`` with an in-memory checkpoint).
The same threads per trial, one trial at a time, the default checkpoint
policy (time-based, plus the final one), the tidy table and MLflow on SQLite.
Rounds alternate in-process and sweeps; medians and ranges are printed.

    python benchmarks/sweep_overhead.py [--trials 8] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from study.run.localray import prefer_loopback

prefer_loopback()  # as `study run` does: the study's own loopback Ray head (set before ray is imported)

from study.define.config import trial_grid, validate  # noqa: E402
from study.run.sweep import init_ray, run_study  # noqa: E402
from study.run.trial import run_trial  # noqa: E402

from trial_throughput import CheckpointInMemory  # noqa: E402


def study_config(work: Path, name: str, trials: int, epochs: int, cores: int):
    lrs = [1e-3 * (1 + i) for i in range(max(1, trials // 2))]
    return validate({"name": name, "storage": str(work / "studies"),
                     "train": {"epochs": epochs, "batch_size": 128},
                     "search": {"variants": ["wd", "lpwd"], "lr": lrs, "weight_decay": [0.1], "seeds": [0],
                                "layer_schedule": ["linear"]},
                     "resources": {"cpu": cores}})


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="N: the small sweep; the large one has 3N")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    scratch = tempfile.TemporaryDirectory(prefix="sweep-overhead-", ignore_cleanup_errors=True)  # removed at exit
    work = Path(scratch.name)
    os.chdir(work)
    n_small, n_large = args.trials, 3 * args.trials
    started = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - started
    warm = study_config(work, "warm", 2, 1, cores)  # the worker's first imports are a one-off: pay them here
    with contextlib.redirect_stdout(io.StringIO()):
        run_study(warm)
    in_process, slopes, one_off = [], [], []
    for r in range(args.rounds):
        cfg = study_config(work, f"inproc{r}", n_large, args.epochs, cores)
        t0 = time.perf_counter()
        for cell in trial_grid(cfg):
            run_trial(cfg, cell, CheckpointInMemory())
        in_process.append((time.perf_counter() - t0) / n_large)
        walls = {}
        for n in (n_small, n_large):
            cfg = study_config(work, f"sweep{r}-{n}", n, args.epochs, cores)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_study(cfg)
            walls[n] = time.perf_counter() - t0
        slope = (walls[n_large] - walls[n_small]) / (n_large - n_small)
        slopes.append(slope)
        one_off.append(walls[n_small] - n_small * slope)

    ratios = [a / b for a, b in zip(in_process, slopes)]
    print(f"# sweep overhead: digits, small_cnn, {args.epochs} epochs per trial, {cores} cores, "
          f"{torch.get_num_threads()} torch threads, one trial at a time; {args.rounds} rounds, median (range)")
    print("| | seconds per trial |")
    print("|---|---|")
    print(f"| in-process, back to back | {spread(in_process)} |")
    print(f"| study on local Ray (checkpoint, table, MLflow), slope of {n_small} -> {n_large} trials | {spread(slopes)} |")
    print(f"| **ratio in-process / study per trial** | **{spread(ratios)}x** |")
    print(f"| one-off per sweep (Tuner set-up, MLflow parent, end of sweep) | {spread(one_off)} s |")
    print(f"| one-off per session: Ray start | {ray_start:.1f} s |")


if __name__ == "__main__":
    main()
