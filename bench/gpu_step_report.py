"""The tables of ``gpu_step.py``: speed and peak memory relative to full FT and LoRA, one line per finished
case, one table per suite (the encoders' with the paper's Table 3 numbers).
"""

from __future__ import annotations

import time
from typing import Any

import reporting
from gpu_cases import OK

PAPER = {"full": (4.11, 1345), "lora": (4.7, 944), "sg_dynamic": (4.3, 1016)}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed and peak memory relative to full FT and LoRA of the same (suite, model, precision); MiB columns."""

    def same_group(q: dict[str, Any], r: dict[str, Any], method: str) -> bool:
        keys = ("suite", "model", "precision")
        return all(q[k] == r[k] for k in keys) and q["method"] == method and q["status"] == OK

    for r in rows:
        ref = next((q for q in rows if same_group(q, r, "full")), None)
        lora = next((q for q in rows if same_group(q, r, "lora")), None)
        done = r["status"] == OK
        r["x_full"] = r["steps_per_s"] / ref["steps_per_s"] if ref and done else None
        r["mem_x_full"] = r["peak_bytes"] / ref["peak_bytes"] if ref and done else None
        r["mem_x_lora"] = r["peak_bytes"] / lora["peak_bytes"] if lora and done else None
        for key in ("peak", "state", "prepare_peak"):
            r[f"{key}_mib"] = reporting.mib(r.get(f"{key}_bytes"))
        r["note"] = "" if done else r["status"]
        paper = PAPER.get(r["method"])
        r["paper"] = f"{paper[0]} / {paper[1]}" if paper and r["model"] == "roberta-base" else ""


COLUMNS = [
    ("model", "model"),
    ("precision", "prec"),
    ("method", "method"),
    ("steps_per_s", "steps/s"),
    ("x_full", "speed ×FT"),
    ("peak_mib", "peak MiB"),
    ("mem_x_full", "peak ×FT"),
    ("mem_x_lora", "peak ×LoRA"),
    ("state_mib", "state MiB"),
    ("prepare_peak_mib", "prep peak MiB"),
]


def print_case(r: dict[str, Any], started: float) -> None:
    head = f"  {r['model']} {r['precision']} {r['method']}: "
    if r["status"] != OK:
        print(f"{head}{r['status']} ({time.perf_counter() - started:.0f} s so far)", flush=True)
        return
    print(
        f"{head}{r['steps_per_s']:.2f} steps/s, peak {reporting.mib(r['peak_bytes']):.0f} MiB, state "
        f"{reporting.mib(r['state_bytes']):.0f} MiB, prep peak {reporting.mib(r['prepare_peak_bytes']):.0f} MiB "
        f"(prepare {r['prepare_s']:.1f} s; {time.perf_counter() - started:.0f} s so far)",
        flush=True,
    )


def print_tables(rows: list[dict[str, Any]]) -> None:
    """One table per suite (the encoders' with the paper's numbers)."""
    for suite in ("encoders", "llama"):
        selected = [r for r in rows if r["suite"] == suite]
        if selected:
            extra = [("paper", "paper steps/s / MB")] if suite == "encoders" else []
            print(f"\n{suite}")
            print(reporting.fmt_table(selected, [*COLUMNS, *extra, ("note", "note")]))
