"""The base optimizers a decay variant can sit on, and what each one's own ``weight_decay`` does.

A variant places one shrink ``theta <- (1 - lr lambda_p) theta`` around a base optimizer's update
(:mod:`lpwd.optim`). To place it, the wrapper must know what the base's own ``weight_decay``
argument does, since that argument is switched off for every variant but the one it already is:

``"adam"``       torch's Adam: coupled L2, or decoupled with ``decoupled_weight_decay=True`` (AdamW)
``"sgd"``        torch's SGD: coupled L2 (SGDW exactly only without momentum)
``"decoupled"``  ``theta <- theta (1 - lr lambda)`` before the base's update, inside its kernel (Muon,
                 Lion, Adafactor). ``wd`` *is* that decay (Adafactor, for one, sizes its step
                 from RMS(theta) taken before it, so the same shrink outside the kernel differs)
``None``         unknown: the base's own decay is always off and every variant's shrink is a
                 separate pass (``wd`` a pass before the base update)

Bases by name for :func:`lpwd.build_optimizer`; any other class through :func:`lpwd.decayed`.
The classes load on first use: timm is imported only for a timm base.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module

import torch


@dataclass(frozen=True)
class Base:
    """One base optimizer: where its class lives, the keyword arguments it takes, its decay."""

    path: str  # "module:Class"
    kwargs: frozenset[str]
    kernel_decay: str | None
    note: str

    def load(self) -> type[torch.optim.Optimizer]:
        module, name = self.path.split(":")
        return getattr(import_module(module), name)


BASES: dict[str, Base] = {
    "adam": Base("torch.optim:Adam", frozenset({"betas", "eps", "amsgrad", "maximize", "foreach", "fused"}), "adam",
                 "torch.optim.Adam (AdamW for wd)"),
    "sgd": Base("torch.optim:SGD", frozenset({"momentum", "nesterov", "dampening", "maximize", "foreach", "fused"}),
                "sgd", "torch.optim.SGD (SGDW for wd)"),
    "muon": Base("timm.optim:Muon", frozenset({"momentum", "nesterov", "ns_steps", "ns_coefficients", "eps",
                                               "adjust_lr_fn", "betas", "conv_mode", "normalize_spatial"}),
                 "decoupled", "timm.optim.Muon: hidden weights (conv kernels flattened) on Muon, "
                              "embeddings, the output layer and 1-D tensors on AdamW"),
    "lion": Base("timm.optim:Lion", frozenset({"betas", "maximize", "foreach"}), "decoupled", "timm.optim.Lion"),
    "adafactor": Base("torch.optim:Adafactor", frozenset({"beta2_decay", "eps", "d", "maximize", "foreach"}),
                      "decoupled", "torch.optim.Adafactor"),
}

# classes known by their own decay, for lpwd.decayed(<class>): {"module:Class": kernel_decay}
KNOWN_CLASSES = {
    "torch.optim:Adam": "adam",
    "torch.optim:SGD": "sgd",
    "torch.optim:Muon": "decoupled",
    "torch.optim:Adafactor": "decoupled",
    "timm.optim:Muon": "decoupled",
    "timm.optim:Lion": "decoupled",
}


# bases that cannot step a sharded (FSDP2, DTensor) parameter at all, with or without a decay variant
NOT_SHARDABLE = {
    "torch.optim:Adafactor": "torch's Adafactor cannot step FSDP2-sharded parameters (DTensor refuses its in-place "
                             "pow_ on a partial norm, torch 2.14); train it with DDP, or shard with another base",
}


def _tensors(params):
    """The tensors of an optimizer's ``params`` argument: tensors, (name, tensor) pairs or param groups."""
    for x in params:
        if isinstance(x, dict):
            yield from _tensors([x["params"]] if isinstance(x["params"], torch.Tensor) else x["params"])
        else:
            yield x[1] if isinstance(x, tuple) else x


def refuse_sharded(cls: type[torch.optim.Optimizer], params) -> None:
    """One line, at build time, instead of a DTensor traceback at the first step."""
    from torch.distributed.tensor import DTensor

    for path, why in NOT_SHARDABLE.items():
        module, name = path.split(":")
        known = getattr(sys.modules.get(module), name, None)
        if known is not None and known in cls.__mro__ and any(isinstance(p, DTensor) for p in _tensors(params)):
            raise ValueError(why)


def kernel_decay_of(cls: type[torch.optim.Optimizer]) -> str | None:
    """What ``cls``'s own weight_decay does (module docstring); None for a class not known here.
    A known class's library is already imported when one of its classes is passed: nothing is imported."""
    for path, kind in KNOWN_CLASSES.items():
        module, name = path.split(":")
        if module in sys.modules and getattr(sys.modules[module], name, None) in cls.__mro__:
            return kind
    return None


def check_kwargs(base: str, kwargs: dict) -> None:
    if base not in BASES:
        raise ValueError(f"base={base!r} is unknown; use one of {sorted(BASES)} (or lpwd.decayed(<optimizer class>))")
    unknown = set(kwargs) - BASES[base].kwargs
    if unknown:
        raise ValueError(f"{sorted(unknown)} not accepted for base={base!r}; "
                         f"accepted keyword arguments: {sorted(BASES[base].kwargs)}")


def muon_groups(model: torch.nn.Module, groups: list[dict]) -> list[dict]:
    """Split groups as Muon's authors train with it: embeddings and the output layer (the last layer of
    :func:`lpwd.layer_indices`) go to its AdamW fallback (timm's ``use_fallback``), as do 1-D tensors;
    the hidden weights, conv kernels included (flattened by timm), stay on Muon."""
    from .layers import layer_indices, unwrap

    inner, prefix = unwrap(model)
    embedding = {id(p) for m in inner.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    depths = layer_indices(model)
    edge = embedding | {id(p) for n, p in model.named_parameters() if depths[n][0] == depths[n][1]}
    out = []
    for g in groups:
        hidden = [p for p in g["params"] if p.ndim >= 2 and id(p) not in edge]
        rest = [p for p in g["params"] if not (p.ndim >= 2 and id(p) not in edge)]
        for params, fallback in ((hidden, False), (rest, True)):
            if params:
                out.append({**g, "params": params, "use_fallback": fallback})
    return out
