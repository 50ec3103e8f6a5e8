"""Cautious weight decay on Adam as one kernel that ``torch.compile`` generates (``compile_step=True``).

cwd's mask needs the sign of Adam's update u per coordinate, which torch's fused
Adam does not expose. Outside the kernel, reading it costs several extra passes
over the weights; on a small-image resnet18 that is a tenth to a quarter of a
whole training step on a CPU. Adam's update divides m_t by a positive number, so
sign(u) = sign(m_t): written as one function of every tensor, Adam's moments, the
mask and the decay are fused by inductor into one pass per tensor, as many memory
passes as torch's fused AdamW.

The function is exact to the equation (``theta - lr (u + lambda 1[u theta >= 0] theta)``,
Adam's bias corrections and amsgrad as torch computes them) and correct run eagerly
too; compiling only fuses it. It keeps torch's Adam state layout (``step``,
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``), so a checkpoint moves freely
between this path and torch's kernels. The first step compiles (tens of seconds
on a CPU; torch caches the result on disk), so it pays on long runs of larger models.
"""

from __future__ import annotations

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


_compiled = None


def compiled():
    """The compiled kernel, built once per process (torch caches its code on disk across processes)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(adam_cautious_)
    return _compiled


def supported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why this optimizer's step cannot take the compiled path now (None: it can)."""
    if getattr(optimizer, "grad_scale", None) is not None:
        return "a GradScaler hands the fused kernel scaled gradients"
    for group in optimizer.param_groups:
        if group.get("differentiable") or group.get("capturable"):
            return "differentiable or capturable Adam"
        for p in group["params"]:
            if p.grad is not None and (p.grad.is_sparse or torch.is_complex(p) or type(p).__name__ == "DTensor"):
                return "sparse gradients, complex or sharded (DTensor) parameters"
    return None


@torch.no_grad()
def step(optimizer: torch.optim.Optimizer, shrink_of: dict[int, float], count: bool, kernel):
    """Adam + cautious decay over every parameter of ``optimizer`` through ``kernel``.

    ``shrink_of``: id(param) -> lr * lambda_p for the decayed tensors. A decayed tensor without
    a gradient is shrunk whole (u = 0 agrees with any sign), as the unfused path does.
    Returns (coordinates decayed, coordinates counted) when ``count`` (the first a tensor on
    the parameters' device, read only when the diagnostics are), else (0, 0).
    """
    params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, hyper, betas, eps = ([] for _ in range(9))
    gradless = []
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        for p in group["params"]:
            shrink = shrink_of.get(id(p), 0.0)
            if p.grad is None:
                if shrink:
                    gradless.append((p, shrink))
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
            hyper.append((lr, shrink))
            betas.append(tuple(float(b) for b in group["betas"]))
            eps.append(float(group["eps"]))
    decayed, total = 0.0, 0
    if params:
        device = params[0].device
        torch._foreach_add_(steps, 1)
        t = torch.stack([s.to(device, torch.float64) for s in steps])
        lr, shrink = torch.tensor(hyper, dtype=torch.float64, device=device).unbind(1)
        beta1, beta2 = torch.tensor(betas, dtype=torch.float64, device=device).unbind(1)
        # float32 coefficients for float32 (and lower) weights; a float64 model keeps them in float64, so the
        # compiled step is as exact as the equations there too
        wide = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        coefficients = torch.stack([lr / (1 - beta1 ** t), (1 - beta2 ** t).rsqrt(), shrink], 1).to(wide)
        try:
            counts = kernel(params, grads, exp_avgs, exp_avg_sqs, max_sqs, coefficients, betas, eps, count)
        except Exception:  # not compiled (so nothing written): the step counters go back for torch's kernel
            torch._foreach_sub_(steps, 1)
            raise
        if count:
            decayed = (counts * (shrink > 0)).sum()
            total = sum(p.numel() for p, (_, s) in zip(params, hyper) if s)
    for p, shrink in gradless:
        p.mul_(1 - shrink)
        if count:
            decayed, total = decayed + p.numel(), total + p.numel()
    return decayed, total
