"""Handing the allocator's kept pages back to the kernel during training.

Training processes may run with jemalloc preloaded and told to keep the pages they free (the service's workers do:
``sparsegrad_service/allocator.py``): a step then reuses the last step's large buffers instead of faulting in fresh
ones. Each batch pads to its own longest row, so activation sizes change from step to step and not every kept page
is reused: with nothing handed back, a process's resident memory grows while its live tensors stay the same
(``bench/allocator_memory.py``). :class:`PeriodicRelease` hands them back every few steps and after each
evaluation. With any other allocator it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

from .callbacks import TrainerCallback

RELEASE_EVERY_STEPS = 50
"""Optimizer steps between two releases: one step in that many pays for fresh pages, as every step does with glibc."""

PURGE_ALL_ARENAS = b"arena.4096.purge"
"""jemalloc's control name that purges every arena (4096 is ``MALLCTL_ARENAS_ALL``)."""


@functools.cache
def _mallctl() -> Callable[..., int] | None:
    """jemalloc's control function where this process has jemalloc loaded, else None."""
    return getattr(ctypes.CDLL(None), "mallctl", None)


def release_allocator_pages() -> bool:
    """Hand every page jemalloc keeps for reuse back to the kernel (all arenas); live allocations are untouched.
    Returns whether it did: False without jemalloc (glibc hands large blocks back on its own)."""
    mallctl = _mallctl()
    if mallctl is None:
        return False
    return int(mallctl(PURGE_ALL_ARENAS, None, None, None, ctypes.c_size_t(0))) == 0


class PeriodicRelease(TrainerCallback):
    """Calls ``release`` at most every ``every`` optimizer steps, as the step events arrive, and after every
    evaluation, whose batches have other sizes than training's."""

    def __init__(self, release: Callable[[], object] = release_allocator_pages, every: int = RELEASE_EVERY_STEPS) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.release, self.every = release, every
        self._last = 0

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        self._last = start_step

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step - self._last >= self.every:
            self.release()
            self._last = step

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.release()
        self._last = max(self._last, step)
