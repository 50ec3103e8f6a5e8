"""The decay variants against their update equations (docs/library.md), step by step."""

import copy
import math
import io
import warnings

import pytest
import torch
from torch import nn

import lpwd

LR0, LAM = 0.05, 0.7
# a changing learning rate: the variants must use each step's own lr
LR_FACTORS = [1.0, 0.8, 1.3, 0.5, 0.9, 0.3, 1.1]
# torch's three implementations, as ``fused``/``foreach`` select them in torch.optim
KERNELS = [{"fused": True}, {"foreach": True}, {"foreach": False}]
KERNEL_IDS = ["fused", "foreach", "single-tensor"]


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 7), nn.LayerNorm(7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)
    ).to(dtype)


def batch(t, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(16, 5, generator=g, dtype=dtype), torch.randint(3, (16,), generator=g)


def loss_of(model, t, dtype=torch.float32):
    x, y = batch(t, dtype)
    return nn.functional.cross_entropy(model(x), y)


def train(model, opt, steps, start=0):
    """The plain loop a user writes, with a real lr scheduler."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: LR_FACTORS[t % len(LR_FACTORS)])
    with warnings.catch_warnings():  # fast-forwarding a fresh scheduler to the resume point
        warnings.simplefilter("ignore")
        for _ in range(start):
            sched.step()
    for t in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
        sched.step()
    return model


def reference(variant, base, steps, scales, betas=(0.9, 0.999), eps=1e-8, momentum=0.9, nesterov=False, lam=LAM):
    """The update equations written out literally, one tensor at a time."""
    model = make_model()
    params = dict(model.named_parameters())
    eligible = {n for n, p in params.items() if p.ndim >= 2}
    state = {n: {} for n in params}
    for t in range(steps):
        lr = LR0 * LR_FACTORS[t]
        with torch.no_grad():
            if variant in ("pwd", "lpwd"):  # decay before the forward pass, with step t's lr
                for n in eligible:
                    params[n].mul_(1 - lr * lam * scales[n])
        grads = torch.autograd.grad(loss_of(model, t), list(params.values()))
        with torch.no_grad():
            for (n, p), g in zip(params.items(), grads):
                if variant == "l2" and n in eligible:
                    g = g + lam * p
                s = state[n]
                if base == "adam":
                    s["m"] = betas[0] * s.get("m", 0) + (1 - betas[0]) * g
                    s["v"] = betas[1] * s.get("v", 0) + (1 - betas[1]) * g * g
                    mhat = s["m"] / (1 - betas[0] ** (t + 1))
                    vhat = s["v"] / (1 - betas[1] ** (t + 1))
                    u = mhat / (vhat.sqrt() + eps)
                else:
                    s["buf"] = g.clone() if "buf" not in s else momentum * s["buf"] + g
                    u = g + momentum * s["buf"] if nesterov else s["buf"]
                landed = p - lr * u
                if variant == "wd" and n in eligible:
                    p.copy_(landed - lr * lam * p)
                elif variant == "rwd" and n in eligible:
                    p.copy_((1 - lr * lam) * landed)
                elif variant == "cwd" and n in eligible:  # decay only where update and weight agree in sign
                    p.copy_(landed - lr * lam * (u * p >= 0) * p)
                else:
                    p.copy_(landed)
    return model


def linear_scales(model):
    return {n: l / L for n, (l, L) in lpwd.layer_indices(model).items()}


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
@pytest.mark.parametrize("base", ["adam", "sgd"])
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_variant_matches_method_equations(variant, base, kernel):
    model = make_model()
    kwargs = {"momentum": 0.9} if base == "sgd" else {}
    opt = lpwd.build_optimizer(model, variant, LR0, LAM, base, **kernel, **kwargs)
    train(model, opt, 6)
    scales = linear_scales(model) if variant == "lpwd" else {n: 1.0 for n, _ in model.named_parameters()}
    ref = reference(variant, base, 6, scales)
    # pwd/lpwd: the weights a user evaluates after the last step include no pending decay
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=lambda m: f"{variant}/{base} {n}: {m}")


@pytest.mark.parametrize("base,kwargs", [("adam", {}), ("sgd", {"momentum": 0.0})], ids=["adam", "sgd-no-momentum"])
def test_rwd_in_kernel_with_shrinks_above_and_below_one(base, kwargs):
    """lr * lambda from 0.45 to 1.95 over the steps: the fused path and the separate pass both match."""
    model = make_model()
    train(model, lpwd.build_optimizer(model, "rwd", LR0, 30.0, base, **kwargs), 6)
    ref = reference("rwd", base, 6, {n: 1.0 for n, _ in model.named_parameters()}, lam=30.0, **kwargs)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_sgd_without_momentum_matches_method_equations(variant, kernel):
    """Without momentum, wd and rwd ride in SGD's coupled kernel; every variant still follows its equation."""
    model = make_model()
    opt = lpwd.build_optimizer(model, variant, LR0, LAM, "sgd", **kernel, momentum=0.0)
    assert (opt.placement == "in_update") == (variant == "wd") and opt._rwd_in_kernel == (variant == "rwd")
    train(model, opt, 6)
    scales = linear_scales(model) if variant == "lpwd" else {n: 1.0 for n, _ in model.named_parameters()}
    ref = reference(variant, "sgd", 6, scales, momentum=0.0)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=lambda m: f"{variant} {n}: {m}")


