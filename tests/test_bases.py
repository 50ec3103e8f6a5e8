"""The decay variants on Muon, Lion and Adafactor against the base with its own decay off plus the shrink
written out (for ``wd``: the base's own decoupled decay), step by step with a changing lr."""

import copy
import warnings

import pytest
import torch
from torch import nn

import lpwd

from .test_optimizer import assert_compiled_step_is_the_separate_pass

LR0, LAM = 0.02, 0.9
LR_FACTORS = [1.0, 0.7, 1.2, 0.5, 0.9, 0.4]
STEPS = len(LR_FACTORS)


def base_class(base):
    if base == "muon":
        from timm.optim import Muon
        return Muon
    if base == "lion":
        from timm.optim import Lion
        return Lion
    return torch.optim.Adafactor


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 5))


def batch(t):
    g = torch.Generator().manual_seed(200 + t)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(5, (8,), generator=g)


def loss_of(model, t):
    x, y = batch(t)
    return nn.functional.cross_entropy(model(x), y)


def train(model, opt):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: LR_FACTORS[t % STEPS])
    for t in range(STEPS):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
        sched.step()
    return model


def reference(variant, base, scales):
    """The base optimizer as its library ships it, its decay off (on, for wd), and the shrink by hand."""
    model = make_model()
    named = dict(model.named_parameters())
    decayed = {n for n, p in named.items() if p.ndim >= 2}
    head = {"8.weight", "8.bias"}  # Muon: the output layer and 1-D tensors on its AdamW fallback
    groups = []
    for names, fallback in ((sorted(decayed - head), False), (sorted(head & decayed), True),
                            (sorted(set(named) - decayed), True)):
        g = {"params": [named[n] for n in names], "names": names,
             "weight_decay": LAM if variant == "wd" and names[0] in decayed else 0.0}
        if base == "muon":
            g["use_fallback"] = fallback
        groups.append(g)
    if base != "muon":  # one decayed and one undecayed group, as build_optimizer groups them
        groups = [{"params": groups[0]["params"] + groups[1]["params"], "names": groups[0]["names"] + groups[1]["names"],
                   "weight_decay": groups[0]["weight_decay"]}, groups[2]]
    opt = base_class(base)([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=LR0)
    for t in range(STEPS):
        lr = LR0 * LR_FACTORS[t]
        for g in opt.param_groups:
            g["lr"] = lr
        shrink = {n: lr * LAM * scales[n] for n in decayed}
        with torch.no_grad():
            if variant in ("pwd", "lpwd"):
                for n in decayed:
                    named[n].mul_(1 - shrink[n])
        opt.zero_grad()
        loss_of(model, t).backward()
        with torch.no_grad():
            if variant == "l2":
                for n in decayed:
                    named[n].grad.add_(named[n], alpha=LAM)
            before = {n: named[n].clone() for n in decayed}
        opt.step()
        with torch.no_grad():
            for n in decayed:
                p = named[n]
                if variant == "rwd":
                    p.mul_(1 - shrink[n])
                elif variant == "cwd":  # decay only where the update (before - p) and the weight agree
                    agree = ((before[n] - p) * before[n] >= 0).to(p.dtype)
                    p.sub_(shrink[n] * agree * before[n])
    return model


@pytest.mark.parametrize("base", ["muon", "lion", "adafactor"])
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_variant_on_base_matches_the_base_plus_the_written_out_shrink(variant, base):
    model = make_model()
    opt = lpwd.build_optimizer(model, variant, LR0, LAM, base)
    train(model, opt)
    depth = lpwd.layer_indices(model)
    scales = {n: (l / L if variant == "lpwd" else 1.0) for n, (l, L) in depth.items()}
    ref = reference(variant, base, scales)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=lambda m: f"{variant}/{base} {n}: {m}")
    if variant not in ("none",):  # the decay did something: the comparison above is not vacuous
        plain = train(make_model(), lpwd.build_optimizer(make_model(), "none", LR0, LAM, base))
        assert any((p - q).abs().max() > 1e-4 for p, q in zip(model.parameters(), plain.parameters()))


