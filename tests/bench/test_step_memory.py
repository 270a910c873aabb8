"""The CPU count of a step's memory (bench/step_memory.py): the peak is the most bytes alive at once inside the step,
and the held bytes are every live tensor's storage, each once."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import step_memory  # noqa: E402

MB = 1_000_000


def test_step_peak_is_the_most_bytes_alive_at_once() -> None:
    kept: list[torch.Tensor] = []

    def step(_: dict[str, torch.Tensor]) -> None:
        a = torch.ones(MB // 4)  # 1 MB
        b = torch.ones(2 * MB // 4)  # 2 MB: 3 MB alive
        del a
        c = torch.ones(MB // 8)  # 2.5 MB alive
        del b, c
        kept.append(torch.ones(MB // 16))  # outlives the step: 0.25 MB

    peak, running = step_memory.step_peak(step, {})
    assert 3 * MB <= peak < 3 * MB + 4096
    assert any("ones" in name for name in running)  # the operator that reached the peak


def test_live_tensor_bytes_counts_each_storage_once() -> None:
    before = step_memory.live_tensor_bytes()
    t = torch.zeros(MB // 4)
    views = [t[: MB // 8], t.view(2, -1)]
    assert step_memory.live_tensor_bytes() - before == MB
    del t, views
    assert step_memory.live_tensor_bytes() - before == 0
