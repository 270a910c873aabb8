"""The tables of ``gpu_step.py``: speed and peak memory relative to full FT and LoRA, one line per finished
case, one table per suite (the encoders' with the paper's Table 3 numbers).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import reporting
from gpu_cases import OK

PAPER = {"full": (4.11, 1345), "lora": (4.7, 944), "sg_dynamic": (4.3, 1016)}


CASE_KEYS = ("suite", "model", "precision", "method")


def aggregate_repeats(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per case from the runs of every repeat (``repeat`` 1, 2, ...): steps/s is the median over the
    repeats, and ``x_full`` the median over repeats of the ratio to full FT *of the same repeat* (methods run
    interleaved, so a slow spell of the shared host falls on neighbours, not on one method). Memory figures and
    the preparation (calibration) are the first repeat's: later repeats reuse its calibration. A case that failed
    in any repeat keeps that repeat's status."""
    cases: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in runs:
        cases.setdefault(tuple(r[k] for k in CASE_KEYS), []).append(r)
    rows = []
    for reps in cases.values():
        failed = [r for r in reps if r["status"] != OK]
        row = dict(failed[0] if failed else reps[0])
        row.pop("repeat", None)
        row["repeats"] = len(reps)
        if not failed:
            row["steps_per_s"] = statistics.median(r["steps_per_s"] for r in reps)
            row["median_step_s"] = statistics.median(r["median_step_s"] for r in reps)
            row["steps_per_s_reps"] = [r["steps_per_s"] for r in reps]
            ratios = []
            for r in reps:
                ref = next((q for q in runs if q.get("repeat") == r.get("repeat") and q["status"] == OK
                            and q["method"] == "full" and all(q[k] == r[k] for k in CASE_KEYS[:3])), None)
                if ref is not None:
                    ratios.append(r["steps_per_s"] / ref["steps_per_s"])
            row["x_full_reps"] = ratios
        rows.append(row)
    add_ratios(rows)
    for row in rows:
        if row.get("x_full_reps"):
            row["x_full"] = statistics.median(row["x_full_reps"])
    return rows


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
    rep = f" #{r['repeat']}" if "repeat" in r else ""
    head = f"  {r['model']} {r['precision']} {r['method']}{rep}: "
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