def test_nesterov_sgd_matches_reference():
    model = make_model()
    opt = lpwd.build_optimizer(model, "lpwd", LR0, LAM, "sgd", momentum=0.9, nesterov=True)
    train(model, opt, 5)
    ref = reference("lpwd", "sgd", 5, linear_scales(model), nesterov=True)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def torch_groups(model, wd):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]


@pytest.mark.parametrize(
    "variant,base,make_torch",
    [
        ("wd", "adam", lambda groups: torch.optim.AdamW(groups, lr=LR0)),
        ("none", "adam", lambda groups: torch.optim.Adam(groups, lr=LR0, weight_decay=0.0)),
        ("l2", "sgd", lambda groups: torch.optim.SGD(groups, lr=LR0, momentum=0.9)),
        ("l2", "adam", lambda groups: torch.optim.Adam(groups, lr=LR0)),
    ],
)
def test_equals_torch_optimizer(variant, base, make_torch):
    ours, theirs = make_model(), make_model()
    kwargs = {"momentum": 0.9} if base == "sgd" else {}
    train(ours, lpwd.build_optimizer(ours, variant, LR0, LAM, base, **kwargs), 6)
    wd = 0.0 if variant == "none" else LAM
    train(theirs, make_torch(torch_groups(theirs, wd)), 6)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_sgdw_is_decoupled_not_coupled():
    """wd+sgd differs from SGD(weight_decay) once momentum carries the gradient."""
    ours, coupled = make_model(), make_model()
    train(ours, lpwd.build_optimizer(ours, "wd", LR0, LAM, "sgd", momentum=0.9), 4)
    train(coupled, torch.optim.SGD(torch_groups(coupled, LAM), lr=LR0, momentum=0.9), 4)
    assert not torch.allclose(ours[0].weight, coupled[0].weight, atol=1e-4)


class Probe(nn.Module):
    """loss = sum(c * w): the gradient is c, so the landing point is known."""

    def __init__(self, w, c):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.c = torch.tensor(c)

    def forward(self):
        return (self.w * self.c).sum()


def test_r_op_hand_built():
    # SGD without momentum, lr 1: landing = w - c. Crossing zero: entries 3 and 4 of 6 -> 2/6.
    w = [[1.0, -1.0, 0.001], [-0.002, 0.5, -0.5]]
    c = [[0.5, -0.5, 0.01], [-0.01, 0.1, -0.1]]
    for variant in ("wd", "rwd", "pwd", "l2"):
        model = Probe(w, c)
        opt = lpwd.build_optimizer(
            model, variant, 1.0, 0.01, "sgd", diagnostics_every=1, diagnostics_sample=None
        )
        opt.zero_grad()
        model().backward()
        opt.step()
        d = opt.diagnostics()
        if variant == "pwd":
            # gradient step starts from the pre-decayed weights 0.99 * w: same signs, same crossings
            assert d["r_op"] == pytest.approx(2 / 6)
        elif variant == "l2":
            # coupled: u = c + 0.01 w -> landing 0.99 w - c: same crossings here
            assert d["r_op"] == pytest.approx(2 / 6)
        else:
            assert d["r_op"] == pytest.approx(2 / 6), variant
        assert d["r_op_steps"] == 1
        assert opt.diagnostics()["r_op_steps"] == 0  # reading resets


