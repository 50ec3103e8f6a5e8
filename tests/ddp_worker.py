"""One rank of the DDP and FSDP2 tests (tests/test_training_setups.py): gloo on CPU, half the global
batch each.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/ddp_worker.py VARIANT OUT_DIR [WRAP [BASE]]

WRAP: ``ddp`` (default); ``fsdp-root``, FSDP2's ``fully_shard`` on the whole model only; ``fsdp-blocks``,
the usual recipe: each hidden layer sharded on its own, the input and output layers in the root group.
BASE: the base optimizer (default ``adam``). For ``muon`` the Newton-Schulz iteration runs in float64,
like the model (timm runs it in bfloat16, whose rounding differs between a whole matrix and its
shards by ~1e-3 after 6 steps): the test is of lpwd's decay on sharded weights, not of that rounding.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import torch
from torch import nn

import lpwd

STEPS, LR, LAM, BATCH = 6, 0.05, 0.5, 32
FACTORS = [1.0, 0.5, 0.8, 0.3, 0.9, 0.2]


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).double()


def batch(t):
    g = torch.Generator().manual_seed(t)
    return torch.randn(BATCH, 8, generator=g, dtype=torch.float64), torch.randint(4, (BATCH,), generator=g)


def train(net, params_of, variant, part=slice(None), decays=None, base="adam"):
    opt = lpwd.build_optimizer(net, variant, LR, LAM, base)
    if decays is not None:  # count the pre-forward decays, as the in-process tests do
        apply = opt._apply_decay
        opt._apply_decay = lambda: (decays.append(opt._steps), apply())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: FACTORS[t % len(FACTORS)])
    for t in range(STEPS):
        x, y = batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[part]), y[part]).backward()
        opt.step()
        sched.step()
    if decays is not None:
        decays.append(opt.diagnostics())  # the per-layer norms gather sharded weights on every rank
    return [p.detach().clone() for p in params_of.parameters()]


def exact_newton_schulz():
    """timm's Muon orthogonalises in float64 in this process (see the module docstring)."""
    import functools

    import timm.optim.muon as muon

    if not getattr(muon.zeropower_via_newtonschulz, "exact", False):
        exact = functools.partial(muon.zeropower_via_newtonschulz, dtype=torch.float64)
        exact.exact = True
        muon.zeropower_via_newtonschulz = exact


def reference(variant, base="adam"):
    """The same global batches in one process."""
    if base == "muon":
        exact_newton_schulz()
    net = model()
    return train(net, net, variant, base=base)


def main():
    variant, out = sys.argv[1], Path(sys.argv[2])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    wrap = sys.argv[3] if len(sys.argv) > 3 else "ddp"
    base = sys.argv[4] if len(sys.argv) > 4 else "adam"
    if base == "muon":
        exact_newton_schulz()
    inner = model()
    share = BATCH // world
    part = slice(rank * share, (rank + 1) * share)
    decays = []
    if wrap == "ddp":
        weights = train(nn.parallel.DistributedDataParallel(inner), inner, variant, part, decays, base)
    else:
        from torch.distributed.fsdp import fully_shard

        if wrap == "fsdp-blocks":
            fully_shard(inner[2])
        fully_shard(inner)
        sharded = train(inner, inner, variant, part, decays, base)
        weights = [p.full_tensor() for p in sharded]
    (out / f"rank{rank}.pkl").write_bytes(pickle.dumps({"weights": weights, "decays": decays[:-1],
                                                          "diagnostics": decays[-1]}))
    # both ranks leave together, and skip the interpreter's teardown: once in a full suite run a rank
    # aborted there, after its result was written ("terminate called without an active exception",
    # a gloo thread still joinable at exit), a known torch/gloo shutdown race that is not what this tests
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
