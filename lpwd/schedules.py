"""The named layer-wise decay schedules ``f(l, L)``, without torch: configs validate against them
before any training code is imported."""

from __future__ import annotations

import math
from typing import Callable

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

# "<shape>_normalized": the shape rescaled to a parameter-weighted mean of 1 over the
# decayed tensors, so the layer-wise variant applies the same total decay as plain pwd
NORMALIZED = "_normalized"
SCHEDULE_NAMES: tuple[str, ...] = (*SCHEDULES, *(f"{s}{NORMALIZED}" for s in SCHEDULES if s != "constant"))