def test_r_op_sample_estimates_full_rate():
    torch.manual_seed(0)
    n = 200_000
    w = torch.randn(n)
    crossing = torch.rand(n) < 0.3
    c = torch.where(crossing, 2 * w, 0.5 * w)  # landing w - c: -w (crosses) or 0.5 w (does not)
    model = Probe(w.view(400, 500).tolist(), c.view(400, 500).tolist())
    opt = lpwd.build_optimizer(model, "wd", 1.0, 0.1, "sgd", diagnostics_every=1, diagnostics_sample=4096)
    model().backward()
    opt.step()
    rate = crossing.float().mean().item()
    se = (rate * (1 - rate) / 4096) ** 0.5
    assert abs(opt.diagnostics()["r_op"] - rate) < 4 * se


def test_r_op_probe_runs_every_kth_step():
    model = make_model()
    opt = lpwd.build_optimizer(model, "wd", LR0, LAM, diagnostics_every=3)
    train(model, opt, 7)
    assert opt.diagnostics()["r_op_steps"] == 3  # steps 0, 3, 6
    off = lpwd.build_optimizer(make_model(), "wd", LR0, LAM, diagnostics_every=0)
    assert off.diagnostics()["r_op_steps"] == 0


def test_layer_weight_norms():
    model = make_model()
    opt = lpwd.build_optimizer(model, "lpwd", LR0, LAM)
    norms = opt.diagnostics()["layer_weight_norms"]
    assert norms == pytest.approx({1: model[0].weight.norm().item(), 2: model[3].weight.norm().item(),
                                   3: model[5].weight.norm().item()}, rel=1e-6)


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_rwd_never_opposes_but_wd_does(base):
    """|theta_{t+1}| <= |theta_t - lr u_t| for rwd; wd breaks it where the step crosses zero."""
    kwargs = {"momentum": 0.9} if base == "sgd" else {}
    violations = {}
    for variant in ("rwd", "wd"):
        model, twin = make_model(), make_model()
        opt = lpwd.build_optimizer(model, variant, 0.5, 1.5, base, **kwargs)
        twin_opt = lpwd.build_optimizer(twin, "none", 0.5, 1.5, base, **kwargs)
        violations[variant] = 0
        for t in range(6):
            twin.load_state_dict(model.state_dict())
            twin_state = copy.deepcopy(opt.state_dict())  # state tensors must not be shared
            twin_state["param_groups"] = twin_opt.state_dict()["param_groups"]
            twin_state["decay"]["variant"] = "none"
            twin_opt.load_state_dict(twin_state)
            for m, o in ((model, opt), (twin, twin_opt)):
                o.zero_grad()
                loss_of(m, t).backward()
                o.step()
            landed, new = twin[0].weight.abs(), model[0].weight.abs()
            violations[variant] += int((new > landed + 1e-7).sum())
    assert violations["rwd"] == 0
    assert violations["wd"] > 0


