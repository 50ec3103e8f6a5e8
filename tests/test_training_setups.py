"""lpwd outside the plain eager loop: torch.compile, GradScaler and autocast, wrapped models, DDP, misuse."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lpwd

from .ddp_worker import reference

LR, LAM = 0.05, 0.5
FACTORS = [1.0, 0.5, 0.8, 0.3, 0.9, 0.2, 1.1, 0.7]  # the lr changes every step: no recompile may follow it


def mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)


def data(t, dtype=torch.float64, n=32):
    g = torch.Generator().manual_seed(t)
    return torch.randn(n, 8, generator=g, dtype=dtype), torch.randint(4, (n,), generator=g)


def counting_decays(opt):
    """Wrap the optimizer's shrink to count how often it runs (eagerly, so the count is real)."""
    calls = []
    apply = opt._apply_decay

    def counted():
        calls.append(opt._steps)
        apply()

    opt._apply_decay = counted
    return calls


def train(model, opt, forward, steps=8):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: FACTORS[t % len(FACTORS)])
    for t in range(steps):
        x, y = data(t)
        opt.zero_grad()
        nn.functional.cross_entropy(forward(x), y).backward()
        opt.step()
        sched.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("variant", ["wd", "pwd", "lpwd", "cwd"])
def test_torch_compile_before_or_after_building_gives_the_eager_update(variant):
    from torch._dynamo.utils import counters

    model = mlp()
    eager = train(model, lpwd.build_optimizer(model, variant, LR, LAM), model)
    for order in ("compile after building", "compile before building"):
        torch._dynamo.reset()
        counters.clear()
        model = mlp()
        if order == "compile before building":
            model = torch.compile(model)  # inductor, the default backend
            opt = lpwd.build_optimizer(model, variant, LR, LAM)
            forward = model
        else:
            opt = lpwd.build_optimizer(model, variant, LR, LAM)
            forward = torch.compile(model)
        decays = counting_decays(opt)
        got = train(model, opt, forward)
        assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(got, eager)), order
        # exactly one pre-weight decay per step, in the forward (none for wd: it rides in the kernel;
        # none for cwd: its masked decay follows the update inside step())
        assert decays == (list(range(8)) if variant in ("pwd", "lpwd") else []), (order, decays)
        assert counters["stats"]["unique_graphs"] == 1, (order, dict(counters["stats"]))  # no recompile per lr


@pytest.mark.parametrize("base", ["lion", "adafactor", "muon"])
@pytest.mark.parametrize("variant", ["lpwd", "cwd"])
def test_torch_compile_gives_the_eager_update_on_other_bases(variant, base):
    """The hooks and the shrink are the ones compiled above on Adam; here with the bases' own kernels
    (timm's Lion and Muon, torch's Adafactor) behind them: a compiled model trains as the eager one."""
    from torch._dynamo.utils import counters

    model = mlp()
    eager = train(model, lpwd.build_optimizer(model, variant, LR, LAM, base), model)
    torch._dynamo.reset()
    counters.clear()
    model = mlp()
    opt = lpwd.build_optimizer(model, variant, LR, LAM, base)
    decays = counting_decays(opt)
    got = train(model, opt, torch.compile(model))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(got, eager))
    assert decays == (list(range(8)) if variant == "lpwd" else [])
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def vit():
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10)


class Backbone(nn.Module):
    """A user's module with a timm model inside and a head of its own."""

    def __init__(self):
        super().__init__()
        self.backbone = vit()
        self.extra = nn.Linear(10, 3)

    def forward(self, x):
        return self.extra(self.backbone(x))


