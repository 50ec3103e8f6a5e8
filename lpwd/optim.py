"""Decay variants as *where* and *how much* decay meets torch's own optimizers.

Every variant is torch's Adam or SGD (with torch's own ``foreach``/``fused`` choice) with its own weight
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

Pre-weight decay and the forward pre-hooks
------------------------------------------
``pwd``/``lpwd`` decay step t's weights *before* step t's forward pass, with
step t's learning rate, so the gradient is taken at the decayed weights. The
optimizer is attached to the model it is built for (``model=``, or
:meth:`DecayMixin.attach`): a forward pre-hook sits on the model and on every
submodule that owns one of its parameters, so any forward that can use a
parameter passes a hook first: ``model(x)``, ``model.forward(x)``,
``self.net(x)`` inside a LightningModule, ``checkpoint_sequential``. The first
such forward after each ``step()`` (and the very first) that runs with
gradients applies the pending decay, with the lr the group holds at that
moment (after ``scheduler.step()``). Forward passes under ``torch.no_grad()``
or ``inference_mode`` never decay, so evaluation is safe; extra forward passes
before the next ``step()`` (gradient accumulation) do not decay twice. The
hooks run before any other forward pre-hook (FSDP2's all-gather included), and
a deep copy of the model (an EMA or teacher) does not decay the original.

Loops no hook can see call :meth:`DecayMixin.pre_forward` before the forward.
If ``step()`` still finds the decay pending, the decay is applied there,
before the update, which is ``wd``'s update, not ``pwd``'s: the optimizer
warns once, naming the fix (``strict=True`` raises instead). It warns as well
when the lr changed between the decay and the step (a gradient-enabled
evaluation between ``step()`` and ``scheduler.step()``), and it refuses to
decay inside a backward pass (a reentrant ``checkpoint`` around the whole
model recomputing its forward). The pending flag is part of ``state_dict()``,
so a resumed run continues bit-identically.

A parameter's pre-forward decay belongs to the newest pwd/lpwd optimizer
built over it: building another (a second ``fit``, ``lr_find`` then ``fit``)
detaches the older one's hooks.
"""

from __future__ import annotations

import math
import warnings
import weakref

import torch
from torch import nn

from .diagnostics import OpposingPenaltyProbe, is_dtensor, layer_weight_norms
from .layers import LayerSchedule, layer_indices, layer_scale, normalise_mass, no_decay_names, resolve_schedule, unwrap

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
    "adam": (torch.optim.Adam, {"betas", "eps", "amsgrad", "maximize", "foreach", "fused"}),
    "sgd": (torch.optim.SGD, {"momentum", "nesterov", "dampening", "maximize", "foreach", "fused"}),
}


def _check_rate(name: str, value, low_open: bool) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > 0 if low_open else value >= 0)
    if not ok:
        raise ValueError(f"{name}={value!r} must be a finite number {'> 0' if low_open else '>= 0'}")


