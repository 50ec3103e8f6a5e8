"""Step time of every decay variant x base against torch's fastest optimizer.

For the parameter sets of timm models, times one optimizer step (plus, for
pwd/lpwd, the pre-forward decay the model's hook applies) next to torch's
fastest AdamW / SGD on the same device (fused where supported, foreach
otherwise), interleaved round by round so machine noise hits both alike, and
prints the best sample of each with the ratios (as ``timeit`` advises: on a
shared machine the slower samples measure the neighbours, not the kernel).
R_op diagnostics (4096-coordinate sample) are timed off and on every step:
the difference is what one probed step costs, and the last column averages it
over the default of one probe every 10th step (10x the signal over the noise
of timing every-10th-step probing directly).

A ``floor`` row per base times the composition that a separate shrink costs at
best, written with torch ops only: torch's fused Adam/SGD with no weight decay
plus one ``torch._foreach_mul_`` over the decayed tensors. Variants whose
shrink cannot ride inside torch's kernel (pwd/lpwd, decoupled SGD) should sit
at that floor; the gap between the floor and 1.00x is the bandwidth of the
extra pass (8 bytes per parameter against 28 for Adam's, 20 for momentum SGD's).
The column "vs its placement's floor" divides each variant by the floor row
where its shrink is a pass of its own, and by the baseline where it rides in
torch's kernel: what our code adds over the composition it is built from.

    python benchmarks/optimizer_step.py [--device cuda] [--models resnet18 convnext_atto]
"""

from __future__ import annotations

import argparse
import math
import time

import timm
import torch

import lpwd
from lpwd.optim import fastest_kernel

LR, WD = 1e-3, 0.05


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# (label, base, kwargs): SGD with and without momentum, since without it torch's
# coupled kernel can carry wd and rwd (see lpwd.optim.build_optimizer)
BASES = [("adam", "adam", {}), ("sgd", "sgd", {"momentum": 0.9}), ("sgd, no momentum", "sgd", {"momentum": 0.0})]


def decayed_and_rest(model):
    skip = lpwd.no_decay_names(model)
    named = list(model.named_parameters())
    return [p for n, p in named if n not in skip], [p for n, p in named if n in skip]


def fastest(model):
    """torch's fastest implementation on the model's device: fused where supported, foreach otherwise."""
    return fastest_kernel(model.parameters())


def baseline(model, base, momentum):
    decay, rest = decayed_and_rest(model)
    groups = [{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}]
    speed = fastest(model)
    if base == "adam":
        return torch.optim.AdamW(groups, lr=LR, **speed), f"torch AdamW {next(iter(speed))}"
    return torch.optim.SGD(groups, lr=LR, momentum=momentum, **speed), f"torch SGD {next(iter(speed))}"


def floor(model, base, momentum):
    """torch's fused base (no decay) + one _foreach_mul_: a separate shrink at its cheapest."""
    decay, _ = decayed_and_rest(model)
    factors = [1.0 - LR * WD] * len(decay)
    if base == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=LR, **fastest(model))
    else:
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum, **fastest(model))

    @torch.no_grad()
    def run():
        torch._foreach_mul_(decay, factors)
        opt.step()

    return run


def step_fn(model, opt):
    """One step as a training loop takes it: pwd/lpwd's pending decay (what their forward hook
    applies, called directly since no forward runs here), then ``step()``."""
    decay = getattr(opt, "pre_forward", None)  # None for torch's own baseline
    if decay is not None:
        opt.detach()  # no hooks left on the model: the next optimizer built on it starts clean

    def run():
        if decay is not None:
            decay()
        opt.step()

    return run


def separate_pass(variant, base, momentum) -> bool:
    """Whether the variant's shrink is a pass of its own (its floor is the floor row) or rides in
    torch's kernel (its floor is the baseline itself)."""
    return variant in ("pwd", "lpwd", "cwd") or (variant in ("wd", "rwd") and base == "sgd" and momentum > 0)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench_model(name, device, rounds, warmup):
    model = timm.create_model(name, pretrained=False, num_classes=100).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    nparams = sum(p.numel() for p in model.parameters())
    rows = []
    for label, base, kwargs in BASES:
        momentum = kwargs.get("momentum", 0.0)
        ref_opt, ref_name = baseline(model, base, momentum)
        contenders = {"baseline": step_fn(model, ref_opt), "floor": floor(model, base, momentum)}
        for variant in lpwd.VARIANTS:
            for diag in (0, 1):
                opt = lpwd.build_optimizer(model, variant, LR, WD, base, diagnostics_every=diag, **fastest(model),
                                           **kwargs)
                contenders[(variant, diag)] = step_fn(model, opt)
        times = {k: [] for k in contenders}
        for r in range(warmup + rounds):
            for key, fn in contenders.items():
                t = timed(lambda: [fn() for _ in range(10)], device) / 10
                if r >= warmup:
                    times[key].append(t)
        ref = min(times["baseline"])
        low = min(times["floor"])
        rows.append((name, label, "floor", ref_name, ref * 1e3, low * 1e3, low / ref, math.nan, math.nan, math.nan))
        for variant in lpwd.VARIANTS:
            off = min(times[(variant, 0)])
            probe = max(min(times[(variant, 1)]) - off, 0.0)  # one probed step's extra time
            on = off + probe / 10  # the default: R_op every 10th step, averaged over steps
            own_floor = low if separate_pass(variant, base, momentum) else ref
            rows.append((name, label, variant, ref_name, ref * 1e3, off * 1e3, off / ref, off / own_floor,
                         probe * 1e3, on / ref))
    return nparams, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["resnet18", "convnext_atto"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# optimizer step, torch {torch.__version__}, {where}; best of {args.rounds} x 10 steps")
    print("| model | base | variant | baseline | baseline ms | ours ms | ratio | vs its placement's floor | "
          "R_op probe ms | ratio, R_op every 10th |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        nparams, rows = bench_model(name, device, args.rounds, args.warmup)
        for row in rows:
            model, base, variant, ref_name, ref, off, r_off, r_floor, probe, r_on = row
            label = "floor: torch fused, no decay, + `_foreach_mul_`" if variant == "floor" else variant
            diag = "- | -" if math.isnan(probe) else f"{probe:.2f} | {r_on:.2f}x"
            vs_floor = "-" if math.isnan(r_floor) else f"{r_floor:.2f}x"
            print(f"| {model} ({nparams / 1e6:.1f}M) | {base} | {label} | {ref_name} | {ref:.2f} | "
                  f"{off:.2f} | {r_off:.2f}x | {vs_floor} | {diag} |", flush=True)


if __name__ == "__main__":
    main()
