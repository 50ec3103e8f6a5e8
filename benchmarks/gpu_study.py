"""A small CIFAR-10 resnet18 grid on one GPU, several trials at a time, without Ray.

The GPU machines we are lent have torch and timm but not Ray, so this runs the
study's own ``run_trial`` in ``--per-gpu`` spawned processes sharing one GPU
(what ``resources.gpu: 1/per-gpu`` does under Ray), with bf16 autocast,
channels_last and cudnn benchmark, the dataset resident on the GPU. It prints
images/s per trial, the GPU's utilisation sampled with nvidia-smi during the
grid, and the projected wall time of the paper grid (630 trials x 10 epochs
of resnet18 on CIFAR-10's 45,000 training images).

Without ``--cifar-root`` it trains on a CIFAR-10-format archive of random
images of the real size (speed does not depend on the pixels).

    python benchmarks/gpu_study.py [--per-gpu 4] [--cells 8] [--epochs 2] [--compile]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from study.define.config import validate
from study.run.data import write_cifar10_archive
from study.run.trial import run_trial

from trial_throughput import CheckpointInMemory

PAPER_TRIALS, PAPER_EPOCHS, CIFAR_TRAIN = 630, 10, 45_000


def one_trial(job):
    cfg_dict, cell = job
    cfg = validate(cfg_dict)
    start = time.perf_counter()
    metrics = run_trial(cfg, cell, CheckpointInMemory())
    return cell, metrics["images_per_s"], time.perf_counter() - start


class UtilisationSampler(threading.Thread):
    """nvidia-smi's utilization.gpu every half second until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True).stdout.strip()
            if out:
                self.samples.append(float(out.splitlines()[0]))
            self.stopped.wait(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gpu", type=int, default=4, help="trials sharing the GPU at once")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cifar-root", default=None)
    parser.add_argument("--train-images", type=int, default=50_000, help="size of the random archive")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_study: no CUDA device here; skipped (run it on a GPU machine)")
        return 0
    scratch = tempfile.TemporaryDirectory(prefix="cifar-shaped-")  # removed when the script exits
    root = args.cifar_root or scratch.name
    if args.cifar_root is None:
        write_cifar10_archive(Path(root), n_train=args.train_images, n_test=args.train_images // 5)
    cfg = {"name": "gpu_study", "data": {"name": "cifar10", "root": root, "val_fraction": 0.1},
           "model": {"name": "resnet18", "channels_last": True, "compile": args.compile},
           "train": {"epochs": args.epochs, "batch_size": args.batch_size, "amp": "bf16"},
           "resources": {"cpu": 1, "gpu": 1 / args.per_gpu}, "tracking": {"enabled": False}}
    cells = [{"variant": v, "lr": lr, "weight_decay": 0.05, "seed": 0}
             for v in ("wd", "lpwd") for lr in (1e-3, 2e-3, 5e-3, 1e-2)][: args.cells]
    n_train = int(round(args.train_images * 0.9))
    sampler = UtilisationSampler() if shutil.which("nvidia-smi") else None
    start = time.perf_counter()
    if sampler:
        sampler.start()
    with mp.get_context("spawn").Pool(args.per_gpu) as pool:
        done = list(pool.imap_unordered(one_trial, [(cfg, c) for c in cells]))
    wall = time.perf_counter() - start
    if sampler:
        sampler.stopped.set()
    print(f"# gpu_study: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, resnet18 bf16 channels_last"
          f"{' compiled' if args.compile else ''}, {args.per_gpu} trials per GPU, batch {args.batch_size}")
    print("| trial | img/s (last epoch) | wall s |")
    print("|---|---|---|")
    for cell, ips, seconds in done:
        print(f"| {cell['variant']} lr={cell['lr']:g} | {ips:,.0f} | {seconds:.1f} |")
    throughput = len(cells) * args.epochs * n_train / wall
    busy = sum(sampler.samples) / len(sampler.samples) if sampler and sampler.samples else float("nan")
    projected = PAPER_TRIALS * PAPER_EPOCHS * CIFAR_TRAIN / throughput
    print(f"\ngrid: {len(cells)} trials x {args.epochs} epochs in {wall:.1f} s = {throughput:,.0f} training img/s "
          f"(start-up, evaluation and checkpoints included); GPU utilisation {busy:.0f}% (nvidia-smi mean)")
    print(f"projected paper grid ({PAPER_TRIALS} trials x {PAPER_EPOCHS} epochs): {projected / 3600:.2f} h "
          f"(target <= 2.5 h on one H100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