def test_pwd_gradient_is_taken_at_decayed_weights():
    model = make_model()
    w0 = model[0].weight.detach().clone()
    seen = []
    model[0].register_forward_pre_hook(lambda m, a: seen.append(m.weight.detach().clone()))
    opt = lpwd.build_optimizer(model, "pwd", LR0, LAM)
    with torch.no_grad():  # evaluation never decays
        model(batch(0)[0])
    torch.testing.assert_close(seen[-1], w0, rtol=0, atol=0)
    opt.zero_grad()
    loss = loss_of(model, 0)
    torch.testing.assert_close(seen[-1], (1 - LR0 * LAM) * w0)  # the very first forward is decayed
    loss.backward()
    # the gradient belongs to the decayed weights: recompute it at (1 - lr lam) w0 by hand
    check = make_model()
    with torch.no_grad():
        for n, p in check.named_parameters():
            if p.ndim >= 2:
                p.mul_(1 - LR0 * LAM)
    loss_of(check, 0).backward()
    torch.testing.assert_close(model[0].weight.grad, check[0].weight.grad)
    loss_of(model, 1)  # a second forward in the same step (accumulation) does not decay again
    torch.testing.assert_close(seen[-1], (1 - LR0 * LAM) * w0)
    with torch.inference_mode():
        model(batch(0)[0])
    opt.step()
    after_step = model[0].weight.detach().clone()
    with torch.no_grad():
        model(batch(0)[0])
    torch.testing.assert_close(model[0].weight.detach(), after_step, rtol=0, atol=0)


def test_pwd_decay_follows_scheduler_lr():
    model = make_model()
    opt = lpwd.build_optimizer(model, "pwd", LR0, LAM, "sgd")  # momentum 0, zero grads below
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    w = model[0].weight.detach().clone()
    for t in range(3):
        model(batch(t)[0])  # forward with grad: decays with the current lr
        w = w * (1 - LR0 * 0.5**t * LAM)
        torch.testing.assert_close(model[0].weight.detach(), w)
        opt.zero_grad(set_to_none=False)  # zero gradient: only the decay moves the weights
        opt.step()
        sched.step()


def test_pending_decay_applies_at_step_without_forward():
    model = make_model()
    opt = lpwd.build_optimizer(model, "pwd", LR0, LAM, "sgd")
    w = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.warns(RuntimeWarning, match="pre_forward"):  # no forward ran: said, and applied before the update
        opt.step()
    torch.testing.assert_close(model[0].weight.detach(), (1 - LR0 * LAM) * w)
    strict = lpwd.build_optimizer(make_model(), "pwd", LR0, LAM, "sgd", strict=True)
    with pytest.raises(RuntimeError, match="pre_forward"):
        strict.step()


def test_discarded_optimizer_hook_never_decays():
    model = make_model()
    opt = lpwd.build_optimizer(model, "pwd", LR0, LAM)
    del opt
    w = model[0].weight.detach().clone()
    model(batch(0)[0])
    torch.testing.assert_close(model[0].weight.detach(), w, rtol=0, atol=0)


