"""What each arm is for, and how every surface shows it: contenders, controls, the baseline's name, one colour.

A **contender** is an arm whose answers are the verdict (``verdict.arms``; by default every
arm but the baseline and the controls). A **control** is an instrument of the decay-mass
decomposition (``pwd@lpwd-mass``: pwd at lpwd's decay mass; ``lpwd:*_normalized``: lpwd's
layer shape at pwd's mass): it is reported, never answered, so a contender's answer does
not depend on which controls a config runs. Each arm keeps one colour in the report,
MLflow and the comparison page.
"""

from __future__ import annotations

MASS_ARM = "pwd@lpwd-mass"


def is_control(arm: str) -> bool:
    """pwd at lpwd's mass, and lpwd's layer shape at pwd's mass (a ``*_normalized`` schedule)."""
    return arm == MASS_ARM or (arm.startswith("lpwd:") and arm.endswith("_normalized"))


def contenders(arms: list[str], baseline: str) -> list[str]:
    """The verdict's default family: every arm but the baseline and the controls."""
    return [a for a in arms if a != baseline and not is_control(a)]


def colours(arms: list[str]) -> dict[str, str]:
    from plotly.colors import qualitative  # plotting's palette, imported only where something is drawn

    return {a: qualitative.D3[i % len(qualitative.D3)] for i, a in enumerate(arms)}
