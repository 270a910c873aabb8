"""Memory and time of training steps for ``gpu_step.py``, on CUDA (the caching allocator's counters) or on
CPU (this process's RSS, for smoke checks): bytes held now, the peak over a block, and synchronised timed
steps.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import meters
import torch


def memory_now(device: torch.device) -> int:
    """Bytes held now: CUDA allocations, or this process's RSS on CPU (freed heap given back first)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    meters.malloc_trim()
    return meters.rss_bytes()


def free_memory(device: torch.device) -> None:
    """Collect the garbage of a finished case and hand cached CUDA blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def peak_memory(device: torch.device, base: int) -> Iterator[dict[str, int]]:
    """Yields a dict whose ``"bytes"`` is, on exit, the peak over the block minus ``base``."""
    out: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        with meters.PeakRSS() as pk:
            yield out
        out["bytes"] = pk.peak - base


def timed_steps(
    step: Callable[[dict[str, torch.Tensor]], None],
    batches: list[dict[str, torch.Tensor]],
    warmup: int,
    steps: int,
    device: torch.device,
    base: int,
) -> dict[str, Any]:
    """``warmup`` untimed steps, then ``steps`` synchronised timed ones: steps/s, median step time, the peak
    over the timed steps and what stays allocated after them (bytes above ``base``)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(warmup):
        step(batches[i % len(batches)])
    sync()
    times = []
    with peak_memory(device, base) as peak:
        t_all = time.perf_counter()
        for i in range(steps):
            t = time.perf_counter()
            step(batches[i % len(batches)])
            sync()
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - t_all
    return {
        "steps_per_s": steps / total,
        "median_step_s": statistics.median(times),
        "peak_bytes": peak["bytes"],
        "state_bytes": memory_now(device) - base,
    }


def cuda_graph_step(
    train: Callable[[dict[str, torch.Tensor]], None],
    zero_grad: Callable[[], None],
    example: dict[str, torch.Tensor],
    device: torch.device,
    base: int,
    warmup: int = 3,
) -> tuple[Callable[[dict[str, torch.Tensor]], None], int]:
    """``train(batch)`` (forward, backward and optimizer step; no ``zero_grad``) captured once in a CUDA graph,
    after ``warmup`` eager steps (each followed by ``zero_grad``) on a side stream, as torch's whole-network
    capture asks. Returns a step that copies its batch into the captured inputs and replays the graph, and the
    peak over the capture (bytes above ``base``): replays allocate nothing, so the graph's working set shows only
    there. The gradients are None when the capture starts, so the captured backward writes them afresh at every
    replay."""
    static = {name: t.clone() for name, t in example.items()}
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            train(static)
            zero_grad()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with peak_memory(device, base) as capture_peak, torch.cuda.graph(graph):
        train(static)

    def step(batch: dict[str, torch.Tensor]) -> None:
        for name, t in static.items():
            t.copy_(batch[name])
        graph.replay()

    return step, capture_peak["bytes"]
