"""Layer indexing and layer-wise decay schedules.

LPWD needs to know how deep every parameter sits: lambda_l = lambda * f(l, L)
with l = 1 at the input and L at the output. We do not invent a depth notion
for timm models: their ``group_matcher()`` already maps every parameter to a
semantic block (stem, stage/block, head), and timm's own layer-wise learning
rate decay uses exactly that grouping. Other modules fall back to module
registration order.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Callable, Union

from torch import nn

from .schedules import NORMALIZED, SCHEDULE_NAMES, SCHEDULES

LayerSchedule = Union[str, Callable[[int, int], float]]

def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The model inside ``torch.compile``'s ``OptimizedModule`` and DDP / DataParallel, with the
    prefix its parameter names carry outside (``_orig_mod.``, ``module.``, or both)."""
    prefix = ""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model, prefix = model._orig_mod, prefix + "_orig_mod."
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model, prefix = model.module, prefix + "module."
        else:
            return model, prefix


def timm_part(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The outermost submodule (the model itself included) that is a timm model, i.e. has
    ``group_matcher``, and its name prefix; None if there is none."""
    for name, module in model.named_modules():
        if hasattr(module, "group_matcher") and callable(module.group_matcher):
            return module, f"{name}." if name else ""
    return None


def layer_indices(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Map every parameter name to ``(l, L)``: its layer, 1 = input, L = output.

    Wrappers are seen through (``torch.compile``, DDP, DataParallel): names keep
    their wrapper prefix, depths are the wrapped model's.

    timm models (anything with ``group_matcher``): timm's fine-grained grouping,
    the one ``timm.optim.param_groups_layer_decay`` uses, so the stem is layer 1
    and the head (parameters the matcher leaves unmatched) is layer L. A timm
    model nested in a user's module is found and used the same way; parameters
    outside it count as its first layer if registered before it, and as its
    last (the head) if after.

    Models built of repeated blocks (a Hugging Face BERT's ``encoder.layer``, a GPT-2's
    ``h``, a Llama's ``layers``: an ``nn.ModuleList`` of two or more modules of one class,
    each owning a weight matrix): each block is one layer, and the parameters before,
    between and after the stacks form one layer per run (the embeddings first, the head
    last), a run of only 1-D parameters (a final norm) joining the layer before it. A
    tied output projection is the input embedding and stays at layer 1. A 12-layer BERT
    has L = 14, as a 12-block ViT has.

    Other modules: every module that directly owns a parameter with two or more
    dimensions (a weight matrix or kernel) opens a new layer, in registration
    order; modules owning only 1-D parameters (norms, standalone biases) belong
    to the layer before them (or the first layer when none precedes them),
    so a BatchNorm does not count as a layer of depth. A tied weight (an
    embedding reused as the output projection) belongs to its first use only.
    """
    inner, prefix = unwrap(model)
    names = [n for n, _ in inner.named_parameters()]
    if not names:
        return {}
    found = timm_part(inner)
    stacks = _block_stacks(inner) if found is None else []
    if stacks:
        layers = _block_layers(inner, stacks)
    elif found is None:
        layers = _registration_order_layers(inner)
    else:
        timm_model, sub = found
        own = {f"{sub}{n}": lL for n, lL in _timm_layers(timm_model).items()}
        L = next(iter(own.values()))[1] if own else 1
        first = next(iter(own), None)
        layers, before = {}, True
        for n in names:
            if n == first:
                before = False
            layers[n] = own.get(n, (1 if before else L, L))
    return {prefix + n: lL for n, lL in layers.items()}


def _timm_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    from timm.models import group_parameters

    group_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    # timm numbers groups 0..G-1 with gaps removed; keep it robust to gaps anyway
    ordered = sorted(set(group_of.values()))
    rank = {g: i + 1 for i, g in enumerate(ordered)}
    L = len(ordered)
    return {name: (rank[group_of[name]], L) for name, _ in model.named_parameters()}


def _block_stacks(model: nn.Module) -> list[str]:
    """Name prefixes (``"encoder.layer."``) of the outermost ModuleLists of repeated blocks."""
    stacks: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2 or any(name.startswith(s) for s in stacks):
            continue
        kinds = {type(block) for block in module}
        if len(kinds) == 1 and all(any(p.ndim >= 2 for p in block.parameters()) for block in module):
            stacks.append(f"{name}." if name else "")
    return stacks


def _block_layers(model: nn.Module, stacks: list[str]) -> dict[str, tuple[int, int]]:
    """One layer per block of each stack and per run of parameters outside them (see layer_indices)."""
    layer_of: dict[str, int] = {}
    current, unit, run_has_weight, run = 0, None, False, []
    for name, p in model.named_parameters():  # registration order; a tied tensor appears once, at its first use
        stack = next((s for s in stacks if name.startswith(s)), None)
        this = f"{stack}{name[len(stack):].split('.')[0]}" if stack is not None else None
        if stack is None and unit is None and run:
            run.append(name)  # the run outside the blocks goes on
            run_has_weight |= p.ndim >= 2
            continue
        if run:  # a run outside the blocks ends: a layer of its own if it has a weight, else the one before
            current += run_has_weight or current == 0
            layer_of.update({n: current for n in run})
            run, run_has_weight = [], False
        if stack is None:
            unit, run, run_has_weight = None, [name], p.ndim >= 2
            continue
        if this != unit:
            current, unit = current + 1, this
        layer_of[name] = current
    if run:
        current += run_has_weight or current == 0
        layer_of.update({n: current for n in run})
    return {n: (l, current) for n, l in layer_of.items()}


def _registration_order_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    layer_of: dict[str, int] = {}
    pending: list[str] = []  # 1-D-only modules seen before the first layer
    current = 0
    seen: set[int] = set()  # a tied parameter counts at its first use only
    for module_name, module in model.named_modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in own)
        if not own:
            continue
        full = [f"{module_name}.{n}" if module_name else n for n, _ in own]
        if any(p.ndim >= 2 for _, p in own):
            current += 1
            layer_of.update({n: current for n in full})
        elif current == 0:
            pending.extend(full)
        else:
            layer_of.update({n: current for n in full})
    L = max(current, 1)
    layer_of.update({n: 1 for n in pending})
    return {name: (layer_of[name], L) for name, _ in model.named_parameters()}