@pytest.mark.parametrize("base", ["adam", "sgd"])
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_state_round_trip_is_bit_identical(variant, base):
    kwargs = {"momentum": 0.9} if base == "sgd" else {}
    full = make_model()
    train(full, lpwd.build_optimizer(full, variant, LR0, LAM, base, diagnostics_every=2, **kwargs), 6)

    first = make_model()
    opt = lpwd.build_optimizer(first, variant, LR0, LAM, base, diagnostics_every=2, **kwargs)
    train(first, opt, 3)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)

    resumed = make_model(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt2 = lpwd.build_optimizer(resumed, variant, LR0, LAM, base, diagnostics_every=2, **kwargs)
    opt2.load_state_dict(saved["opt"])
    train(resumed, opt2, 3, start=3)
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_lpwd_layer_scales_follow_schedule():
    model = make_model()
    for schedule, expected in [
        ("linear", [1 / 3, 2 / 3, 1.0]),
        ("constant", [1.0, 1.0, 1.0]),
        ("inverse", [1.0, 2 / 3, 1 / 3]),
        ("sqrt", [(1 / 3) ** 0.5, (2 / 3) ** 0.5, 1.0]),
        (lambda l, L: 2.0 ** (l - L), [0.25, 0.5, 1.0]),
    ]:
        opt = lpwd.build_optimizer(model, "lpwd", LR0, LAM, layer_schedule=schedule)
        (decay,) = [g for g in opt.param_groups if g["decay_eligible"]]
        assert decay["layer_scales"] == pytest.approx(expected)
        opt.remove_hook()


def test_no_decay_for_bias_norm_and_timm_no_weight_decay():
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=4)
    opt = lpwd.build_optimizer(model, "wd", 1e-3, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert "pos_embed" not in decayed and "cls_token" not in decayed
    assert not any(n.endswith("bias") or "norm" in n for n in decayed)
    assert "blocks.0.attn.qkv.weight" in decayed
    everything = lpwd.build_optimizer(model, "wd", 1e-3, 0.1, decay_bias_and_norm=True, decay_no_weight_decay=True)
    assert sum(len(g["params"]) for g in everything.param_groups if g["weight_decay"] > 0) == len(names)


@pytest.mark.parametrize("decay_bias_and_norm", [False, True])
def test_the_decayed_tensors_are_the_ones_timms_own_grouping_decays(decay_bias_and_norm):
    """decay_bias_and_norm is timm's filter_bias_and_bn negated, and the model's no_weight_decay()
    names stay undecayed in both, as timm keeps them; decay_no_weight_decay decays those too."""
    timm = pytest.importorskip("timm")
    from timm.optim import param_groups_weight_decay

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=4)
    names = {id(p): n for n, p in model.named_parameters()}

    def decayed(groups):
        return {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}

    theirs = decayed(param_groups_weight_decay(model, 0.1, weight_decay_exclude_1d=not decay_bias_and_norm,
                                               no_weight_decay_list=model.no_weight_decay()))
    ours = decayed(lpwd.build_optimizer(model, "wd", 1e-3, 0.1, decay_bias_and_norm=decay_bias_and_norm).param_groups)
    assert ours == theirs and "cls_token" not in ours and ("blocks.0.norm1.weight" in ours) == decay_bias_and_norm
    listed = decayed(lpwd.build_optimizer(model, "wd", 1e-3, 0.1, decay_bias_and_norm=decay_bias_and_norm,
                                          decay_no_weight_decay=True).param_groups)
    assert listed == theirs | {"cls_token", "pos_embed"}


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"variant": "adamw"}, "variant"),
        ({"base": "rmsprop"}, "base"),
        ({"lr": -1.0}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"layer_schedule": "cubic"}, "layer_schedule"),
        ({"layer_schedule": lambda l, L: -1.0}, "layer_schedule"),
        ({"momentum": 0.9}, "momentum"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=field):
        lpwd.build_optimizer(make_model(), **{"variant": "lpwd", **kwargs})


def test_model_without_parameters_is_refused():
    with pytest.raises(ValueError, match="model"):
        lpwd.build_optimizer(nn.ReLU(), "wd")


def test_loading_another_variants_state_is_refused():
    model = make_model()
    state = lpwd.build_optimizer(model, "wd", LR0, LAM).state_dict()
    with pytest.raises(ValueError, match="variant"):
        lpwd.build_optimizer(model, "rwd", LR0, LAM).load_state_dict(state)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
@pytest.mark.parametrize("base,kwargs", [("adam", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.0})],
                         ids=["adam", "sgd", "sgd-no-momentum"])
def test_every_variant_at_zero_decay_is_bit_identical_to_none(base, kwargs, kernel):
    """Why a study trains lambda = 0 once for all variants: the updates are the same to the bit."""
    def weights(variant):
        model = make_model()
        opt = lpwd.build_optimizer(model, variant, LR0, 0.0, base, **kernel, **kwargs)
        train(model, opt, 6)
        return [p.detach().clone() for p in model.parameters()], opt.diagnostics()

    ref, ref_diag = weights("none")
    for variant in lpwd.VARIANTS:
        got, diag = weights(variant)
        assert all(torch.equal(a, b) for a, b in zip(got, ref)), variant
        assert (diag["r_op"], diag["weight_norm"]) == (ref_diag["r_op"], ref_diag["weight_norm"]), variant


