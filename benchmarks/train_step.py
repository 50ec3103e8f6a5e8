"""A whole training step (forward, backward, optimizer step) with lpwd or cwd against torch's AdamW, eager and compiled.

The optimizer's extra passes are invisible end to end, or they are not: this
measures them where users feel them. For each model and variant, two identical
copies train on the same batches, one with ``lpwd.build_optimizer(..., variant)``
and one with ``torch.optim.AdamW`` (fused where the device has it), in
alternating rounds of ``--steps`` steps; the ratio of each pair of rounds is
taken and the median and range over ``--rounds`` pairs printed. ``--compile``
adds the same with ``torch.compile`` (default inductor backend) of both models;
the first round of each (compilation) is left out. ``--compile-step`` adds a
``cwd`` row with ``compile_step=True`` (on Adam and Lion the base's update and the
cautious decay as one kernel that torch.compile generates, on the other bases the
mask pass after the base's step compiled; its compilation is in the warm-up).
``--bases muon lion adafactor`` measures each variant on that base against the base
with its own decoupled decay (timm's Muon on the same Muon/AdamW split, timm's Lion,
torch's Adafactor), instead of against AdamW.

    python benchmarks/train_step.py [--models resnet18 convnext_atto] [--variants lpwd cwd] [--batch 32] [--compile] [--compile-step] [--bases adam muon lion adafactor]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import lpwd
from lpwd.bases import BASES, muon_groups
from lpwd.optim import decay_groups, fastest_kernel


def step_time(model, forward, opt, batches, device) -> float:
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(batches)


def baseline(model, base: str, device) -> torch.optim.Optimizer:
    """The base with its own decay at λ: what a user of that base runs today."""
    if base == "adam":
        fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **fused)
    groups = decay_groups(model, 0.05)
    if base == "muon":
        groups = muon_groups(model, groups)
    return BASES[base].load()(groups, lr=1e-3, **fastest_kernel(model.parameters(), base))


def measure(name: str, variant: str, compiled: bool, args, device, compile_step: bool = False, base: str = "adam"
            ) -> tuple[list[float], float, float]:
    def build(seed=0):
        torch.manual_seed(seed)
        return timm.create_model(name, num_classes=10).to(device)

    ours_model, theirs_model = build(), build()
    ours = lpwd.build_optimizer(ours_model, variant, 1e-3, 0.05, base, diagnostics_every=0, compile_step=compile_step,
                                **fastest_kernel(ours_model.parameters(), base))
    theirs = baseline(theirs_model, base, device)
    run_ours = torch.compile(ours_model) if compiled else ours_model
    run_theirs = torch.compile(theirs_model) if compiled else theirs_model
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
                torch.randint(10, (args.batch,), generator=g).to(device)) for _ in range(args.steps)]
    step_time(ours_model, run_ours, ours, batches[:2], device)  # warm-up (and compilation)
    step_time(theirs_model, run_theirs, theirs, batches[:2], device)
    ratios, t_ours, t_theirs = [], [], []
    for r in range(args.rounds):
        pair = [(ours_model, run_ours, ours), (theirs_model, run_theirs, theirs)]
        times = {}
        for model, forward, opt in (pair if r % 2 == 0 else pair[::-1]):  # alternate who goes first
            times[id(opt)] = step_time(model, forward, opt, batches, device)
        t_ours.append(times[id(ours)])
        t_theirs.append(times[id(theirs)])
        ratios.append(times[id(ours)] / times[id(theirs)])
    ours.remove_hook()
    return ratios, statistics.median(t_ours), statistics.median(t_theirs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "convnext_atto"])
    parser.add_argument("--variants", nargs="+", default=["lpwd", "cwd"], choices=lpwd.VARIANTS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also with torch.compile (slow to compile on a CPU)")
    parser.add_argument("--compile-step", action="store_true",
                        help="also cwd with compile_step=True (its kernel compiles in the warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bases", nargs="+", default=["adam"], choices=sorted(BASES), help="base optimizers")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# training step (forward, backward, step), torch {torch.__version__}, {where}; batch {args.batch} x "
          f"3x{args.size}x{args.size}; {args.rounds} alternating rounds x {args.steps} steps, median (range)")
    print("| model | mode | base | variant | base with its own decay ms | variant ms | variant / base |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for compiled in ([False, True] if args.compile else [False]):
            for base in args.bases:
                rows = [(v, False) for v in args.variants]
                rows += [("cwd", True)] if args.compile_step else []
                for variant, compile_step in rows:
                    ratios, ours, theirs = measure(name, variant, compiled, args, device, compile_step, base)
                    label = f"{variant} (compile_step)" if compile_step else variant
                    print(f"| {name} | {'compiled' if compiled else 'eager'} | {base} | {label} | {1000 * theirs:.1f} | "
                          f"{1000 * ours:.1f} | {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) |",
                          flush=True)


if __name__ == "__main__":
    main()