class DecayMixin:
    """A torch optimizer whose weight decay is placed by a variant, with R_op diagnostics.

    ``DecayedAdam(params, lr, weight_decay, variant="lpwd", model=model)`` reads like
    ``torch.optim.AdamW``: ``params`` is an iterable of tensors or of param groups (or the
    model itself, grouped as :func:`build_optimizer` groups it), and
    each group's ``lr`` and ``weight_decay`` (lambda) are honoured, so timm's
    ``param_groups_layer_decay``, Hugging Face's decay/no-decay groups or a lower backbone
    lr all work. The base kernel's own weight decay is swapped in only for the duration
    of its step (lambda for ``l2`` and the in-kernel ``wd``, 0 otherwise), so a group's
    ``weight_decay`` always reads as lambda.

    Args beyond torch's:
        variant: one of :data:`VARIANTS`.
        model: the model the parameters belong to: it gives each parameter its depth
            (:func:`lpwd.layer_indices`, needed by ``lpwd``) and, for ``pwd``/``lpwd``, the
            modules the pre-forward decay is attached to. Without it, call
            :meth:`attach` or :meth:`pre_forward` yourself.
        layer_schedule: ``lpwd``'s f(l, L) (see :func:`lpwd.build_optimizer`).
        strict: raise instead of warning when ``step()`` finds the pre-forward decay pending.
        diagnostics_every, diagnostics_sample, diagnostics_seed: the R_op probe.

    Groups carry three extra keys: ``layer_scales`` (f(l, L) per parameter; all 1 except
    for ``lpwd``), ``layers`` (l per parameter, for per-layer norms) and
    ``decay_eligible`` (whether the diagnostics count the group as decayed weights).
    """

    variant: str
    placement: str | None
    _torch_class: type[torch.optim.Optimizer]

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, *, variant: str,
                 model: nn.Module | None = None, layer_schedule: LayerSchedule = "linear", strict: bool = False,
                 diagnostics_every: int = 10, diagnostics_sample: int | None = 4096, diagnostics_seed: int = 0,
                 **base_kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} is unknown; use one of {list(VARIANTS)}")
        _check_rate("lr", lr, low_open=True)
        _check_rate("weight_decay", weight_decay, low_open=False)
        if isinstance(params, nn.Module):  # a model: grouped as build_optimizer groups it
            model = params if model is None else model
            params = decay_groups(params, weight_decay)
        items = [params] if isinstance(params, torch.Tensor) else list(params)
        groups = [dict(g) for g in items] if items and isinstance(items[0], dict) else [{"params": items}]
        for g in groups:
            g["params"] = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
            g.setdefault("weight_decay", weight_decay)
            _check_rate("weight_decay", g["weight_decay"], low_open=False)
        if not any(g["params"] for g in groups):
            raise ValueError("params is empty; pass the model's parameters or a list of param groups")
        self._set_layers(groups, variant, model, layer_schedule)
        self.variant = variant
        self.placement = PLACEMENT[variant]
        self._strict = strict
        momentum = [g.get("momentum", base_kwargs.get("momentum", 0)) for g in groups]
        # Where torch's own kernel can express the shrink, it rides there and saves a
        # pass over the weights: Adam's decoupled kernel, and SGD's coupled one when
        # there is no momentum (theta - lr (g + lambda theta) is then SGDW exactly).
        in_kernel = variant in ("wd", "rwd") and (self._torch_class is torch.optim.Adam or not any(momentum))
        if in_kernel and self._torch_class is torch.optim.Adam:
            base_kwargs["decoupled_weight_decay"] = True
        if in_kernel and variant == "wd":
            self.placement = "in_update"
        self._rwd_in_kernel = in_kernel and variant == "rwd"
        self._fast = base_kwargs.get("foreach") is not False
        self._torch_class.__init__(self, groups, lr=lr, weight_decay=weight_decay, **base_kwargs)
        self._probe = OpposingPenaltyProbe(diagnostics_every, diagnostics_sample, diagnostics_seed) \
            if diagnostics_every else None
        self._steps = 0
        self._pending = self.placement == "before_forward"
        self._decay_lrs: list[float] | None = None
        self._hooks: list = []
        self._attached: weakref.WeakSet = weakref.WeakSet()
        self._warned: set[str] = set()
        self._plan, self._plan_key = [], None
        self._cautious_count, self._cautious_total = None, 0  # coordinates cwd decayed, and considered
        self._buffers: dict = {}
        if model is not None and self.placement == "before_forward":
            self.attach(model)

    @staticmethod
    def _set_layers(groups: list[dict], variant: str, model: nn.Module | None, layer_schedule) -> None:
        """Each parameter's depth l and decay scale f(l, L) (1 unless lpwd), from the model."""
        schedule, normalise = resolve_schedule(layer_schedule)
        if model is None:
            if variant == "lpwd":
                raise ValueError("variant='lpwd' needs each parameter's depth: pass model=<the model> "
                                 "(or use lpwd.build_optimizer(model, ...))")
            depth_of = {}
        else:
            depths = layer_indices(model)
            depth_of = {id(p): depths[n] for n, p in model.named_parameters()}
            missing = [p for g in groups for p in g["params"] if id(p) not in depth_of]
            if missing:
                raise ValueError(f"{len(missing)} parameter(s) passed to the optimizer are not in model=; "
                                 "pass the model whose parameters are optimised")
        for g in groups:
            lL = [depth_of.get(id(p), (1, 1)) for p in g["params"]]
            g["layers"] = [l for l, _ in lL]
            g["layer_scales"] = [layer_scale(schedule, l, L) if variant == "lpwd" else 1.0 for l, L in lL]
            g.setdefault("decay_eligible", g["weight_decay"] > 0 or all(h["weight_decay"] == 0 for h in groups))
        if normalise and variant == "lpwd":
            decayed = [(g, i, p.numel()) for g in groups if g["weight_decay"] > 0 for i, p in enumerate(g["params"])]
            factor = normalise_mass([g["layer_scales"][i] for g, i, _ in decayed], [n for _, _, n in decayed])
            for g in groups:
                g["layer_scales"] = [s * factor for s in g["layer_scales"]]

    # -- where the pre-forward decay runs -----------------------------------
    def attach(self, *modules: nn.Module) -> "DecayMixin":
        """Hook the pending pre-forward decay onto ``modules`` (pwd/lpwd; a no-op otherwise).

        Each module (seen through ``torch.compile``/DDP wrappers) and every submodule of it
        that owns one of this optimizer's parameters gets a forward pre-hook, placed first.
        This optimizer takes the parameters' pre-forward decay over from any older pwd/lpwd
        optimizer: that one's hooks are removed.
        """
        if self.placement != "before_forward":
            return self
        params = {id(p) for g in self.param_groups for p in g["params"]}
        for p in (p for g in self.param_groups for p in g["params"]):
            old = _owner(p)
            if old is not None and old is not self:
                old.detach()
            p._lpwd_pre_decay_owner = weakref.ref(self)
        ref = weakref.ref(self)
        for module in modules:
            root = unwrap(module)[0]
            for sub in root.modules():
                if sub in self._attached:
                    continue
                owns = any(id(p) in params for p in sub.parameters(recurse=False))
                if sub is root or owns:
                    hook = _root_hook(ref) if sub is root else _inner_hook(ref)
                    self._hooks.append(sub.register_forward_pre_hook(hook, prepend=True))
                    self._attached.add(sub)
        return self

    def detach(self) -> None:
        """Remove the pre-forward hooks; the decay then runs only via :meth:`pre_forward` (or, warned, in ``step``)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._attached = [], weakref.WeakSet()

    remove_hook = detach  # the name earlier releases used

    def pre_forward(self) -> None:
        """Apply the pending pre-weight decay now (pwd/lpwd): for loops no hook sees. Idempotent until ``step()``."""
        if self._pending:
            self._apply_decay()
            self._decay_lrs = [float(g["lr"]) for g in self.param_groups]

    def _forward_reached(self, module: nn.Module) -> None:
        if module not in self._attached:  # a deep copy of an attached module carries the hook, not the model
            return
        if torch._C._current_graph_task_id() != -1:
            # recomputing a forward inside backward (reentrant checkpoint): the loss was taken already
            self._warn("backward", "a forward pass recomputed inside backward (torch.utils.checkpoint with "
                       "use_reentrant=True around the model) reached the pending pre-forward decay, after the "
                       "loss was computed; it is not applied there. Use use_reentrant=False, or call "
                       "optimizer.pre_forward() before the forward pass")
            return
        self.pre_forward()

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"lpwd ({self.variant}): {message}", RuntimeWarning, stacklevel=5)

    def _missed_forward(self) -> None:
        message = ("step() found the pre-forward decay still pending: no forward pass with gradients went "
                   "through a module this optimizer is attached to since the last step, so it is applied now, "
                   f"after the gradient was taken ({'wd' if self.variant == 'pwd' else 'a layer-wise wd'}'s "
                   f"update, not {self.variant}'s). Pass model= (or call optimizer.attach(module)) for the module "
                   "your loop calls, or call optimizer.pre_forward() before each forward pass")
        if self._strict:
            raise RuntimeError(f"lpwd ({self.variant}): {message}")
        self._warn("pending", message + "; strict=True makes this an error")

    # -- the decay itself -------------------------------------------------
    def _decay_plan(self) -> list[tuple[dict, list, list, float | None]]:
        """(group, its params, their layer scales, the one scale they share or None) per decayed group.

        Rebuilt only when the groups change (``add_param_group``, a rate set to or from 0):
        on small models the per-step Python of regrouping showed next to the kernels.
        """
        key = [(id(g["params"]), len(g["params"]), g["weight_decay"] != 0) for g in self.param_groups]
        if key != self._plan_key:
            plan = []
            for g in self.param_groups:
                if g["weight_decay"] != 0 and self.placement is not None and g["params"]:
                    scales = [float(s) for s in g["layer_scales"]]
                    shared = scales[0] if all(s == scales[0] for s in scales) else None
                    plan.append((g, list(g["params"]), scales, shared))
            self._plan, self._plan_key = plan, key
        return self._plan

    def _decayed(self):
        """(param, lr * lambda_p) for every tensor the shrink touches."""
        return [(p, float(g["lr"]) * g["weight_decay"] * s)
                for g, params, scales, _ in self._decay_plan() for p, s in zip(params, scales)]

    @torch.no_grad()
    def _apply_decay(self) -> None:
        for group, params, scales, shared in self._decay_plan():
            k = float(group["lr"]) * group["weight_decay"]
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
        these per-tensor ones, which run multi-threaded. With ``maximize`` the kernel moves
        along -u, and theta_t - theta' is still the descent direction the mask needs."""
        i, counts = 0, []
        for group, params, scales, _ in self._decay_plan():
            k = float(group["lr"]) * group["weight_decay"]
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

    def _probe_due(self) -> list[torch.Tensor] | None:
        """The tensors R_op samples this step, or None. FSDP2's sharded DTensors are not sampled
        (a coordinate index means nothing on a shard): R_op is then off, said once."""
        if self._probe is None or not self._probe.due(self._steps):
            return None
        eligible, _ = self._eligible()
        if any(is_dtensor(p) for p in eligible):
            self._probe = None
            self._warn("dtensor", "R_op is not measured on sharded (DTensor, FSDP2) parameters; "
                       "diagnostics() reports it as NaN")
            return None
        return eligible or None

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
            self._missed_forward()
            self._apply_decay()
        elif self._decay_lrs is not None:
            lrs = [float(g["lr"]) for g in self.param_groups]
            if lrs != self._decay_lrs:
                self._warn("lr", f"the pre-forward decay ran with lr={self._decay_lrs[0]:g} but this step uses "
                           f"lr={lrs[0]:g}: a forward pass with gradients ran between step() and "
                           "scheduler.step() (an evaluation without torch.no_grad()?). Evaluate under "
                           "torch.no_grad(), or call scheduler.step() right after optimizer.step()")
        self._decay_lrs = None
        eligible = self._probe_due()
        if eligible is not None:
            before = self._probe.snapshot(eligible)
        if self.placement == "before_update":
            self._apply_decay()
        before_update = self._snapshot() if self.placement == "cautious" else None
        shrunk = self._base_step()
        if eligible is not None:
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

        The kernel sees, for its step only, its own weight decay: lambda for ``l2``
        (coupled) and the in-kernel ``wd`` (Adam's decoupled kernel, or SGD's coupled
        one without momentum), 0 for the rest. For ``rwd``: Adam's decoupled kernel
        computes theta (1 - lr' wd') - lr' u, and so does SGD's coupled kernel without
        momentum (u = g). With lr' = lr (1 - s) and wd' = lambda / (1 - s),
        s = lr lambda, that is (1 - s)(theta - lr u): rwd in one fused pass instead of
        two. Only for 0 <= s < 1; a shrink of 1 or more (a collapsing or sign-flipping
        setting) takes the separate pass.
        """
        saved = [(g["lr"], g["weight_decay"]) for g in self.param_groups]
        keep = self.variant == "l2" or self.placement == "in_update"
        in_kernel = self._rwd_in_kernel and all(float(lr) * wd < 1 for lr, wd in saved)
        for g, (lr, wd) in zip(self.param_groups, saved):
            if in_kernel and wd > 0:
                s = float(lr) * wd
                g["lr"], g["weight_decay"] = float(lr) * (1 - s), wd / (1 - s)
            elif not keep:
                g["weight_decay"] = 0.0
        try:
            self._torch_step()
        finally:
            for g, (lr, wd) in zip(self.param_groups, saved):
                g["lr"], g["weight_decay"] = lr, wd
        return in_kernel

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
    """The pwd/lpwd optimizer whose forward hooks decay ``p`` now, if any."""
    ref = getattr(p, "_lpwd_pre_decay_owner", None)
    opt = ref() if ref is not None else None
    if opt is None or not opt._hooks:
        return None
    # a deep-copied model carries the attribute but not the parameter the owner holds
    return opt if any(q is p for g in opt.param_groups for q in g["params"]) else None


def _root_hook(optimizer_ref):
    """The attached model's own forward pre-hook: applies a pending pre-weight decay.

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
            optimizer._forward_reached(module)

    return hook


