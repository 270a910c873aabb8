"""Learning-rate schedules as a pure function of the step: warmup, then constant / linear / cosine.

Stateless on purpose: the scale of update ``s`` depends only on ``(s, total, warmup, kind)``, so a
resumed run needs nothing but the step count.
"""

from __future__ import annotations

import math

from .arguments import SCHEDULERS


def lr_scale(step: int, total_steps: int, warmup_steps: int = 0, kind: str = "constant") -> float:
    """Multiplier of the peak learning rate for update number ``step`` (0-based).

    Warmup rises linearly ``1/w, 2/w, ..., 1`` over the first ``w`` updates (no update at lr 0). Then
    ``constant`` stays at 1; ``linear`` falls as ``1 - p`` and ``cosine`` as ``(1 + cos πp) / 2`` with
    ``p = (step - w) / (total - w)``, so the last update still has a small positive rate.
    """
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {', '.join(SCHEDULERS)}")
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1; got step={step}, total_steps={total_steps}")
    warmup = max(0, min(warmup_steps, total_steps))
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
