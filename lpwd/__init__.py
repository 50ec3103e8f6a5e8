"""Layer-wise pre-weight decay (LPWD) and the decay variants it is compared with.

    import lpwd
    opt = lpwd.build_optimizer(model, variant="lpwd", lr=1e-3, weight_decay=0.05, base="adam")

works in any plain ``zero_grad -> forward -> backward -> step`` loop with any
``torch.optim.lr_scheduler``. Decay per step is ``lr * weight_decay``
(PyTorch's AdamW convention). Pure PyTorch; timm is used only when the model
is a timm model.
"""

from .layers import SCHEDULE_NAMES, SCHEDULES, decay_scales, effective_decay, layer_indices, no_decay_names
from .optim import BASES, VARIANTS, DecayedAdam, DecayedSGD, build_optimizer

__all__ = [
    "BASES",
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "VARIANTS",
    "DecayedAdam",
    "DecayedSGD",
    "build_optimizer",
    "decay_scales",
    "effective_decay",
    "layer_indices",
    "no_decay_names",
]