@pytest.mark.parametrize("base", ["muon", "lion", "adafactor"])
@pytest.mark.parametrize("variant", lpwd.VARIANTS)
def test_every_variant_at_zero_decay_is_bit_identical_to_none_on_the_base(variant, base):
    runs = []
    for v in ("none", variant):
        model = make_model()
        train(model, lpwd.build_optimizer(model, v, LR0, 0.0, base))
        runs.append([p.detach().clone() for p in model.parameters()])
    for p, q in zip(*runs):
        assert torch.equal(p, q)


def test_muon_puts_hidden_weights_on_muon_and_the_output_layer_on_adamw():
    model = make_model()
    opt = lpwd.build_optimizer(model, "lpwd", LR0, LAM, "muon")
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = sorted(names[id(p)] for g in opt.param_groups if not g["use_fallback"] for p in g["params"])
    assert on_muon == ["0.weight", "3.weight", "6.weight"]  # conv kernels (flattened by timm) and the hidden linear


@pytest.mark.parametrize("base", ["muon", "lion", "adafactor"])
def test_a_base_checkpoint_resumes_bit_identically(base):
    model = make_model()
    opt = lpwd.build_optimizer(model, "lpwd", LR0, LAM, base)
    train(model, opt)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    x, y = batch(99)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    again = make_model()
    again.load_state_dict(saved_model)
    resumed = lpwd.build_optimizer(again, "lpwd", LR0, LAM, base)
    resumed.load_state_dict(saved_opt)
    resumed.zero_grad()
    nn.functional.cross_entropy(again(x), y).backward()
    resumed.step()
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


# cwd on Lion also has its own kernel, generated by torch.compile (lpwd/cautious.py): Lion's update is the
# sign of lerp(m, g, 1 - beta1), so the mask is known inside the update and the whole step is one pass
def test_cwd_compiled_step_on_lion_matches_the_written_out_shrink():
    model = make_model()
    opt = lpwd.build_optimizer(model, "cwd", LR0, LAM, "lion", compile_step=True, diagnostics_every=0)
    train(model, opt)
    assert opt._cautious_compiled_once and opt._cautious_kernel is not None  # not the separate pass
    ref = reference("cwd", "lion", {n: 1.0 for n, _ in model.named_parameters()})
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=lambda m: f"{n}: {m}")


def test_cwd_compiled_step_on_lion_agrees_with_the_separate_pass_in_every_option():
    """Per-group lr and lambda, maximize in one group, R_op and the decay mass on every other step (those
    steps take Lion's kernel and the separate pass: Lion's state does not keep u's sign), and the state
    handed over midway: the compiled kernel and Lion plus the separate mask pass give the same run."""
    def build(model, compile_step):
        first, *rest = list(model.parameters())
        groups = [{"params": [first], "lr": 2 * LR0},
                  {"params": rest, "weight_decay": 0.3, "maximize": True}]
        return lpwd.decayed(base_class("lion"), groups, LR0, LAM, variant="cwd", model=model,
                            compile_step=compile_step, diagnostics_every=2, diagnostics_sample=None)

    def run(model, opt, steps, start=0):
        for t in range(start, start + steps):
            opt.zero_grad()
            loss_of(model, t).backward()
            opt.step()

    assert_compiled_step_is_the_separate_pass(make_model, build, run)


def test_cwd_compiled_step_on_lion_stays_float64_on_a_float64_model():
    runs = []
    for compile_step in (True, False):
        model = make_model().double()
        opt = lpwd.build_optimizer(model, "cwd", LR0, LAM, "lion", compile_step=compile_step, diagnostics_every=0)
        for t in range(3):
            x, y = batch(t)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.double()), y).backward()
            opt.step()
        assert opt._cautious_compiled_once == compile_step
        runs.append(list(model.parameters()))
    for p, q in zip(*runs):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("base", ["muon", "adafactor"])