def test_effective_decay_and_normalised_schedule_by_hand():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))  # layers 1 and 2 of L = 2; 6 and 12 weights decayed
    assert lpwd.effective_decay(model, "lpwd", "linear") == pytest.approx((6 * 0.5 + 12 * 1.0) / 18)
    assert lpwd.effective_decay(model, "lpwd", "linear_normalized") == pytest.approx(1.0)
    assert lpwd.effective_decay(model, "pwd") == 1.0 and lpwd.effective_decay(model, "none") == 0.0
    opt = lpwd.build_optimizer(model, "lpwd", 0.1, 1.0, layer_schedule="linear_normalized")
    decayed = next(g for g in opt.param_groups if g["decay_eligible"])
    # l/L divided by its weighted mean 15/18: 0.5 -> 0.6, 1 -> 1.2
    assert decayed["layer_scales"] == pytest.approx([0.5 * 18 / 15, 18 / 15])
    opt.remove_hook()


@pytest.mark.parametrize("base", ["adam", "sgd"])
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_step_hooks_run_once_per_step_beside_torchs_own_optimizers(variant, base):
    # a plain torch Adam/SGD in the same process makes torch wrap its class's step(), as it wraps ours
    torch.optim.Adam(nn.Linear(1, 1).parameters())
    torch.optim.SGD(nn.Linear(1, 1).parameters())
    model = nn.Linear(3, 3)
    opt = lpwd.build_optimizer(model, variant, 1e-2, 0.1, base, momentum=0.9) if base == "sgd" else \
        lpwd.build_optimizer(model, variant, 1e-2, 0.1, base)
    calls = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    for _ in range(3):
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
    assert calls == ["pre", "post"] * 3


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_cautious_decay_touches_only_coordinates_whose_update_agrees_and_reports_its_mass(kernel):
    """cwd decays a coordinate only where the update and the weight agree in sign (never an opposing
    penalty), so it decays a fraction of the coordinates wd decays: that fraction is reported."""
    model = make_model()
    eligible = [p for p in model.parameters() if p.ndim >= 2]
    opt = lpwd.build_optimizer(model, "cwd", LR0, LAM, "adam", **kernel, diagnostics_every=1,
                               diagnostics_sample=None)
    plain = copy.deepcopy(model)
    none = lpwd.build_optimizer(plain, "none", LR0, 0.0, "adam", **kernel)
    before = [p.detach().clone() for p in eligible]
    for m, o in ((model, opt), (plain, none)):
        o.zero_grad()
        loss_of(m, 0).backward()
        o.step()
    landed = [p for p in plain.parameters() if p.ndim >= 2]  # where the update alone lands
    decayed = total = 0
    for theta, after, land in zip(before, eligible, landed):
        u = theta - land  # lr u
        agree = u * theta >= 0
        torch.testing.assert_close(after, land - LR0 * LAM * agree * theta, atol=1e-7, rtol=1e-6)
        decayed, total = decayed + int(agree.sum()), total + theta.numel()
    fraction = opt.diagnostics()["decay_fraction"]
    assert 0.1 < fraction < 0.9 and fraction == pytest.approx(decayed / total)
    assert math.isnan(opt.diagnostics()["decay_fraction"])  # reset by the previous call: no step since
    assert "decay_fraction" not in none.diagnostics()


# cwd on Adam also has its own kernel, generated by torch.compile (lpwd/cautious.py): held to the equations
# and to the separate pass above (mask, decay mass, R_op), compiling as few graphs as it can
def test_cwd_compiled_step_matches_the_equations():
    model = make_model()
    opt = lpwd.build_optimizer(model, "cwd", LR0, LAM, "adam", compile_step=True)
    train(model, opt, 6)
    assert opt._cautious_compiled_once  # not the separate pass after a failed compile
    ref = reference("cwd", "adam", 6, {n: 1.0 for n, _ in model.named_parameters()})
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_cwd_compiled_step_agrees_with_the_separate_pass_in_every_option():
    """Per-group lr and lambda, amsgrad in one group and maximize in the other, R_op and the decay mass
    counted every other step, and the state handed over midway: the compiled kernel (one pass: Adam,
    mask and decay) and torch's kernel plus the separate mask pass give the same run."""
    def build(model, compile_step):
        first, *rest = list(model.parameters())
        groups = [{"params": [first], "lr": 2 * LR0, "amsgrad": True},
                  {"params": rest, "weight_decay": 0.3, "maximize": True}]
        return lpwd.DecayedAdam(groups, LR0, LAM, variant="cwd", model=model, compile_step=compile_step,
                                diagnostics_every=2, diagnostics_sample=None)

    assert_compiled_step_is_the_separate_pass(make_model, build, train)


