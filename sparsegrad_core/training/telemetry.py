"""What a run reports about itself besides the loss: peak memory, and the metrics.jsonl log.

``peak_memory_mb`` is, on CUDA, ``torch.cuda.max_memory_allocated`` (tensor memory only, reset at
the start of training); on CPU, the process's peak resident set size (``getrusage`` ``ru_maxrss``,
which includes the Python interpreter, libraries and the loaded model, and never goes down).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.jsonl"


def memory_metric_name(device: torch.device) -> str:
    """Human-readable definition of ``peak_memory_mb`` on ``device`` (recorded in eval_summary.json)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated (tensor memory since training started)"
    return "process peak resident set size (getrusage ru_maxrss, whole process)"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB, as defined in the module docstring."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
    except ImportError:  # Windows: psutil's peak working set
        import psutil

        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss)) / 2**20


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, so it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, ``{"type": "step"|"eval", "step": n, ...}``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, step: int, metrics: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"type": kind, "step": step, **json_safe(metrics)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run rewrites them), keeping the before-eval line."""
        if self.path is None or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(self.path)