def test_layers_and_no_decay_see_through_compile_ddp_wrappers_and_nesting():
    plain = vit()
    layers, skip = lpwd.layer_indices(plain), lpwd.no_decay_names(plain)
    assert {"pos_embed", "cls_token"} <= skip and max(L for _, L in layers.values()) > 1
    for wrapped, prefix in [(torch.compile(plain), "_orig_mod."), (nn.DataParallel(plain), "module."),
                            (torch.compile(nn.DataParallel(plain)), "_orig_mod.module.")]:
        assert lpwd.layer_indices(wrapped) == {prefix + n: lL for n, lL in layers.items()}
        assert lpwd.no_decay_names(wrapped) == {prefix + n for n in skip}
        opt = lpwd.build_optimizer(wrapped, "lpwd", LR, LAM)
        decayed = {id(p) for g in opt.param_groups if g["decay_eligible"] for p in g["params"]}
        assert id(plain.pos_embed) not in decayed and id(plain.blocks[0].attn.qkv.weight) in decayed
        opt.remove_hook()
    nested = Backbone()
    inner = lpwd.layer_indices(nested.backbone)
    got = lpwd.layer_indices(nested)
    assert {n: got[f"backbone.{n}"] for n in inner} == inner  # timm's grouping, prefixed
    L = next(iter(inner.values()))[1]
    assert got["extra.weight"] == (L, L)  # registered after the timm model: with its head
    assert {"backbone.pos_embed", "backbone.cls_token"} <= lpwd.no_decay_names(nested)


def test_tied_weights_belong_to_their_first_use():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 6)
            self.mid = nn.Linear(6, 6)
            self.out = nn.Linear(6, 10)
            self.out.weight = self.embed.weight

    layers = lpwd.layer_indices(Tied())
    assert layers == {"embed.weight": (1, 2), "mid.weight": (2, 2), "mid.bias": (2, 2), "out.bias": (2, 2)}


def test_the_newest_pre_decay_optimizer_takes_the_parameters_over():
    """A second fit (or lr_find, then fit) builds another optimizer on the same model: the older one's
    hooks go, so every forward decays once, by the newer one."""
    model = mlp()
    first = lpwd.build_optimizer(model, "lpwd", LR, LAM)
    second = lpwd.build_optimizer(model, "pwd", LR, LAM)
    assert not first._hooks and second._hooks
    decays = counting_decays(second), counting_decays(first)
    train(model, second, model, steps=3)
    assert decays == ([0, 1, 2], [])
    copy.deepcopy(model)  # a copy is another model: building on it leaves this one's owner alone
    lpwd.build_optimizer(copy.deepcopy(model), "pwd", LR, LAM)
    assert second._hooks


def scaler_loop(variant, base, fast, skip_at):
    """fp32 training through GradScaler at a constant lr; the step at ``skip_at`` has infinite gradients."""
    model = mlp(torch.float32)
    opt = lpwd.build_optimizer(model, variant, LR, LAM, base, **({} if fast is None else {"fused": fast}))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1000)
    for t in range(5):
        x, y = data(t, torch.float32)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if t == skip_at:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return [p.detach().clone() for p in model.parameters()], scaler.get_scale()


@pytest.mark.parametrize("base,fast", [("adam", True), ("adam", False), ("sgd", True), ("sgd", False),
                                       ("lion", None), ("adafactor", None), ("muon", None)],
                         ids=["adam-fused", "adam-single-tensor", "sgd-fused", "sgd-single-tensor", "lion",
                              "adafactor", "muon"])  # sgd with momentum: wd and rwd are a separate pass there
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_a_step_grad_scaler_skips_changes_nothing(variant, base, fast):
    skipped, scale = scaler_loop(variant, base, fast, skip_at=2)
    assert scale == 2.0**7  # the scaler did see the infinite gradients and skipped
    # the same run without that batch: one decay and one update per applied step
    model = mlp(torch.float32)
    opt = lpwd.build_optimizer(model, variant, LR, LAM, base, **({} if fast is None else {"fused": fast}))
    for t in (0, 1, 3, 4):
        x, y = data(t, torch.float32)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    reference = [p.detach() for p in model.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(skipped, reference)), variant


def lpwd_shrink_by_hand(model):
    """lpwd's pre-forward shrink written out: each weight matrix by (1 − lr λ l/L)."""
    scales = {n: l / L for n, (l, L) in lpwd.layer_indices(model).items()}
    named = dict(model.named_parameters())

    @torch.no_grad()
    def decay():
        for n, p in named.items():
            if p.ndim >= 2:
                p.mul_(1 - LR * LAM * scales[n])

    return decay


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_loop_matches_decay_then_torch_adam(dtype):
    """Under autocast, lpwd = shrink each weight by (1 - lr lambda_l) before the forward, then torch's Adam."""
    def loop(model, opt, before_forward):
        scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
        for t in range(5):
            x, y = data(t, torch.float32)
            opt.zero_grad()
            before_forward()
            with torch.autocast("cpu", dtype=dtype):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return [p.detach() for p in model.parameters()]

    model = mlp(torch.float32)
    ours = loop(model, lpwd.build_optimizer(model, "lpwd", LR, LAM), lambda: None)
    ref_model = mlp(torch.float32)
    decay = lpwd_shrink_by_hand(ref_model)
    ref = loop(ref_model, torch.optim.Adam(ref_model.parameters(), lr=LR, fused=True), decay)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(ours, ref))


