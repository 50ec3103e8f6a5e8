"""Layer-wise pre-weight decay (LPWD) and the decay variants it is compared with.

    import lpwd
    opt = lpwd.build_optimizer(model, variant="lpwd", lr=1e-3, weight_decay=0.05, base="adam")

works in any plain ``zero_grad -> forward -> backward -> step`` loop with any
``torch.optim.lr_scheduler``. Decay per step is ``lr * weight_decay``
(PyTorch's AdamW convention). Pure PyTorch; timm is used only when the model
is a timm model.

``import lpwd`` itself is cheap: torch is imported when one of the names below
that needs it is first used, so tools that only validate a schedule name (a study
config) or read results do not pay for it.
"""

from importlib import import_module

from .schedules import SCHEDULE_NAMES, SCHEDULES

_LAZY = {**dict.fromkeys(("decay_scales", "effective_decay", "layer_indices", "no_decay_names"), ".layers"),
         **dict.fromkeys(("BASES", "VARIANTS", "DecayedAdam", "DecayedSGD", "build_optimizer", "decayed",
                         "decayed_class", "fastest_kernel"), ".optim")}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # once: later lookups never come here
        return value
    raise AttributeError(f"module 'lpwd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BASES",
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "VARIANTS",
    "DecayedAdam",
    "DecayedSGD",
    "build_optimizer",
    "decayed",
    "decayed_class",
    "decay_scales",
    "effective_decay",
    "fastest_kernel",
    "layer_indices",
    "no_decay_names",
]
