"""What whole-or-nothing saves cost: Ray's checkpoint upload onto the atomic filesystem vs plain local.

Ray Tune persists a checkpoint (and its sweep state) with ``pyarrow.fs.copy_files``
from a staging folder onto the storage filesystem. ``study.store.atomicfs`` makes each
file appear only when complete (a hidden sibling, ``fsync``, ``os.replace``).
This times that exact call for checkpoint-sized folders onto pyarrow's
``LocalFileSystem`` (the baseline) and onto the atomic one, interleaved round by
round, and prints medians with their range and the ratio.

    python benchmarks/atomic_save.py [--sizes-mb 0.1 10 100] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs

sys.path.insert(0, str(Path(__file__).parents[1]))
from study.store.atomicfs import atomic_local_filesystem  # noqa: E402


def one_save(staging: Path, target: Path, fs) -> float:
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    fs.create_dir(str(target))
    pafs.copy_files(str(staging), str(target), destination_filesystem=fs, chunk_size=64 * 1024 * 1024)  # Ray's call
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[0.1, 10.0, 100.0])
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    filesystems = {"plain": pafs.LocalFileSystem(), "atomic": atomic_local_filesystem()}
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as work:
        for size in args.sizes_mb:
            staging = Path(work) / f"staging-{size}" / "checkpoint_000001"
            staging.mkdir(parents=True)
            (staging / "state.pt").write_bytes(os.urandom(int(size * 1024 * 1024)))
            times = {name: [] for name in filesystems}
            for _ in range(args.rounds):  # interleaved: the machine's noise hits both alike
                for name, fs in filesystems.items():
                    times[name].append(one_save(staging, Path(work) / f"saved-{name}", fs))
            plain, atomic = (statistics.median(times[n]) for n in ("plain", "atomic"))
            ratios = sorted(a / b for a, b in zip(times["atomic"], times["plain"]))
            rows.append((size, times, plain, atomic, ratios))
    print(f"# one checkpoint save ({args.rounds} rounds, interleaved): median ms (range); atomic/plain per round")
    print("| checkpoint | plain LocalFileSystem | atomic (study.store.atomicfs) | atomic / plain |")
    print("|---|---|---|---|")
    for size, times, plain, atomic, ratios in rows:
        spread = {n: f"{min(t) * 1e3:.2f}-{max(t) * 1e3:.2f}" for n, t in times.items()}
        print(f"| {size:g} MB | {plain * 1e3:.2f} ({spread['plain']}) | {atomic * 1e3:.2f} ({spread['atomic']}) | "
              f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) |")


if __name__ == "__main__":
    main()