def _inner_hook(optimizer_ref):
    """A parameter-owning submodule's pre-hook: the same, for forwards that skip the model's own
    ``__call__`` (``self.net(x)``, ``model.forward(x)``). Inside a compiled graph it traces to
    nothing (the model's own hook ran eagerly just before), so it adds no graph break."""

    def hook(module, args):
        if torch.compiler.is_compiling():
            return
        optimizer = optimizer_ref()
        if optimizer is not None and optimizer._pending and torch.is_grad_enabled():
            optimizer._forward_reached(module)

    return hook


class DecayedAdam(DecayMixin, torch.optim.Adam):
    """torch.optim.Adam with its weight decay placed by ``variant`` (see :class:`DecayMixin`)."""

    _torch_class = torch.optim.Adam


class DecayedSGD(DecayMixin, torch.optim.SGD):
    """torch.optim.SGD with its weight decay placed by ``variant`` (see :class:`DecayMixin`)."""

    _torch_class = torch.optim.SGD


_CLASSES = {"adam": DecayedAdam, "sgd": DecayedSGD}


def _fused_supported(params: list[torch.Tensor]) -> bool:
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch
        devices = {"cuda"}
    return all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def fastest_kernel(params) -> dict:
    """``{"fused": True}`` where torch has fused Adam/SGD kernels for these tensors (CUDA, CPU,
    MPS...), else ``{"foreach": True}``: torch's own default on a CPU is the slower single-tensor
    loop, so a sweep that wants speed asks for this explicitly."""
    return {"fused": True} if _fused_supported(list(params)) else {"foreach": True}


