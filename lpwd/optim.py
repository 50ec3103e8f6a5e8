"""Decay variants as *where* and *how much* decay meets torch's own optimizers.

Every variant is torch's Adam or SGD (fused where the device supports it,
foreach otherwise, single-tensor with ``foreach=False``) with its own weight
decay switched off, plus one multiplicative shrink of the decayed tensors,
``theta <- (1 - lr_t * lambda_p) * theta``, placed at one of three moments:

=========  ==================================  ===============================
variant    where the shrink happens            resulting update
=========  ==================================  ===============================
``none``   nowhere                             theta - lr u
``l2``     inside the base (coupled L2)        g <- g + lambda theta
``wd``     before the base update (inside the     theta - lr u - lr lambda theta
           kernel: Adam's decoupled one, or
           SGD's coupled one without momentum)
``rwd``    after the base update (inside the      (1 - lr lambda)(theta - lr u)
           same kernels, lr and lambda rescaled)
``pwd``    before the next forward pass        see below
``lpwd``   ``pwd`` with lambda_l = lambda f(l, L)
``cwd``    after the base update, only where   theta - lr (u + lambda 1[u theta >= 0] theta)
           the update and the weight agree
           in sign (cautious weight decay)
=========  ==================================  ===============================

The per-step shrink is ``lr * weight_decay`` with the group's *current* lr
(PyTorch's AdamW convention), so any lr scheduler scales decay with lr.

Cautious weight decay (Chen et al., "Cautious Weight Decay", ICLR 2026) needs the
base optimizer's update direction u, which torch's fused kernels do not expose: the
decayed tensors are copied before the base step, and ``theta_t - theta'`` (= lr u)
gives u's sign per coordinate. The decay then never opposes the update, the
"opposing penalty" R_op measures; the fraction of coordinates it decays is its
decay mass, reported as ``decay_fraction`` by ``diagnostics()``.

Pre-weight decay and the forward pre-hook
-----------------------------------------
``pwd``/``lpwd`` decay step t's weights *before* step t's forward pass, with
step t's learning rate, so the gradient is taken at the decayed weights. The
optimizer owns a forward pre-hook on the model it was built for: the first
forward pass after each ``step()`` (and the very first forward pass) that runs
with gradients enabled applies the pending decay, using the lr the group holds
at that moment (after ``scheduler.step()``). Forward passes under
``torch.no_grad()``/``inference_mode`` never decay, so evaluation is safe;
extra forward passes before the next ``step()`` (gradient accumulation) do not
decay twice. If ``step()`` is reached while a decay is still pending (no
forward pass with gradients ran through the model since the last step), the
decay is applied there, before the update. The pending flag is part of
``state_dict()``, so a resumed run continues bit-identically.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from .diagnostics import OpposingPenaltyProbe, layer_weight_norms
from .layers import LayerSchedule, decay_scales, layer_indices, unwrap

VARIANTS = ("none", "l2", "wd", "rwd", "pwd", "lpwd", "cwd")

# where each variant's decoupled shrink happens (None: no decoupled shrink)
PLACEMENT = {
    "none": None,
    "l2": None,
    "wd": "before_update",
    "rwd": "after_update",
    "pwd": "before_forward",
    "lpwd": "before_forward",
    "cwd": "cautious",
}

BASES: dict[str, tuple[type[torch.optim.Optimizer], set[str]]] = {
    "adam": (torch.optim.Adam, {"betas", "eps", "amsgrad"}),
    "sgd": (torch.optim.SGD, {"momentum", "nesterov", "dampening"}),
}


class DecayMixin:
    """Adds a placed decoupled decay and R_op diagnostics to a torch optimizer.

    Param groups carry three extra keys: ``decay_rate`` (lambda, the
    decoupled rate), ``layer_scales`` (f(l, L) per parameter; all 1 except for
    ``lpwd``) and ``layers`` (l per parameter, for per-layer norms). The base
    optimizer's own ``weight_decay`` is lambda only for ``l2`` and 0 otherwise.
    """

    variant: str
    placement: str | None
    _torch_class: type[torch.optim.Optimizer]

    def _init_decay(self, variant, placement, model, fast, probe, rwd_in_kernel=False):
        self.variant = variant
        self.placement = placement
        self._rwd_in_kernel = rwd_in_kernel
        self._fast = fast
        self._probe = probe
        self._steps = 0
        self._pending = self.placement == "before_forward"
        self._hook = None
        self._plan, self._plan_key = [], None
        self._cautious_count, self._cautious_total = None, 0  # coordinates cwd decayed, and considered
        self._buffers: dict = {}
        if self.placement == "before_forward":
            _claim(self)
            # on the wrapped model, so DDP and torch.compile wrappers built before or after both call it
            self._hook = unwrap(model)[0].register_forward_pre_hook(_pre_forward_decay(weakref.ref(self)))

    # -- the decay itself -------------------------------------------------
    def _decay_plan(self) -> list[tuple[dict, list, list, float | None]]:
        """(group, its params, their layer scales, the one scale they share or None) per decayed group.

        Rebuilt only when the groups change (``add_param_group``, a rate set to or from 0):
        on small models the per-step Python of regrouping showed next to the kernels.
        """
        key = [(id(g["params"]), len(g["params"]), g["decay_rate"] != 0) for g in self.param_groups]
        if key != self._plan_key:
            plan = []
            for g in self.param_groups:
                if g["decay_rate"] != 0 and self.placement is not None and g["params"]:
                    scales = [float(s) for s in g["layer_scales"]]
                    shared = scales[0] if all(s == scales[0] for s in scales) else None
                    plan.append((g, list(g["params"]), scales, shared))
            self._plan, self._plan_key = plan, key
        return self._plan

    def _decayed(self):
        """(param, lr * lambda_p) for every tensor the shrink touches."""
        return [(p, float(g["lr"]) * g["decay_rate"] * s)
                for g, params, scales, _ in self._decay_plan() for p, s in zip(params, scales)]

    @torch.no_grad()
    def _apply_decay(self) -> None:
        for group, params, scales, shared in self._decay_plan():
            k = float(group["lr"]) * group["decay_rate"]
            # one scalar for a group whose tensors share a scale (all but lpwd's), else one per tensor
            factors = 1.0 - k * shared if shared is not None else [1.0 - k * s for s in scales]
            if self._fast:
                torch._foreach_mul_(params, factors)
            else:
                for i, p in enumerate(params):
                    p.mul_(factors if shared is not None else factors[i])
        self._pending = False

    def _scratch(self, p: torch.Tensor, which: int) -> torch.Tensor:
        """A buffer shaped like ``p`` kept between steps (cwd's copy of the weights and its mask):
        allocating 2 x the model every step cost more than the arithmetic on a CPU. Not state:
        nothing in it outlives a step, so it is not saved."""
        key = (id(p), which)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = self._buffers[key] = torch.empty_like(p, memory_format=torch.preserve_format)
        return buf

    @torch.no_grad()
    def _snapshot(self) -> list[torch.Tensor]:
        """The decayed tensors before the base step (cwd reads u's sign from how far they move)."""
        params = [p for _, group_params, _, _ in self._decay_plan() for p in group_params]
        olds = [self._scratch(p, 0) for p in params]
        if params:
            torch._foreach_copy_(olds, params) if self._fast else [o.copy_(p) for o, p in zip(olds, params)]
        return olds

    @torch.no_grad()
    def _apply_cautious_decay(self, before: list[torch.Tensor]) -> None:
        """theta <- theta' - lr lambda_p 1[u theta_t >= 0] theta_t, with lr u = theta_t - theta'.

        One tensor at a time: on a CPU, torch's list-by-list ``_foreach`` ops were slower than
        these per-tensor ones, which run multi-threaded."""
        i, counts = 0, []
        for group, params, scales, _ in self._decay_plan():
            k = float(group["lr"]) * group["decay_rate"]
            for p, old, scale in zip(params, before[i:i + len(params)], scales):
                agree = torch.sub(old, p, out=self._scratch(p, 1)).mul_(old).ge_(0)  # 1 where u theta_t >= 0
                counts.append(agree.sum(dtype=torch.float32))
                p.addcmul_(old, agree, value=-k * scale)
            i += len(params)
        if counts:
            total = torch.stack(counts).sum()
            self._cautious_count = total if self._cautious_count is None else self._cautious_count + total
            self._cautious_total += sum(o.numel() for o in before)

    def _eligible(self):
        """Decay-eligible parameters (not excluded as bias/norm/no_weight_decay)."""
        params, layers = [], []
        for group in self.param_groups:
            if group["decay_eligible"]:
                params.extend(group["params"])
                layers.extend(group["layers"])
        return params, layers

    def _skipped_by_grad_scaler(self) -> bool:
        """True when ``torch.amp.GradScaler`` found inf/NaN gradients and hands the step to the fused
        kernel to skip (it sets ``found_inf`` on optimizers whose fused kernels take it). The kernel
        skips its own update; the decay placed around it must be skipped too."""
        found_inf = getattr(self, "found_inf", None)
        return found_inf is not None and bool(found_inf.item())

    # -- the step ---------------------------------------------------------
    def step(self, closure=None):
        loss = None
        if closure is not None:
            # evaluate first so wd's pre-update shrink cannot leak into the gradient
            with torch.enable_grad():
                loss = closure()
        if self._skipped_by_grad_scaler():
            # changes nothing: the kernel skips itself, no shrink, no probe, and the pending
            # pre-weight decay stays as it was (this step's forward already consumed it)
            self._torch_step()
            return loss
        if self._pending:
            self._apply_decay()
        probing = self._probe is not None and self._probe.due(self._steps)
        if probing:
            eligible, _ = self._eligible()
            probing = bool(eligible)
        if probing:
            before = self._probe.snapshot(eligible)
        if self.placement == "before_update":
            self._apply_decay()
        before_update = self._snapshot() if self.placement == "cautious" else None
        shrunk = self._base_step()
        if probing:
            self._probe.record(before, self._shrink_already_taken())
        if self.placement == "after_update" and not shrunk:
            self._apply_decay()
        if before_update:
            self._apply_cautious_decay(before_update)
        self._pending = self.placement == "before_forward"
        self._steps += 1
        return loss

    def _torch_step(self) -> None:
        """The base class's own update, without the wrapper torch adds to ``step``.

        ``torch.optim.Optimizer`` wraps a class's ``step`` (step hooks, a profiler
        range) the first time one of its instances is built. This class's ``step``
        is wrapped like that already; going through ``torch.optim.Adam.step``'s
        wrapper too (present once any plain Adam exists) would run every step hook twice.
        """
        step = self._torch_class.step
        (step.__wrapped__ if getattr(step, "hooked", False) else step)(self)

    def _base_step(self) -> bool:
        """torch's own update; True if it also applied rwd's after-update shrink.

        Adam's decoupled kernel computes theta (1 - lr' wd') - lr' u, and so
        does SGD's coupled kernel without momentum (u = g). With
        lr' = lr (1 - s) and wd' = lambda / (1 - s), s = lr lambda, that is
        (1 - s)(theta - lr u): rwd in one fused pass instead of two. Only for
        0 <= s < 1; a shrink of 1 or more (a collapsing or sign-flipping
        setting) takes the separate pass.
        """
        # only rwd rides in the kernel: every other variant skips the bookkeeping
        shrinks = [float(g["lr"]) * g["decay_rate"] for g in self.param_groups] if self._rwd_in_kernel else []
        if not shrinks or any(s >= 1 for s in shrinks):
            self._torch_step()
            return False
        saved = [(g["lr"], g["weight_decay"]) for g in self.param_groups]
        for g, s in zip(self.param_groups, shrinks):
            if s > 0:
                g["lr"], g["weight_decay"] = float(g["lr"]) * (1 - s), g["decay_rate"] / (1 - s)
        try:
            self._torch_step()
        finally:
            for g, (lr, wd) in zip(self.param_groups, saved):
                g["lr"], g["weight_decay"] = lr, wd
        return True

    def _shrink_already_taken(self):
        """Per sampled coordinate, lr * lambda_p taken off before the update (wd only)."""
        if self.placement not in ("before_update", "in_update"):
            return None
        shrink_of = {id(p): s for p, s in self._decayed()}
        tensors = self._probe.sampled_tensors()
        device = tensors[0][0].device
        values = torch.tensor([shrink_of.get(id(p), 0.0) for p, _ in tensors], device=device)
        counts = torch.tensor([n for _, n in tensors], device=device)
        return torch.repeat_interleave(values, counts).to(tensors[0][0].dtype)

    # -- diagnostics --------------------------------------------------------
    def diagnostics(self, reset: bool = True) -> dict:
        """R_op since the last call and the current per-layer weight norms.

        Returns ``r_op`` (mean over probed steps; NaN when none was probed),
        ``r_op_steps`` (how many), ``weight_norm`` (all decay-eligible weights),
        ``layer_weight_norms`` ({l: norm}) and, for ``cwd``, ``decay_fraction``:
        the fraction of decayed-tensor coordinates its decay touched since the
        last call (its decay mass relative to ``wd``; NaN before any step).
        ``reset=False`` keeps accumulating.
        """
        r_op, n = self._probe.read(reset) if self._probe is not None else (math.nan, 0)
        norms = layer_weight_norms(*self._eligible())
        total = math.sqrt(sum(v * v for v in norms.values()))
        out = {"r_op": r_op, "r_op_steps": n, "weight_norm": total, "layer_weight_norms": norms}
        if self.placement == "cautious":
            count = self._cautious_count
            out["decay_fraction"] = float(count) / self._cautious_total if count is not None else math.nan
            if reset:
                self._cautious_count, self._cautious_total = None, 0
        return out

    def remove_hook(self) -> None:
        """Detach the pre-forward hook (pwd/lpwd), e.g. before building a new optimizer on the same model."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # -- state ----------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state["decay"] = {
            "variant": self.variant,
            "pending": self._pending,
            "steps": self._steps,
            "probe": self._probe.state_dict() if self._probe is not None else None,
        }
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("decay", None)
        if extra is not None and extra["variant"] != self.variant:
            raise ValueError(
                f"optimizer state is for variant {extra['variant']!r}, "
                f"this optimizer is {self.variant!r}"
            )
        super().load_state_dict(state_dict)
        if extra is not None:
            self._pending = extra["pending"]
            self._steps = extra["steps"]
            if self._probe is not None and extra["probe"] is not None:
                self._probe.load_state_dict(extra["probe"])


def _owner(p: torch.Tensor):
    """The live pwd/lpwd optimizer whose forward hook decays ``p``, if any."""
    ref = getattr(p, "_lpwd_pre_decay_owner", None)
    opt = ref() if ref is not None else None
    if opt is None or opt._hook is None:
        return None
    # a deep-copied model carries the attribute but not the parameter the owner holds
    return opt if any(q is p for g in opt.param_groups for q in g["params"]) else None


def _claim(optimizer) -> None:
    """Refuse a second live pre-weight-decay optimizer over the same parameters: both hooks
    would decay them in every forward pass."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if any(_owner(p) is not None for p in params):
        raise ValueError(
            "these parameters already have a live pwd/lpwd optimizer, whose forward hook decays them; "
            "call old_optimizer.remove_hook() (or drop every reference to it) before building another, "
            "or put several parameter subsets in one optimizer's param groups")
    for p in params:
        p._lpwd_pre_decay_owner = weakref.ref(optimizer)


def _pre_forward_decay(optimizer_ref):
    """A forward pre-hook that applies a pending pre-weight decay.

    Holds only a weak reference, so a discarded optimizer never decays again.
    ``torch.compiler.disable``: under ``torch.compile`` the hook runs eagerly
    just before the compiled forward. Traced, its Python flag would not be
    updated (the decay ran twice) and Dynamo would guard on the lr, recompiling
    at every change of a schedule.
    """

    @torch.compiler.disable
    def hook(module, args):
        optimizer = optimizer_ref()
        if optimizer is not None and optimizer._pending and torch.is_grad_enabled():
            optimizer._apply_decay()

    return hook


class DecayedAdam(DecayMixin, torch.optim.Adam):
    """torch.optim.Adam (no own weight decay unless ``l2``) plus a placed decay."""

    _torch_class = torch.optim.Adam


class DecayedSGD(DecayMixin, torch.optim.SGD):
    """torch.optim.SGD (no own weight decay unless ``l2``) plus a placed decay."""

    _torch_class = torch.optim.SGD


_CLASSES = {"adam": DecayedAdam, "sgd": DecayedSGD}


def _fused_supported(params: list[torch.Tensor]) -> bool:
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch
        devices = {"cuda"}
    return all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def build_optimizer(
    model: nn.Module,
    variant: str = "lpwd",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    base: str = "adam",
    *,
    layer_schedule: LayerSchedule = "linear",
    decay_bias_and_norm: bool = False,
    foreach: bool | None = None,
    diagnostics_every: int = 10,
    diagnostics_sample: int | None = 4096,
    diagnostics_seed: int = 0,
    **base_kwargs,
) -> DecayedAdam | DecayedSGD:
    """Build the optimizer of one decay variant for ``model``.

    Args:
        model: the module whose trainable parameters are optimised, plain or
            wrapped (``torch.compile``, DDP, DataParallel; built before or after
            the wrapping). For ``pwd``/``lpwd`` the optimizer registers a forward
            pre-hook on the wrapped model (see the module docstring); one such
            optimizer per parameter at a time.
        variant: one of ``none``, ``l2``, ``wd``, ``rwd``, ``pwd``, ``lpwd``, ``cwd``.
        lr: learning rate (> 0).
        weight_decay: lambda >= 0; the per-step shrink is ``lr * weight_decay``.
        base: ``adam`` (kwargs ``betas``, ``eps``, ``amsgrad``) or ``sgd``
            (kwargs ``momentum``, ``nesterov``, ``dampening``).
        layer_schedule: for ``lpwd`` only: ``linear`` (lambda_l = lambda l/L,
            the paper), ``constant``, ``inverse``, ``sqrt`` or ``f(l, L) -> scale``;
            ``linear_normalized`` (and ``inverse_``/``sqrt_normalized``) rescale the
            shape to a parameter-weighted mean of 1, the same total decay as ``pwd``
            (see :func:`lpwd.effective_decay`). Layers come from :func:`lpwd.layer_indices`.
        decay_bias_and_norm: also decay 1-D tensors and ``no_weight_decay()`` names.
        foreach: ``None``/``True`` use torch's fused kernels where the device
            has them (foreach otherwise); ``False`` the single-tensor path.
        diagnostics_every: probe R_op every k-th step (0: off).
        diagnostics_sample: coordinates in the seeded R_op sample (None: all).
        diagnostics_seed: seed of that sample.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown; use one of {list(VARIANTS)}")
    if base not in BASES:
        raise ValueError(f"base={base!r} is unknown; use one of {sorted(BASES)}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr={lr!r} must be a finite number > 0")
    if not isinstance(weight_decay, (int, float)) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} must be a finite number >= 0")
    base_cls, allowed = BASES[base]
    unknown = set(base_kwargs) - allowed
    if unknown:
        raise ValueError(
            f"{sorted(unknown)} not accepted for base={base!r}; accepted keyword arguments: {sorted(allowed)}"
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters; pass a model with requires_grad parameters")

    layers = layer_indices(model)
    # every eligible tensor has a scale > 0 under "constant"; 0 marks the excluded ones
    eligible_of = decay_scales(model, "constant", decay_bias_and_norm)
    scales = decay_scales(model, layer_schedule if variant == "lpwd" else "constant", decay_bias_and_norm)
    groups: dict[bool, dict] = {}
    for name, p in named:
        eligible = eligible_of[name] > 0
        l, L = layers[name]
        group = groups.setdefault(eligible, {
            "params": [], "layer_scales": [], "layers": [],
            "decay_eligible": eligible,
            "decay_rate": float(weight_decay) if eligible and variant != "l2" else 0.0,
            # what torch's base applies itself: coupled L2 for l2 only
            "weight_decay": float(weight_decay) if eligible and variant == "l2" else 0.0,
        })
        group["params"].append(p)
        group["layer_scales"].append(scales[name] if eligible else 1.0)
        group["layers"].append(l)

    params = [p for _, p in named]
    placement = PLACEMENT[variant]
    # Where torch's own kernel can express the shrink, it rides there and saves a
    # pass over the weights: Adam's decoupled kernel, and SGD's coupled one when
    # there is no momentum (theta - lr (g + lambda theta) is then SGDW exactly).
    shrink_in_kernel = variant in ("wd", "rwd") and (base == "adam" or not base_kwargs.get("momentum", 0))
    if shrink_in_kernel and base == "adam":
        base_kwargs["decoupled_weight_decay"] = True
    if shrink_in_kernel and variant == "wd":
        placement = "in_update"
        for group in groups.values():
            group["weight_decay"] = group["decay_rate"]
    fast = foreach is not False
    speed = {"foreach": False}
    if fast:
        speed = {"fused": True} if _fused_supported(params) else {"foreach": True}
    optimizer = _CLASSES[base](list(groups.values()), lr=lr, **speed, **base_kwargs)
    probe = None
    if diagnostics_every:
        probe = OpposingPenaltyProbe(diagnostics_every, diagnostics_sample, diagnostics_seed)
    optimizer._init_decay(variant, placement, model, fast, probe, rwd_in_kernel=shrink_in_kernel and variant == "rwd")
    return optimizer