@pytest.mark.parametrize("base", ["lion", "adafactor", "muon"])
def test_autocast_loop_matches_decay_then_the_base_with_its_decay_off(base):
    """Under bf16 autocast, lpwd on another base = shrink each weight by (1 − lr λ_l) before the forward,
    then that base with no decay of its own (``none``)."""
    def loop(model, opt, before_forward):
        for t in range(5):
            x, y = data(t, torch.float32)
            opt.zero_grad()
            before_forward()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
        return [p.detach() for p in model.parameters()]

    model = mlp(torch.float32)
    ours = loop(model, lpwd.build_optimizer(model, "lpwd", LR, LAM, base), lambda: None)
    ref_model = mlp(torch.float32)
    decay = lpwd_shrink_by_hand(ref_model)
    ref = loop(ref_model, lpwd.build_optimizer(ref_model, "none", LR, 0.0, base), decay)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(ours, ref))


def test_adafactor_on_sharded_parameters_is_refused_in_one_line_while_torch_cannot_step_them():
    """FSDP2 on a one-rank group: building lpwd on Adafactor over DTensor parameters is refused, by name
    and by class, before any step; Lion builds. The refusal stands while torch's own Adafactor still
    fails on them (the last assertion): when a torch release steps them, it fails and the refusal goes."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        net = mlp()
        fully_shard(net)
        for build in (lambda: lpwd.build_optimizer(net, "lpwd", LR, LAM, "adafactor"),
                      lambda: lpwd.decayed(torch.optim.Adafactor, lr=LR, weight_decay=LAM, model=net)):
            with pytest.raises(ValueError, match="torch's Adafactor cannot step FSDP2-sharded parameters"):
                build()
        lpwd.build_optimizer(net, "lpwd", LR, LAM, "lion")
        plain = torch.optim.Adafactor(net.parameters(), lr=LR)
        nn.functional.cross_entropy(net(data(0)[0]), data(0)[1]).backward()
        with pytest.raises(RuntimeError, match="pow_"):
            plain.step()
    finally:
        dist.destroy_process_group()


DDP_WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize("variant,wrap,base", [
    ("wd", "ddp", "adam"), ("lpwd", "ddp", "adam"), ("cwd", "ddp", "adam"), ("lpwd", "fsdp-root", "adam"),
    ("lpwd", "fsdp-blocks", "adam"), ("cwd", "fsdp-blocks", "adam"), ("lpwd", "fsdp-blocks", "lion"),
    ("lpwd", "ddp", "adafactor"), ("lpwd", "ddp", "muon"), ("lpwd", "fsdp-blocks", "muon")])
def test_ddp_and_fsdp2_ranks_agree_with_the_single_process_reference(variant, wrap, base, tmp_path):
    """FSDP2's own pre-forward hook all-gathers the root group's weights: lpwd's decay must run
    before it (or the forward sees undecayed weights), and R_op is skipped on sharded tensors. Not
    Adafactor under FSDP2: torch's Adafactor itself cannot step a sharded parameter (its in-place
    ``pow_`` on a partial norm is refused by DTensor, torch 2.14.1), with or without lpwd."""
    from .conftest import free_port

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, str(DDP_WORKER), variant, str(tmp_path), wrap, base],
                              env={**env, "RANK": str(r)}, start_new_session=True) for r in range(2)]
    try:
        assert [p.wait(timeout=300) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    ref = reference(variant, base)  # the same global batches in one process
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["weights"], ranks[1]["weights"]))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-10) for a, b in zip(ranks[0]["weights"], ref))
    assert ranks[0]["decays"] == (list(range(6)) if variant == "lpwd" else [])  # once per step, in the forward
    norms = ranks[0]["diagnostics"]["layer_weight_norms"]
    assert len(norms) == 3 and all(v > 0 for v in norms.values())
