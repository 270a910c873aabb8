"""What every benchmark script prints and writes: plain-text or markdown tables, MiB figures and target
verdicts, the hardware description, and the JSON results file (``bench/results/`` unless ``--out``).

Not a library module: the scripts in ``bench/`` put this folder on ``sys.path`` and ``import reporting``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for key in ("Model name", "CPU(s)", "Core(s) per socket", "Socket(s)", "Thread(s) per core", "Flags"):
            m = re.search(rf"^{re.escape(key)}:\s+(.+)$", out, re.M)
            if m:
                val = m.group(1).strip()
                if key == "Flags":
                    val = " ".join(
                        f for f in val.split() if f.startswith(("avx512f", "avx2", "amx", "avx512_bf16"))
                    )
                info[key] = val
    except (OSError, subprocess.SubprocessError):
        pass
    with contextlib.suppress(OSError, AttributeError):
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        info["mem_total_gib"] = round(mem_kib / 2**20, 1)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save_json(obj: Any, name: str, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    return path


def save_run(script: str, argv: list[str], args: Any, name: str, **fields: Any) -> Path:
    """Write a script's result file (``argv``, ``args``, ``hardware`` and ``fields``) to ``bench/results/<name>``, or
    to ``args.out`` when given, and say where."""
    path = save_json({"argv": [script, *argv], "args": vars(args), "hardware": hardware(), **fields}, name, args.out)
    print(f"wrote {path}")
    return path


def fmt_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, markdown: bool = False
) -> str:
    """``columns``: (key, header). Floats are shown with 3 significant decimals; None as '-'."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    body = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def mib(n: float | None) -> float | None:
    return None if n is None else n / 2**20


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"
