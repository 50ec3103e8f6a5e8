"""Where pwd/lpwd's pre-forward decay runs, in the loops users write: every forward that can use a
parameter applies it once per step, or the user is told in one line what to change."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

import lpwd

from .test_training_setups import counting_decays, data, mlp, train

LR, LAM, STEPS = 0.05, 0.5, 4


class Holder(nn.Module):
    """A LightningModule's shape: the network is an attribute, and the loop calls ``holder.net(x)``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def run(model, opt, forward, steps=STEPS):
    """Train with an lr that changes every step; the weights after, and when the decay ran."""
    decays = counting_decays(opt) if isinstance(opt, lpwd.DecayedAdam) else None
    return train(model, opt, forward, steps), decays


def eager(variant):
    model = mlp()
    return run(model, lpwd.build_optimizer(model, variant, LR, LAM), model)[0]


def same(a, b):
    return all(torch.allclose(p, q, rtol=0, atol=1e-6) for p, q in zip(a, b))


@pytest.mark.parametrize("variant", ["pwd", "lpwd"])
@pytest.mark.parametrize("case", ["model.forward(x)", "holder.net(x)", "checkpoint_sequential",
                                  "checkpoint_sequential reentrant", "checkpoint reentrant", "pre_forward()"])
def test_forwards_that_skip_the_models_own_call_still_decay_once_per_step(case, variant):
    model = mlp()
    if case == "holder.net(x)":  # built on the holder, as build_optimizer(self) in configure_optimizers
        holder = Holder(model)
        opt, forward = lpwd.build_optimizer(holder, variant, LR, LAM), holder.net
    elif case == "model.forward(x)":
        opt, forward = lpwd.build_optimizer(model, variant, LR, LAM), model.forward
    elif case == "checkpoint_sequential":
        opt = lpwd.build_optimizer(model, variant, LR, LAM)
        forward = lambda x: checkpoint_sequential(model, 2, x, use_reentrant=False)  # noqa: E731
    elif case == "checkpoint_sequential reentrant":  # torch's default: segments but the last under no_grad
        opt = lpwd.build_optimizer(model, variant, LR, LAM)
        forward = lambda x: checkpoint_sequential(model, 3, x.requires_grad_(), use_reentrant=True)  # noqa: E731
    elif case == "checkpoint reentrant":  # the whole model in one reentrant checkpoint
        opt = lpwd.build_optimizer(model, variant, LR, LAM)
        forward = lambda x: checkpoint(model, x.requires_grad_(), use_reentrant=True)  # noqa: E731
    else:  # a loop no hook sees: an optimizer built from parameters, decayed by hand
        opt = lpwd.DecayedAdam(*groups_of(model), variant=variant, model=model)
        opt.detach()

        def forward(x):
            opt.pre_forward()
            return model(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the intended update: nothing to warn about
        got, decays = run(model, opt, forward)
    assert decays == list(range(STEPS))
    assert same(got, eager(variant))


def groups_of(model):
    """torch.optim-style arguments: decay and no-decay groups, as Hugging Face's Trainer builds them."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay}, {"params": rest, "weight_decay": 0.0}], LR, LAM


def test_a_forward_no_hook_sees_is_said_once_and_strict_refuses_it():
    """The optimizer built on one model, the loop training a different module holding the same
    parameters: the decay lands in step(), wd's update, and the user is told how to fix it."""
    model = mlp()
    opt = lpwd.DecayedAdam(*groups_of(model), variant="pwd")  # no model=: attached to nothing
    with pytest.warns(RuntimeWarning, match=r"attach\(module\).*pre_forward\(\)") as caught:
        got, decays = run(model, opt, model)
    assert len([w for w in caught if "pending" in str(w.message)]) == 1  # once, not every step
    assert decays == list(range(STEPS))
    assert same(got, eager("wd"))  # what it then is: AdamW, which is why it is said
    strict = lpwd.DecayedAdam(*groups_of(mlp()), variant="pwd", strict=True)
    with pytest.raises(RuntimeError, match="pre_forward"):
        run(mlp(), strict, mlp())


def test_a_forward_recomputed_inside_backward_with_the_decay_pending_is_not_decayed_there():
    """A reentrant checkpoint whose forward ran before the optimizer was attached: its recompute in
    backward finds the decay pending and must not apply it between the loss and its gradient."""
    model = mlp()
    opt = lpwd.DecayedAdam(*groups_of(model), variant="pwd")
    x, y = data(0)
    with pytest.warns(RuntimeWarning) as caught:
        loss = nn.functional.cross_entropy(checkpoint(model, x.requires_grad_(), use_reentrant=True), y)
        opt.attach(model)
        before = [p.detach().clone() for p in model.parameters()]
        loss.backward()
    said = " ".join(str(w.message) for w in caught)
    assert "use_reentrant=False" in said and "pre_forward" in said
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before)) and opt._pending


