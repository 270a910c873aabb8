"""Meters for the CPU benchmarks: resident memory (current, peak over a region, held by training-state
tensors), process CPU time, the CPU share other processes take on a shared machine, and waiting for it to
go quiet.

Not a library module: the scripts in ``bench/`` put this folder on ``sys.path`` and ``import meters``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- memory


def touch_kernels() -> None:
    """Run each kind of kernel any method uses once on tiny inputs (eigh, svd, topk, unique, matmul,
    scatter...), so the code pages of the math libraries are resident *before* the RSS baseline and do not
    count as one method's training memory."""
    a = torch.randn(64, 64)
    c = a @ a.T
    torch.linalg.eigh(c.double())
    torch.linalg.eigh(c)
    torch.linalg.svd(torch.randn(32, 96), full_matrices=False)
    torch.topk(a.flatten().abs(), 10, sorted=False)
    idx = torch.unique(torch.randint(0, 4096, (100,)), return_inverse=True)[0]
    torch.searchsorted(idx, idx)
    z = torch.zeros(64 * 64)
    z.index_add_(0, idx % 4096, torch.ones(idx.numel()))
    z.view(64, 64).index_put_((idx % 64, idx % 64), torch.ones(idx.numel()), accumulate=True)
    torch.addmm(c, a, a)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(field: str) -> int | None:
    try:
        txt = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", txt, re.M)
    return int(m.group(1)) if m else None


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc) so that earlier phases do not inflate RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident set size over a code region.

    Primary: Linux's high-water mark ``VmHWM``, reset on entry by writing ``5`` to ``/proc/self/clear_refs``
    (exact, no overhead). Fallback (or ``sampler=True``): a background thread reading ``/proc/self/statm``
    every ``interval`` seconds. ``peak`` is in bytes (absolute RSS, not a difference).
    """

    def __init__(self, *, sampler: bool = False, interval: float = 0.001) -> None:
        self.sampler, self.interval = sampler, interval
        self.peak = 0
        self.peak_sampled = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_ok = False

    def __enter__(self) -> PeakRSS:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm_ok = _status_kib("VmHWM") is not None
        except OSError:
            self._hwm_ok = False
        if self.sampler or not self._hwm_ok:
            self.peak_sampled = rss_bytes()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_sampled = max(self.peak_sampled, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_sampled = max(self.peak_sampled, rss_bytes())
        if self._hwm_ok:
            self.peak = (_status_kib("VmHWM") or 0) * 1024
            self.method = "VmHWM (clear_refs reset)"
        else:
            self.peak = self.peak_sampled
            self.method = f"sampled /proc/self/statm every {self.interval * 1e3:g} ms"


def _tensor_key(t: torch.Tensor) -> tuple[int, int]:
    return (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())


def _nbytes_unique(tensors: Iterable[torch.Tensor], seen: set[tuple[int, int]]) -> int:
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.is_sparse:
            continue
        key = _tensor_key(t)
        if key in seen or key[1] == 0:
            continue
        seen.add(key)
        total += key[1]
    return total


def state_memory(model: torch.nn.Module, optimizer: Any, grads: Sequence[torch.Tensor]) -> dict[str, int]:
    """Bytes held in tensors by the training state, each storage counted once:
    ``weights`` (parameters + buffers, SparseGrad's dense weight buffer included, bases excluded),
    ``grads`` (dense .grad tensors present after backward), ``optimizer`` (every tensor in the optimizers'
    state), ``sparsegrad`` (bases u_out/u_in once per kind, sg_indices, sg_delta, and for fixed selection the
    per-layer support and its gathered basis columns)."""
    from sparsegrad_core.model import sparsegrad_layers

    seen: set[tuple[int, int]] = set()
    sg_layers = [layer for _, layer in sparsegrad_layers(model)]
    sg_t = [t for layer in sg_layers for t in (layer.u_out, layer.u_in, layer.sg_indices, layer.sg_delta)]
    # fixed selection: per-layer support indices and the gathered basis columns (u_out[:, R], u_in[:, C])
    sg_t += [
        t
        for layer in sg_layers
        for t in (getattr(layer, "_support", None) or {}).values()
        if isinstance(t, torch.Tensor)
    ]
    sg = _nbytes_unique(sg_t, seen)
    weights = _nbytes_unique(list(model.parameters()) + list(model.buffers()), seen)
    grad_b = _nbytes_unique(grads, seen)
    opt_tensors: list[torch.Tensor] = []
    for opt in getattr(optimizer, "optimizers", [optimizer]):
        for st in opt.state.values():
            opt_tensors += [v for v in st.values() if isinstance(v, torch.Tensor)]
    opt_b = _nbytes_unique(opt_tensors, seen)
    out = {"weights": weights, "grads": grad_b, "optimizer": opt_b, "sparsegrad": sg}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------- contention (shared machine)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads), seconds."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def _self_jiffies() -> int:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of all threads


class ForeignLoad:
    """Share of the machine's CPU used by *other* processes over a region (0 = we were alone).

    ``(Δ machine busy − Δ own cpu) / Δ machine total``, in /proc/stat jiffies (10 ms granularity)."""

    def __enter__(self) -> ForeignLoad:
        self._busy0, self._tot0 = _cpu_jiffies()
        self._self0 = _self_jiffies()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, tot = _cpu_jiffies()
        own = _self_jiffies() - self._self0
        dt = max(1, tot - self._tot0)
        self.share = max(0.0, (busy - self._busy0 - own) / dt)


def wait_for_quiet(max_wait: float = 120.0, threshold: float = 0.15, window: float = 1.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine's busy share over ``window`` s is below ``threshold``.
    Returns the last measured busy share."""
    t_end = time.monotonic() + max_wait
    while True:
        b0, t0 = _cpu_jiffies()
        time.sleep(window)
        b1, t1 = _cpu_jiffies()
        share = (b1 - b0) / max(1, t1 - t0)
        if share < threshold or time.monotonic() > t_end:
            return share


class Timer:
    def __init__(self) -> None:
        self.t = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.t = time.perf_counter() - self._t0
