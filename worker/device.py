"""Where a job trains: the first CUDA device when there is one (one job per worker and GPU, bf16 autocast
where the card supports it), otherwise the CPU (bf16 autocast where it multiplies bf16 matrices in hardware,
unless the deployment's ``cpu_bf16`` setting is off); GPU workers capture training steps in CUDA graphs when the
deployment's ``cuda_graphs`` setting is on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsegrad_core.precision import cpu_multiplies_bf16
from sparsegrad_core.training import release_allocator_pages


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    bf16: bool
    """Autocast forward passes to bfloat16 (CUDA cards that support it; CPUs that multiply bf16 in hardware)."""
    description: str
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``: shown in events and ``Job.summary["device"]``."""
    cuda_graphs: bool = False
    """Capture training steps in CUDA graphs (GPU workers whose deployment's ``cuda_graphs`` setting is on)."""


def select_device(cpu_bf16: bool = True, cuda_graphs: bool = False) -> DeviceInfo:
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        name = torch.cuda.get_device_name(device)
        return DeviceInfo(device, bool(torch.cuda.is_bf16_supported()), f"{device} ({name})", cuda_graphs)
    bf16 = cpu_bf16 and cpu_multiplies_bf16()
    return DeviceInfo(torch.device("cpu"), bf16, "cpu")


def release_memory(device: torch.device) -> None:
    """Give cached accelerator memory and the allocator's kept pages back after a job (the next job on this worker
    starts clean)."""
    import gc

    gc.collect()
    release_allocator_pages()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