def test_a_deep_copy_of_the_model_never_decays_the_original():
    model = mlp()
    opt = lpwd.build_optimizer(model, "lpwd", LR, LAM)
    teacher = copy.deepcopy(model)  # an EMA or teacher copy carries the hooks, not the parameters
    before = [p.detach().clone() for p in model.parameters()]
    teacher(data(0)[0]).sum().backward()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before)) and opt._pending
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), before))


def test_a_gradient_enabled_evaluation_between_step_and_scheduler_step_is_said():
    model = mlp()
    opt = lpwd.build_optimizer(model, "pwd", LR, LAM)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = data(0)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    model(x)  # evaluation without no_grad: takes the next step's decay at the old lr
    sched.step()
    with pytest.warns(RuntimeWarning, match=r"torch.no_grad\(\)"):
        opt.step()


def test_param_groups_with_their_own_lr_and_decay_match_torch_plus_the_shrink_by_hand():
    """The constructor reads like torch.optim: per-group lr and weight_decay (a lower backbone lr),
    lpwd's depths from model=. Reference: torch's Adam on the same groups, each weight shrunk by
    (1 - lr_g lambda_g l/L) before the forward pass."""
    def groups(model):
        first, rest = model[0], [m for m in list(model)[1:] if isinstance(m, nn.Linear)]
        return [{"params": [first.weight], "lr": LR / 10, "weight_decay": 2 * LAM},
                {"params": [m.weight for m in rest]},
                {"params": [first.bias] + [m.bias for m in rest], "weight_decay": 0.0}]

    model = mlp()
    ours = run(model, lpwd.DecayedAdam(groups(model), LR, LAM, variant="lpwd", model=model), model)[0]
    ref_model = mlp()
    depth = {id(p): l / L for (n, p), (l, L) in zip(ref_model.named_parameters(),
                                                     lpwd.layer_indices(ref_model).values())}
    rates = [2 * LAM, LAM, 0.0]  # lambda per group, as passed above
    ref_opt = torch.optim.Adam([{**g, "weight_decay": 0.0} for g in groups(ref_model)], LR)

    @torch.no_grad()
    def forward(x):
        for g, rate in zip(ref_opt.param_groups, rates):
            for p in g["params"]:
                p.mul_(1 - g["lr"] * rate * depth[id(p)])
        with torch.enable_grad():
            return ref_model(x)

    ref = run(ref_model, ref_opt, forward)[0]
    assert same(ours, ref)


@pytest.mark.parametrize("variant", ["wd", "lpwd", "cwd"])
def test_maximize_climbs_what_minimize_descends(variant):
    def train(maximize):
        model = mlp()
        opt = lpwd.build_optimizer(model, variant, LR, LAM, maximize=maximize)
        sign = -1.0 if maximize else 1.0
        for t in range(STEPS):
            x, y = data(t)
            opt.zero_grad()
            (sign * nn.functional.cross_entropy(model(x), y)).backward()
            opt.step()
        return [p.detach() for p in model.parameters()]

    assert same(train(True), train(False))


def test_lpwd_without_depths_and_bad_group_rates_name_the_fix():
    model = mlp()
    with pytest.raises(ValueError, match="model="):
        lpwd.DecayedAdam(model.parameters(), LR, LAM, variant="lpwd")
    with pytest.raises(ValueError, match="weight_decay"):
        lpwd.DecayedSGD([{"params": list(model.parameters()), "weight_decay": -1.0}], LR, variant="pwd")
    with pytest.raises(ValueError, match="not in model="):
        lpwd.DecayedAdam(mlp().parameters(), LR, LAM, variant="lpwd", model=model)
    with pytest.raises(TypeError, match=r"lpwd.DecayedAdam\(params"):
        lpwd.build_optimizer([{"params": list(model.parameters())}], "pwd", LR, LAM)
