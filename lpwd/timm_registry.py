"""The decay variants in timm's optimizer registry, so ``create_optimizer_v2`` builds them by name.

    from lpwd.timm_registry import create_optimizer_v2
    opt = create_optimizer_v2(model, opt="lpwd", lr=1e-3, weight_decay=0.05, layer_decay=0.75)

timm builds the param groups (decay / no-decay, and per-layer ``lr_scale`` with
``layer_decay``) and hands only those to the optimizer class; the class also needs
the model, for the parameters' depths (lpwd) and the modules its pre-forward decay
hooks onto (pwd, lpwd). :func:`create_optimizer_v2` is timm's, registering the names
first and handing the model on for them, so the model is given once; after
:func:`register`, timm's own ``create_optimizer_v2(model, opt="lpwd", ..., model=model)``
builds the same. It goes through timm's registry object and its ``register`` method,
the way timm registers its own optimizers; nothing of timm is replaced.
"""

from __future__ import annotations

from .optim import DecayedAdam, DecayedSGD

# timm parses "lookahead_<name>" on underscores, so the names have none; sgd* follows timm's "sgdw"
NAMES = {
    "lpwd": (DecayedAdam, "lpwd"), "pwd": (DecayedAdam, "pwd"), "rwd": (DecayedAdam, "rwd"),
    "cwd": (DecayedAdam, "cwd"),
    "sgdlpwd": (DecayedSGD, "lpwd"), "sgdpwd": (DecayedSGD, "pwd"), "sgdrwd": (DecayedSGD, "rwd"),
    "sgdcwd": (DecayedSGD, "cwd"),
}

DESCRIPTIONS = {
    "lpwd": "layer-wise pre-weight decay: lambda l/L applied before the forward pass",
    "pwd": "pre-weight decay: the decoupled shrink applied before the next forward pass",
    "rwd": "reversed weight decay: the decoupled shrink applied after the update",
    "cwd": "cautious weight decay: decoupled decay only where update and weight agree in sign",
}


def register() -> list[str]:
    """Add the variants to timm's default registry (idempotent); returns their names."""
    from timm.optim import OptimInfo, get_optimizer_info, list_optimizers
    from timm.optim._optim_factory import default_registry  # the instance create_optimizer_v2 reads

    known = set(list_optimizers())
    for name, (cls, variant) in NAMES.items():
        if name in known and get_optimizer_info(name).opt_class is cls:
            continue
        adam = cls is DecayedAdam
        default_registry.register(OptimInfo(
            name=name, opt_class=cls, description=f"{'Adam' if adam else 'SGD'} + {DESCRIPTIONS[variant]} (lpwd)",
            has_eps=adam, has_betas=adam, has_momentum=not adam, defaults={"variant": variant},
        ))
    return list(NAMES)


def create_optimizer_v2(model, opt: str = "lpwd", **kwargs):
    """timm's ``create_optimizer_v2(model, opt=...)`` with this library's names registered and, for
    them, the model handed to the optimizer class too; any other ``opt`` is timm's own, unchanged."""
    from timm.optim import create_optimizer_v2 as timm_create

    ours = opt.lower() in register()
    return timm_create(model, opt=opt, **({"model": model} if ours and "model" not in kwargs else {}), **kwargs)