def test_cwd_compile_step_on_a_base_without_a_fused_step_compiles_the_mask_pass(base):
    """Muon's and Adafactor's update signs are known only after their step: the weights are copied before
    it, and the mask and decay after it are one compiled pass, the same run (and decay mass) as the eager pass."""
    runs = []
    for compile_step in (True, False):
        model = make_model()
        opt = lpwd.build_optimizer(model, "cwd", LR0, LAM, base, compile_step=compile_step, diagnostics_every=2)
        assert opt._cautious_kernel is None and (opt._mask_kernel is not None) == compile_step
        train(model, opt)
        assert opt._cautious_compiled_once == compile_step  # the compiled pass ran, not the eager fallback
        runs.append((model, opt.diagnostics()["decay_fraction"]))
    (compiled, fraction), (separate, eager_fraction) = runs
    for p, q in zip(compiled.parameters(), separate.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    assert 0 < fraction < 1 and fraction == pytest.approx(eager_fraction)
    ref = reference("cwd", base, {n: 1.0 for n, _ in compiled.named_parameters()})
    for p, q in zip(compiled.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("base", ["lion", "adafactor"])
def test_a_compile_step_that_cannot_compile_warns_once_and_keeps_the_eager_pass(base):
    """Without inductor's toolchain the first call fails: one warning, and the run is the eager pass's."""
    def no_toolchain(*args):
        raise RuntimeError("InductorError: no working C++ compiler found\nmore lines")

    model, eager_model = make_model(), make_model()
    opt = lpwd.build_optimizer(model, "cwd", LR0, LAM, base, compile_step=True)
    key = "_cautious_kernel" if base == "lion" else "_mask_kernel"
    setattr(opt, key, no_toolchain)
    with pytest.warns(RuntimeWarning) as caught:
        train(model, opt)
    said = [str(w.message) for w in caught if "compile_step" in str(w.message)]
    assert len(said) == 1 and "could not build" in said[0] and "no working C++ compiler found)" in said[0], said
    assert getattr(opt, key) is None and not opt._cautious_compiled_once
    train(eager_model, lpwd.build_optimizer(eager_model, "cwd", LR0, LAM, base))
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert torch.equal(p, q)


class Toy(torch.optim.Optimizer):
    """A base the library does not know: plain gradient descent with a coupled penalty of its own."""

    def __init__(self, params, lr=0.1, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.sub_(g["lr"] * (p.grad + g["weight_decay"] * p))


def test_decayed_wraps_any_optimizer_class_with_its_own_decay_off():
    """An unknown base's own weight_decay is never used: wd is the shrink before its update."""
    model, ref = make_model(), make_model()
    opt = lpwd.decayed(Toy, lr=LR0, weight_decay=LAM, variant="wd", model=model)
    assert type(opt).__name__ == "DecayedToy" and lpwd.decayed_class(Toy) is type(opt)
    train(model, opt)
    named = dict(ref.named_parameters())
    for t in range(STEPS):
        lr = LR0 * LR_FACTORS[t]
        ref.zero_grad()
        loss_of(ref, t).backward()
        with torch.no_grad():
            for n, p in named.items():
                decay = lr * LAM * p if p.ndim >= 2 else 0
                p.sub_(lr * p.grad + decay)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_unknown_base_and_its_arguments_are_named():
    with pytest.raises(ValueError, match="base='rmsprop' is unknown"):
        lpwd.build_optimizer(make_model(), "lpwd", 1e-3, 0.1, "rmsprop")
    with pytest.raises(ValueError, match=r"\['momentum'\] not accepted for base='lion'"):
        lpwd.build_optimizer(make_model(), "lpwd", 1e-3, 0.1, "lion", momentum=0.9)
    with pytest.raises(TypeError, match="torch.optim.Optimizer subclass"):
        lpwd.decayed_class(torch.optim.Adam([nn.Parameter(torch.ones(1))]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lpwd.build_optimizer(make_model(), "lpwd", 1e-3, 0.1, "muon", nesterov=True)
