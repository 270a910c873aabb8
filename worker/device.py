"""Where a job trains: the first CUDA device when there is one (one job per worker and GPU, bf16 autocast
where the card supports it), otherwise the CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    bf16: bool
    """Autocast forward passes to bfloat16 (CUDA cards that support it)."""
    description: str
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: shown in events and ``Job.summary["device"]``."""


def select_device() -> DeviceInfo:
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        name = torch.cuda.get_device_name(device)
        return DeviceInfo(device, bool(torch.cuda.is_bf16_supported()), f"{device} ({name})")
    return DeviceInfo(torch.device("cpu"), False, "cpu")


def release_memory(device: torch.device) -> None:
    """Give cached accelerator memory back after a job (the next job on this worker starts clean)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
