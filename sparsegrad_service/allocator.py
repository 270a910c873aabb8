"""The memory allocator of training processes: jemalloc, preloaded where the machine has it, told to keep the pages
it frees.

A CPU training step allocates and frees the same large buffers every step: a dense weight's gradient, the word
embedding's gradient (94 MB for BERT's 30522 × 768), the optimizer's temporaries. glibc's malloc returns blocks
above 32 MiB to the kernel at once, so each step pays again for fresh zeroed pages: on a 2-core Xeon a new
30522 × 768 ``torch.sqrt`` takes 21 ms where writing into existing memory takes 5 ms. jemalloc with
:data:`JEMALLOC_CONF` reuses them; the arithmetic is unchanged (the same 64-byte-aligned buffers), and so are the
results, bit for bit. What it does to each method's step: ``bench/step.py --allocator`` (docs/BENCHMARKS.md).

Only the environment can choose a process's allocator (``LD_PRELOAD``, read when the process starts): the launchers
of training workers (``sparsegrad up``, ``sparsegrad worker``, the worker image) set it; a process reports what it
got with :func:`process_allocator`.

Kept pages are not all reused: each batch pads to its own longest row, so activation sizes change from step to step,
and jemalloc leaves freed runs it cannot fit the next request into. With nothing handed back, a training process's
resident memory grows step after step while its live tensors stay the same (``bench/allocator_memory.py``;
docs/BENCHMARKS.md, "The allocator"). So training hands the kept pages back every
``RELEASE_EVERY_STEPS`` steps, after each evaluation, and at the next step once the process has grown by
``RELEASE_ABOVE_MIB`` since the last release (``sparsegrad_core.training.PeriodicRelease``): one step in that many
pays for fresh pages, as every step does with glibc.
"""

from __future__ import annotations

import ctypes.util
import sys
from collections.abc import Mapping
from pathlib import Path

JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
"""Hand no freed page back to the kernel on a timer: a training process reuses them at the next step. Time-based
decay hands back the buffers a step is about to ask for again, and makes a step slower than with glibc
(docs/BENCHMARKS.md, "The allocator"); training bounds what is kept instead (``PeriodicRelease``)."""

JEMALLOC = "jemalloc"
SYSTEM = "system"


def jemalloc_library() -> str | None:
    """The jemalloc shared library the dynamic loader finds (``libjemalloc.so.2``; Debian/Ubuntu: ``apt-get install
    libjemalloc2``), or None; Linux only (preloading is ``LD_PRELOAD``)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("jemalloc")


def with_jemalloc(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a training process: jemalloc preloaded with :data:`JEMALLOC_CONF` when the machine has it. An
    ``LD_PRELOAD`` or ``MALLOC_CONF`` already in ``env`` is the operator's choice and is kept as it is."""
    out = dict(env)
    library = jemalloc_library()
    if library is None or out.get("LD_PRELOAD"):
        return out
    out["LD_PRELOAD"] = library
    out.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return out


def process_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """``"jemalloc"`` when this process has jemalloc mapped (preloaded), else ``"system"``."""
    try:
        text = maps.read_text()
    except OSError:
        return SYSTEM
    return JEMALLOC if "libjemalloc" in text else SYSTEM
