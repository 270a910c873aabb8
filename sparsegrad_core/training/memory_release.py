"""Handing the allocator's kept pages back to the kernel during training.

Training processes may run with jemalloc preloaded and told to keep the pages they free (the service's workers do:
``sparsegrad_service/allocator.py``): a step then reuses the last step's large buffers instead of faulting in fresh
ones. Each batch pads to its own longest row, so activation sizes change from step to step and not every kept page
is reused: with nothing handed back, a process's resident memory grows while its live tensors stay the same
(``bench/allocator_memory.py``). :class:`PeriodicRelease` hands them back every few steps, after each evaluation,
and at the next step whenever the process has grown by more than a bound since the last release: a decoder's
activations (SmolLM2's 49,152-token logits) vary by hundreds of megabytes with the batch's length, and a full
fine-tune of SmolLM2-135M grew by about 460 MiB a step with nothing handed back. With any other allocator it does
nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path

from .callbacks import TrainerCallback

RELEASE_EVERY_STEPS = 50
"""Optimizer steps between two releases: one step in that many pays for fresh pages, as every step does with glibc."""

RELEASE_ABOVE_MIB = 1024
"""Resident growth (MiB) since the last release after which the next step releases, however few steps ago that was:
what a process may hold beyond its live memory is bounded by about this plus one step's freed buffers."""

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


def resident_mib(statm: Path = Path("/proc/self/statm")) -> float | None:
    """This process's resident set in MiB (Linux ``/proc/self/statm``), or None where it cannot be read."""
    try:
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class PeriodicRelease(TrainerCallback):
    """Calls ``release`` as the step events arrive: when ``every`` optimizer steps have passed since the last
    release, or when the resident set has grown by more than ``max_growth_mib`` since it (``resident`` returns it in
    MiB, or None where unknown: then only the step count counts); and after every evaluation, whose batches have
    other sizes than training's."""

    def __init__(self, release: Callable[[], object] = release_allocator_pages, every: int = RELEASE_EVERY_STEPS,
                 max_growth_mib: float = RELEASE_ABOVE_MIB,
                 resident: Callable[[], float | None] = resident_mib) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        if max_growth_mib <= 0:
            raise ValueError(f"max_growth_mib must be positive, got {max_growth_mib}")
        self.release, self.every, self.max_growth_mib, self.resident = release, every, max_growth_mib, resident
        self._last = 0
        self._baseline: float | None = None

    def _release(self, step: int) -> None:
        self.release()
        self._last = max(self._last, step)
        self._baseline = self.resident()

    def _grown(self) -> bool:
        now = self.resident()
        if now is None:
            return False
        if self._baseline is None:
            self._baseline = now
        return now - self._baseline > self.max_growth_mib

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        self._last, self._baseline = start_step, self.resident()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step - self._last >= self.every or self._grown():
            self._release(step)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._release(step)
