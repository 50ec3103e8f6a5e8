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

LayerSchedule = Union[str, Callable[[int, int], float]]

SCHEDULES: dict[str, Callable[[int, int], float]] = {
    # the paper: shallow layers decay less, linearly growing with depth
    "linear": lambda l, L: l / L,
    # plain PWD: every layer gets the full rate
    "constant": lambda l, L: 1.0,
    # ablation: deep layers decay less (1 at the input, 1/L at the output)
    "inverse": lambda l, L: (L - l + 1) / L,
    # ablation: grows with depth but front-loaded
    "sqrt": lambda l, L: math.sqrt(l / L),
}


def layer_indices(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Map every parameter name to ``(l, L)``: its layer, 1 = input, L = output.

    timm models (anything with ``group_matcher``): timm's fine-grained grouping,
    the one ``timm.optim.param_groups_layer_decay`` uses, so the stem is layer 1
    and the head (parameters the matcher leaves unmatched) is layer L.

    Other modules: every module that directly owns a parameter with two or more
    dimensions (a weight matrix or kernel) opens a new layer, in registration
    order; modules owning only 1-D parameters (norms, standalone biases) belong
    to the layer before them (or the first layer when none precedes them),
    so a BatchNorm does not count as a layer of depth.
    """
    names = [n for n, _ in model.named_parameters()]
    if not names:
        return {}
    if hasattr(model, "group_matcher"):
        return _timm_layers(model)
    return _registration_order_layers(model)


def _timm_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    from timm.models import group_parameters

    group_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    # timm numbers groups 0..G-1 with gaps removed; keep it robust to gaps anyway
    ordered = sorted(set(group_of.values()))
    rank = {g: i + 1 for i, g in enumerate(ordered)}
    L = len(ordered)
    return {name: (rank[group_of[name]], L) for name, _ in model.named_parameters()}


def _registration_order_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    layer_of: dict[str, int] = {}
    pending: list[str] = []  # 1-D-only modules seen before the first layer
    current = 0
    for module_name, module in model.named_modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False)]
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


def resolve_schedule(layer_schedule: LayerSchedule) -> Callable[[int, int], float]:
    """Turn a schedule name or a callable ``f(l, L) -> scale`` into a callable."""
    if callable(layer_schedule):
        return layer_schedule
    if layer_schedule not in SCHEDULES:
        raise ValueError(
            f"layer_schedule={layer_schedule!r} is unknown; use one of "
            f"{sorted(SCHEDULES)} or a callable f(l, L) -> scale"
        )
    return SCHEDULES[layer_schedule]


def layer_scale(schedule: Callable[[int, int], float], l: int, L: int) -> float:
    """Evaluate a schedule and check it gives a usable, non-negative scale."""
    scale = float(schedule(l, L))
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(
            f"layer_schedule returned {scale} for layer {l} of {L}; "
            "it must return a finite scale >= 0"
        )
    return scale


def no_decay_names(model: nn.Module, decay_bias_and_norm: bool = False) -> set[str]:
    """Names of parameters that get no decay in any variant.

    As in timm's ``param_groups_weight_decay``: tensors with ndim <= 1 (biases,
    norm scales and shifts) and whatever the model lists in ``no_weight_decay()``
    (positional embeddings, class tokens, relative position tables; fnmatch
    patterns allowed), unless ``decay_bias_and_norm`` asks to decay everything.
    """
    if decay_bias_and_norm:
        return set()
    listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    skip = set()
    for name, p in model.named_parameters():
        if p.ndim <= 1 or name in listed or any(fnmatch.fnmatch(name, pat) for pat in listed):
            skip.add(name)
    return skip