def assert_compiled_step_is_the_separate_pass(make_model, build, train):
    """``build(model, compile_step)`` twice, 3 steps each with R_op and the decay mass on every other step:
    the same weights and diagnostics; then each resumes the other's checkpoint (the base's own state
    layout) for 3 steps more and they still agree."""
    compiled_model, separate_model = make_model(), make_model()
    compiled, separate = build(compiled_model, True), build(separate_model, False)
    train(compiled_model, compiled, 3)
    train(separate_model, separate, 3)
    assert compiled._cautious_compiled_once and compiled._cautious_kernel is not None
    assert not separate._cautious_compiled_once
    for p, q in zip(compiled_model.parameters(), separate_model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    ours, theirs = compiled.diagnostics(), separate.diagnostics()
    assert ours["r_op_steps"] == theirs["r_op_steps"] == 2
    assert ours["r_op"] == pytest.approx(theirs["r_op"]) and ours["decay_fraction"] == pytest.approx(theirs["decay_fraction"])
    swapped_c, swapped_s = build(compiled_model, False), build(separate_model, True)
    swapped_c.load_state_dict(compiled.state_dict())
    swapped_s.load_state_dict(separate.state_dict())
    train(compiled_model, swapped_c, 3, start=3)
    train(separate_model, swapped_s, 3, start=3)
    for p, q in zip(compiled_model.parameters(), separate_model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    assert swapped_s._cautious_compiled_once


def test_the_default_variant_is_lpwd():
    model = make_model()
    opt = lpwd.DecayedAdam(list(model.parameters()), LR0, LAM, model=model)
    assert opt.variant == "lpwd"


@pytest.mark.parametrize("saved_by", [torch.optim.Adam, torch.optim.AdamW])
def test_a_torch_adam_checkpoint_loads_into_decayed_adam(saved_by):
    """A run of torch's own Adam or AdamW resumed as lpwd: the moments and step counts carry over, the
    layer scales and the kernel's decay mode stay this optimizer's, and the next steps are exactly an lpwd
    optimizer's that had those moments."""
    model = make_model()
    plain = saved_by(decay_groups_of(model), lr=LR0)
    train(model, plain, 2)
    state = plain.state_dict()
    twin = make_model()
    twin.load_state_dict(model.state_dict())
    ours = lpwd.build_optimizer(model, "lpwd", LR0, LAM)
    ours.load_state_dict(state)
    reference_opt = lpwd.build_optimizer(twin, "lpwd", LR0, LAM)
    reference_opt.load_state_dict(copy.deepcopy(ours.state_dict()))  # torch would share the moments' tensors
    assert [g["layer_scales"] for g in ours.param_groups] == [g["layer_scales"] for g in reference_opt.param_groups]
    assert all(not g.get("decoupled_weight_decay", False) for g in ours.param_groups)
    assert all(ours.state[p]["step"] == 2 for p in model.parameters())
    train(model, ours, 2, start=2)
    train(twin, reference_opt, 2, start=2)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def decay_groups_of(model):
    return [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": LAM},
            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]


def test_the_compiled_cautious_step_stays_float64_on_a_float64_model():
    """Its coefficients are not cast to float32 there: the same run as the separate pass to 1e-12."""
    compiled_model, separate_model = make_model(dtype=torch.float64), make_model(dtype=torch.float64)
    compiled = lpwd.build_optimizer(compiled_model, "cwd", LR0, LAM, "adam", compile_step=True)
    separate = lpwd.build_optimizer(separate_model, "cwd", LR0, LAM, "adam")
    for t in range(3):
        for model, opt in ((compiled_model, compiled), (separate_model, separate)):
            opt.zero_grad()
            loss_of(model, t, torch.float64).backward()
            opt.step()
    assert compiled._cautious_compiled_once
    for p, q in zip(compiled_model.parameters(), separate_model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-12)
