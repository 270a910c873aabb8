"""Observe every ``SparseGradLinear``'s per-step ``(g, x)`` during real training, without changing it.

``GradientTap(measure, every)`` wraps ``SparseGradLinear.record_gradient`` (the backward hook that selects a
step's entries) so that ``measure(layer, step, g, x)`` runs on the first step and every ``every``-th step of each
layer before the layer's own selection (re-calibration passes are not steps: they are not counted or measured);
``close()`` puts the original back. The measurement benchmarks
(``block_fidelity.py``, ``basis_drift.py``) use it so that what they measure is the trajectory training follows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparsegrad_core import SparseGradLinear

Measure = Callable[[SparseGradLinear, int, torch.Tensor, torch.Tensor], None]


class GradientTap:
    def __init__(self, measure: Measure, every: int, start: int = 0) -> None:
        """``start``: the steps every layer has already taken (a run resumed from a checkpoint of that step)."""
        self.measure, self.every, self.start = measure, max(1, int(every)), int(start)
        self.calls: dict[int, int] = {}
        self._original = SparseGradLinear.record_gradient
        original, tap = self._original, self

        def record_gradient(layer: SparseGradLinear, g: torch.Tensor, x: torch.Tensor) -> None:
            if layer.gradient_sink is not None:  # a re-calibration pass, not a training step
                original(layer, g, x)
                return
            step = tap.calls.get(id(layer), tap.start) + 1
            tap.calls[id(layer)] = step
            if step == 1 or step % tap.every == 0:
                with torch.no_grad():
                    tap.measure(layer, step, g, x)
            original(layer, g, x)

        SparseGradLinear.record_gradient = record_gradient  # type: ignore[method-assign]

    def close(self) -> None:
        SparseGradLinear.record_gradient = self._original  # type: ignore[method-assign]
