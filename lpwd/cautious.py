"""Cautious weight decay fused into the base's update, as one kernel that ``torch.compile`` generates
(``compile_step=True``), on Adam and on timm's Lion.

cwd's mask needs the sign of the base's update u per coordinate, which a base's own
kernel does not expose. Outside the kernel, reading it costs a copy of the weights
and several passes more; on a small-image resnet18 that is a tenth to a quarter of a
whole training step on a CPU. For these two bases the sign is known before the update:
Adam divides m_t by a positive number, so sign(u) = sign(m_t); Lion's update is
sign(beta1 m + (1 - beta1) g) itself. Written as one function of every tensor, the
base's update, the mask and the decay are fused by inductor into one pass per tensor,
as many memory passes as the base's own step.

Each function is exact to the equation (``theta - lr (u + lambda 1[u theta >= 0] theta)``,
with the base's update as torch computes Adam's, bias corrections and amsgrad
included, and as timm computes Lion's) and correct run eagerly too; compiling only
fuses it. Each keeps its base's state layout (Adam's ``step``, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``; Lion's ``exp_avg``), so a checkpoint moves freely
between this path and the base's own kernel. The first step compiles (tens of seconds
on a CPU; torch caches the result on disk), so it pays on long runs of larger models.

On any other base (Muon, Adafactor, SGD, a class passed to ``lpwd.decayed``) u's sign is
known only once the base has stepped, so the weights are still copied before its step,
but the mask and the decay after it (:func:`masked_decay_`) are one compiled pass
instead of four.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch


def adam_cautious_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                   exp_avg_sqs: list[torch.Tensor], max_exp_avg_sqs: list[torch.Tensor | None],
                   coefficients: torch.Tensor, betas: list[tuple[float, float]], eps: list[float],
                   count: bool) -> torch.Tensor | None:
    """One Adam step with cautious decay for every tensor, in place.

    ``coefficients[i]`` holds tensor i's step size lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)
    and its shrink lr * lambda_p (0: not decayed): computed outside, once per tensor, so
    the kernel does no per-coordinate powers and an lr schedule does not recompile.
    ``max_exp_avg_sqs[i]`` is None unless its group uses amsgrad. Gradients are already
    negated for ``maximize``. With ``count``, returns how many coordinates each tensor decayed.
    """
    counts = []
    for i, p in enumerate(params):
        g, (beta1, beta2) = grads[i], betas[i]
        step_size, bias2_root, shrink = coefficients[i, 0], coefficients[i, 1], coefficients[i, 2]
        m = torch.lerp(exp_avgs[i], g, 1 - beta1)
        v = exp_avg_sqs[i] * beta2 + (1 - beta2) * g * g
        if max_exp_avg_sqs[i] is not None:
            v_max = torch.maximum(max_exp_avg_sqs[i], v)
            max_exp_avg_sqs[i].copy_(v_max)
        else:
            v_max = v
        agree = m * p >= 0  # sign(u) = sign(m_t): Adam divides m_t by a positive number
        p.copy_(p - step_size * (m / (v_max.sqrt() * bias2_root + eps[i])) - torch.where(agree, shrink * p, 0))
        exp_avgs[i].copy_(m)
        exp_avg_sqs[i].copy_(v)
        if count:
            counts.append(agree.sum(dtype=torch.float32))
    return torch.stack(counts) if count else None


def lion_cautious_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                   coefficients: torch.Tensor, betas: list[tuple[float, float]], count: bool) -> torch.Tensor | None:
    """One Lion step (timm's: u = sign(lerp(m, g, 1 - beta1)), theta - lr u, m <- lerp(m, g, 1 - beta2))
    with cautious decay for every tensor, in place. ``coefficients[i]`` holds lr and the shrink
    lr * lambda_p; gradients are already negated for ``maximize``."""
    counts = []
    for i, p in enumerate(params):
        g, (beta1, beta2) = grads[i], betas[i]
        lr, shrink = coefficients[i, 0], coefficients[i, 1]
        u = torch.lerp(exp_avgs[i], g, 1 - beta1).sign()
        agree = u * p >= 0
        p.copy_(p - lr * u - torch.where(agree, shrink * p, 0))
        exp_avgs[i].copy_(torch.lerp(exp_avgs[i], g, 1 - beta2))
        if count:
            counts.append(agree.sum(dtype=torch.float32))
    return torch.stack(counts) if count else None


def masked_decay_(params: list[torch.Tensor], befores: list[torch.Tensor], shrinks: torch.Tensor,
                  count: bool) -> torch.Tensor | None:
    """After the base's step: theta <- theta' - shrink 1[(theta_t - theta') theta_t >= 0] theta_t for every
    tensor, in place, with lr u = theta_t - theta' (``befores``: theta_t). ``shrinks[i]`` is tensor i's
    lr * lambda_p. With ``count``, returns how many coordinates each tensor decayed."""
    counts = []
    for i, p in enumerate(params):
        before = befores[i]
        agree = (before - p) * before >= 0
        p.copy_(p - torch.where(agree, shrinks[i] * before, 0))
        if count:
            counts.append(agree.sum(dtype=torch.float32))
    return torch.stack(counts) if count else None


def coefficient_dtype(params: list[torch.Tensor]) -> torch.dtype:
    """float32 coefficients for float32 (and lower) weights; a float64 model keeps them in float64, so the
    compiled step is as exact as the equations there too."""
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32


def _adam_step(optimizer: torch.optim.Optimizer, shrink_of: dict[int, float], count: bool, kernel
               ) -> tuple[list[tuple[torch.Tensor, float]], torch.Tensor | None]:
    """Gathers Adam's tensors and state for :func:`adam_cautious_`; returns [(param, shrink)] of the
    decayed tensors stepped and the kernel's counts."""
    params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, hyper, betas, eps = ([] for _ in range(9))
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if not state:
                on_device = group.get("fused") or group.get("capturable")
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
                for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()):
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(-p.grad if group["maximize"] else p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            max_sqs.append(state["max_exp_avg_sq"] if group["amsgrad"] else None)
            steps.append(state["step"])
            hyper.append((lr, shrink_of.get(id(p), 0.0)))
            betas.append(tuple(float(b) for b in group["betas"]))
            eps.append(float(group["eps"]))
    if not params:
        return [], None
    device = params[0].device
    torch._foreach_add_(steps, 1)
    t = torch.stack([s.to(device, torch.float64) for s in steps])
    lr, shrink = torch.tensor(hyper, dtype=torch.float64, device=device).unbind(1)
    beta1, beta2 = torch.tensor(betas, dtype=torch.float64, device=device).unbind(1)
    coefficients = torch.stack([lr / (1 - beta1 ** t), (1 - beta2 ** t).rsqrt(), shrink], 1)
    try:
        counts = kernel(params, grads, exp_avgs, exp_avg_sqs, max_sqs, coefficients.to(coefficient_dtype(params)),
                        betas, eps, count)
    except Exception:  # not compiled (so nothing written): the step counters go back for torch's kernel
        torch._foreach_sub_(steps, 1)
        raise
    return [(p, s) for p, (_, s) in zip(params, hyper)], counts


def _lion_step(optimizer: torch.optim.Optimizer, shrink_of: dict[int, float], count: bool, kernel
               ) -> tuple[list[tuple[torch.Tensor, float]], torch.Tensor | None]:
    """Gathers Lion's tensors and state for :func:`lion_cautious_` (see :func:`_adam_step`)."""
    params, grads, exp_avgs, hyper, betas = ([] for _ in range(5))
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(-p.grad if group["maximize"] else p.grad)
            exp_avgs.append(state["exp_avg"])
            hyper.append((float(group["lr"]), shrink_of.get(id(p), 0.0)))
            betas.append(tuple(float(b) for b in group["betas"]))
    if not params:
        return [], None
    coefficients = torch.tensor(hyper, dtype=coefficient_dtype(params), device=params[0].device)
    counts = kernel(params, grads, exp_avgs, coefficients, betas, count)
    return [(p, s) for p, (_, s) in zip(params, hyper)], counts


@dataclass(frozen=True)
class Fused:
    """A base whose update and cautious decay run as one kernel."""

    function: Callable  # the eager function that torch.compile fuses
    gather: Callable  # (optimizer, shrink_of, count, kernel) -> ([(param, shrink)], counts)
    # the state tensor whose sign is u's after the step (the R_op probe reads it); None: not recoverable,
    # so probed steps take the base's kernel and the separate pass
    direction: str | None


FUSED = {"torch.optim:Adam": Fused(adam_cautious_, _adam_step, "exp_avg"),
         "timm.optim:Lion": Fused(lion_cautious_, _lion_step, None)}

_compiled: dict[str, Callable] = {}


def fused_for(cls: type[torch.optim.Optimizer]) -> str | None:
    """The key of :data:`FUSED` for this base class, or None. Exactly that class: a subclass may step
    otherwise. A base's library is imported already when its class is passed: nothing is imported."""
    for key in FUSED:
        module, name = key.split(":")
        if getattr(sys.modules.get(module), name, None) is cls:
            return key
    return None


def compiled(key: str) -> Callable:
    """The compiled kernel of one base (``"mask"``: :func:`masked_decay_`), built once per process (torch
    caches its code on disk across processes)."""
    if key not in _compiled:
        _compiled[key] = torch.compile(masked_decay_ if key == "mask" else FUSED[key].function)
    return _compiled[key]


def supported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why this optimizer's step cannot take the compiled path now (None: it can)."""
    if getattr(optimizer, "grad_scale", None) is not None:
        return "a GradScaler hands the fused kernel scaled gradients"
    for group in optimizer.param_groups:
        if group.get("differentiable") or group.get("capturable"):
            return "differentiable or capturable Adam"
        if group.get("caution"):
            return "timm's caution option masks Lion's update itself"
        for p in group["params"]:
            if p.grad is not None and (p.grad.is_sparse or torch.is_complex(p) or type(p).__name__ == "DTensor"):
                return "sparse gradients, complex or sharded (DTensor) parameters"
    return None


@torch.no_grad()
def step(optimizer: torch.optim.Optimizer, key: str, decayed_tensors: list[tuple[torch.Tensor, float]], count: bool,
         kernel):
    """The base's update + cautious decay over every parameter of ``optimizer`` through ``kernel``.

    ``decayed_tensors``: (param, lr * lambda_p) for the decayed tensors. A decayed tensor without
    a gradient is shrunk whole (u = 0 agrees with any sign), as the unfused path does.
    Returns (coordinates decayed, coordinates counted) when ``count`` (the first a tensor on
    the parameters' device, read only when the diagnostics are), else (0, 0).
    """
    shrink_of = {id(p): s for p, s in decayed_tensors}
    stepped, counts = FUSED[key].gather(optimizer, shrink_of, count, kernel)
    with_grad = {id(p) for p, _ in stepped}
    decayed, total = 0.0, 0
    if count and stepped:
        shrinks = torch.tensor([s for _, s in stepped], device=counts.device)
        decayed = (counts * (shrinks > 0)).sum()
        total = sum(p.numel() for p, s in stepped if s)
    for p, shrink in decayed_tensors:
        if shrink and id(p) not in with_grad:
            p.mul_(1 - shrink)
            if count:
                decayed, total = decayed + p.numel(), total + p.numel()
    return decayed, total