def decay_groups(model: nn.Module, weight_decay: float, decay_bias_and_norm: bool = False) -> list[dict]:
    """The model's trainable parameters in a decayed and an undecayed group (timm's rule: no decay
    for 1-D tensors and ``no_weight_decay()`` names, unless ``decay_bias_and_norm``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters; pass a model with requires_grad parameters")
    skip = no_decay_names(model, decay_bias_and_norm)
    groups: dict[bool, dict] = {}
    for name, p in named:
        eligible = name not in skip
        groups.setdefault(eligible, {"params": [], "decay_eligible": eligible,
                                     "weight_decay": float(weight_decay) if eligible else 0.0})["params"].append(p)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    variant: str = "lpwd",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    base: str = "adam",
    *,
    layer_schedule: LayerSchedule = "linear",
    decay_bias_and_norm: bool = False,
    strict: bool = False,
    diagnostics_every: int = 10,
    diagnostics_sample: int | None = 4096,
    diagnostics_seed: int = 0,
    **base_kwargs,
) -> DecayedAdam | DecayedSGD:
    """Build the optimizer of one decay variant for ``model``: the one-liner.

    Args:
        model: the module whose trainable parameters are optimised, plain or
            wrapped (``torch.compile``, DDP, DataParallel; built before or after
            the wrapping). For ``pwd``/``lpwd`` the optimizer is attached to it
            (see the module docstring).
        variant: one of ``none``, ``l2``, ``wd``, ``rwd``, ``pwd``, ``lpwd``, ``cwd``.
        lr: learning rate (> 0).
        weight_decay: lambda >= 0; the per-step shrink is ``lr * weight_decay``.
        base: ``adam`` (kwargs ``betas``, ``eps``, ``amsgrad``) or ``sgd``
            (kwargs ``momentum``, ``nesterov``, ``dampening``); both take
            ``maximize``, ``foreach`` and ``fused`` as torch does (default: torch's
            choice; :func:`fastest_kernel` gives the fastest for a model's tensors).
        layer_schedule: for ``lpwd`` only: ``linear`` (lambda_l = lambda l/L,
            the paper), ``constant``, ``inverse``, ``sqrt`` or ``f(l, L) -> scale``;
            ``linear_normalized`` (and ``inverse_``/``sqrt_normalized``) rescale the
            shape to a parameter-weighted mean of 1, the same total decay as ``pwd``
            (see :func:`lpwd.effective_decay`). Layers come from :func:`lpwd.layer_indices`.
        decay_bias_and_norm: also decay 1-D tensors and ``no_weight_decay()`` names.
        strict: raise when ``step()`` finds the pre-forward decay pending (see the module docstring).
        diagnostics_every: probe R_op every k-th step (0: off).
        diagnostics_sample: coordinates in the seeded R_op sample (None: all).
        diagnostics_seed: seed of that sample.
    """
    if not isinstance(model, nn.Module):
        raise TypeError("build_optimizer takes the model; for parameters or param groups use "
                        "lpwd.DecayedAdam(params, lr, weight_decay, variant=..., model=model) (or DecayedSGD)")
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown; use one of {list(VARIANTS)}")
    if base not in BASES:
        raise ValueError(f"base={base!r} is unknown; use one of {sorted(BASES)}")
    _check_rate("lr", lr, low_open=True)
    _check_rate("weight_decay", weight_decay, low_open=False)
    unknown = set(base_kwargs) - BASES[base][1]
    if unknown:
        raise ValueError(
            f"{sorted(unknown)} not accepted for base={base!r}; accepted keyword arguments: {sorted(BASES[base][1])}"
        )
    return _CLASSES[base](
        decay_groups(model, weight_decay, decay_bias_and_norm), lr, float(weight_decay), variant=variant, model=model, layer_schedule=layer_schedule,
        strict=strict, diagnostics_every=diagnostics_every, diagnostics_sample=diagnostics_sample,
        diagnostics_seed=diagnostics_seed, **base_kwargs)