def resolve_schedule(layer_schedule: LayerSchedule) -> tuple[Callable[[int, int], float], bool]:
    """A schedule name or a callable ``f(l, L) -> scale`` as (callable, normalise to mean 1?)."""
    if callable(layer_schedule):
        return layer_schedule, False
    if layer_schedule not in SCHEDULE_NAMES:
        raise ValueError(
            f"layer_schedule={layer_schedule!r} is unknown; use one of "
            f"{list(SCHEDULE_NAMES)} or a callable f(l, L) -> scale"
        )
    shape = layer_schedule.removesuffix(NORMALIZED)
    return SCHEDULES[shape], shape != layer_schedule


def decay_scales(model: nn.Module, layer_schedule: LayerSchedule = "linear",
                 decay_bias_and_norm: bool = False, decay_no_weight_decay: bool = False) -> dict[str, float]:
    """``lambda_p / lambda`` for every trainable parameter: f(l, L), 0 where nothing decays.

    A ``*_normalized`` schedule is divided by its parameter-count-weighted mean
    over the decayed tensors, so its total decay mass equals plain pwd's.
    """
    schedule, normalise = resolve_schedule(layer_schedule)
    layers = layer_indices(model)
    skip = no_decay_names(model, decay_bias_and_norm, decay_no_weight_decay)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = {n: (0.0 if n in skip else layer_scale(schedule, *layers[n])) for n, _ in named}
    if normalise:
        decayed = [n for n, _ in named if n not in skip]
        factor = normalise_mass([scales[n] for n in decayed], [dict(named)[n].numel() for n in decayed])
        scales = {n: s * factor for n, s in scales.items()}
    return scales


def normalise_mass(scales: list[float], sizes: list[int]) -> float:
    """The factor that gives ``scales`` a mean of 1 weighted by tensor size: a ``*_normalized``
    schedule decays as much in total as plain pwd. 1 when nothing is decayed."""
    mass = sum(n * s for n, s in zip(sizes, scales))
    return sum(sizes) / mass if mass > 0 else 1.0


def effective_decay(model: nn.Module, variant: str = "lpwd", layer_schedule: LayerSchedule = "linear",
                    decay_bias_and_norm: bool = False, decay_no_weight_decay: bool = False) -> float:
    """lambda_eff / lambda: the parameter-weighted mean of lambda_p / lambda over decayed tensors.

    1 for ``wd``/``rwd``/``pwd``/``l2``, 0 for ``none``, and for ``lpwd`` the mean of its
    schedule (0.67 for the linear schedule on a three-layer CNN): at the same nominal
    lambda, linear LPWD decays less in total, which a fair comparison must account for.
    It depends on the model and schedule only, so it is known before any training.
    """
    if variant == "none":
        return 0.0
    if variant != "lpwd":
        return 1.0
    scales = decay_scales(model, layer_schedule, decay_bias_and_norm, decay_no_weight_decay)
    skip = no_decay_names(model, decay_bias_and_norm, decay_no_weight_decay)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in skip]
    count = sum(p.numel() for _, p in named)
    return sum(p.numel() * scales[n] for n, p in named) / count if count else 0.0


def layer_scale(schedule: Callable[[int, int], float], l: int, L: int) -> float:
    """Evaluate a schedule and check it gives a usable, non-negative scale."""
    scale = float(schedule(l, L))
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(
            f"layer_schedule returned {scale} for layer {l} of {L}; "
            "it must return a finite scale >= 0"
        )
    return scale


def no_decay_names(model: nn.Module, decay_bias_and_norm: bool = False, decay_no_weight_decay: bool = False) -> set[str]:
    """Names of parameters that get no decay in any variant: timm's rule, two switches.

    As timm's ``param_groups_weight_decay`` (``create_optimizer_v2``) groups them: tensors with
    ndim <= 1 (biases, norm scales and shifts) unless ``decay_bias_and_norm`` (timm's
    ``filter_bias_and_bn=False``), and whatever the model (or a timm model nested in it, or
    wrapped by ``torch.compile``/DDP) lists in ``no_weight_decay()`` (positional embeddings,
    class tokens, relative position tables; fnmatch patterns allowed) unless
    ``decay_no_weight_decay``, which timm has no switch for.
    """
    inner, prefix = unwrap(model)
    listed: set[str] = set()
    if not decay_no_weight_decay:
        for name, module in inner.named_modules():  # a nested timm model's names, prefixed with its place
            if hasattr(module, "no_weight_decay") and callable(module.no_weight_decay):
                listed.update(f"{name}.{n}" if name else n for n in module.no_weight_decay())
    skip = set()
    for name, p in inner.named_parameters():
        if (p.ndim <= 1 and not decay_bias_and_norm) or name in listed or any(fnmatch.fnmatch(name, pat) for pat in listed):
            skip.add(prefix + name)
    return skip
