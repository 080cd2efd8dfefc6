"""Learning-rate schedules: the multiplier of the peak learning rate at a given step."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, *, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.0) -> float:
    """Linear warm-up from ~0 to 1 over `warmup` steps, then decay to `min_ratio` at `total`.

    `step` counts optimizer updates from 0; the factor for step 0 is 1/(warmup+1) so that the
    first update is small but not zero.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if kind == "linear":
        decay = 1.0 - progress
    elif kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {kind!r} (expected one of {', '.join(SCHEDULES)})")
    return min_ratio + (1.0 - min_ratio) * decay
