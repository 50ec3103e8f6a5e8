"""Images/s of the study's trial loop against a bare PyTorch loop, side by side.

The trial loop (``study.run.trial.run_trial``: data on device, augmentation,
metrics, R_op diagnostics, per-epoch evaluation and an in-memory checkpoint
of model + optimizer + scheduler + RNG) versus the most minimal loop that
trains the same model with torch's fused ``AdamW`` on the same tensors and batch
size and evaluates the same validation and test split each epoch, as any real
loop does. Whole wall time of the epochs is counted for both. No Ray, no MLflow,
so it runs on a GPU machine too.

    python benchmarks/trial_throughput.py [--device cuda] [--cases digits cifar]

The CIFAR-shaped case writes a CIFAR-10-format archive of random images
(``--cifar-train`` of them) unless ``--cifar-root`` points at the real one.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from study.define.config import validate
from study.run.data import augment_batch, load_dataset, write_cifar10_archive
from study.run.models import build_model
from study.run.trial import run_trial


class CheckpointInMemory:
    """The trial's reporter, minus Ray: serialises the full checkpoint every epoch."""

    def restore(self):
        return None

    def report(self, metrics, state):
        torch.save(state, io.BytesIO())


def bare_loop(cfg, device, epochs):
    data = load_dataset(cfg.data.name, cfg.data.root, cfg.data.val_fraction, 0, device, cfg.data.augment)
    model = build_model(cfg.model, data.train.x.shape[1], data.num_classes, data.train.x.shape[-1], 0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)  # torch's fastest
    gen = torch.Generator().manual_seed(0)
    bs = cfg.train.batch_size
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(data.train), generator=gen).to(device)
        for i in range(0, len(order), bs):
            x, y = data.train.x[order[i:i + bs]], data.train.y[order[i:i + bs]]
            if data.augment:
                x = augment_batch(x, gen)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            images += len(y)
        model.eval()
        with torch.inference_mode():
            for split in (data.val, data.test):
                for i in range(0, len(split), 1024):
                    (model(split.x[i:i + 1024]).argmax(1) == split.y[i:i + 1024]).sum().item()
        model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def trial_loop(cfg, epochs):
    start = time.perf_counter()
    run_trial(cfg, {"variant": "lpwd", "lr": 1e-3, "weight_decay": 0.1, "seed": 0}, CheckpointInMemory())
    n_train = len(load_dataset(cfg.data.name, cfg.data.root, cfg.data.val_fraction, 0, torch.device("cpu")).train)
    return n_train * epochs / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["digits", "cifar"])
    parser.add_argument("--cifar-root", default=None)
    parser.add_argument("--cifar-train", type=int, default=2560)
    args = parser.parse_args()
    gpu = 1 if args.device == "cuda" else 0
    cases = []
    if "digits" in args.cases:
        cases.append(("small_cnn / digits", {"data": {"name": "digits"}, "model": {"name": "small_cnn"}}))
    if "cifar" in args.cases:
        root = args.cifar_root
        if root is None:
            scratch = tempfile.TemporaryDirectory(prefix="cifar-shaped-")  # removed when the script exits
            root = scratch.name
            write_cifar10_archive(Path(root), n_train=args.cifar_train, n_test=args.cifar_train // 5)
        cases.append(("resnet18 / CIFAR-shaped", {"data": {"name": "cifar10", "root": root},
                                                  "model": {"name": "resnet18"}}))
    print(f"# trial loop vs bare loop, {args.device}, torch {torch.__version__}, best of {args.repeats}")
    print("| case | bare img/s | trial img/s | ratio |")
    print("|---|---|---|---|")
    for label, sections in cases:
        cfg = validate({"name": "bench", **sections, "resources": {"cpu": torch.get_num_threads(), "gpu": gpu},
                        "train": {"epochs": args.epochs, "batch_size": 128}, "tracking": {"enabled": False}})
        device = torch.device(args.device)
        bare = max(bare_loop(cfg, device, args.epochs) for _ in range(args.repeats))
        ours = max(trial_loop(cfg, args.epochs) for _ in range(args.repeats))
        print(f"| {label} | {bare:.0f} | {ours:.0f} | {ours / bare:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
