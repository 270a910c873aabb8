"""The step benchmark's tables: per-method rows with ratios to full FT, LoRA and the frozen-MLP floor
(per-repeat medians), and the CPU time targets with their verdicts.
"""

from __future__ import annotations

import statistics
from typing import Any

import reporting


def summarize(setting_results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def get(m: str, key: str) -> float | None:
        r = setting_results.get(m)
        return None if r is None or "error" in r else r[key]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    def rep_ratio(m: str, ref: str, key: str) -> float | None:
        """Median over repeats of (method / reference) measured in the same repeat."""
        a, b = setting_results.get(m), setting_results.get(ref)
        if a is None or b is None or "error" in a or "error" in b:
            return None
        ra, rb = a.get("reps") or [], b.get("reps") or []
        if not ra or len(ra) != len(rb):
            return ratio(a[key], b[key])
        return statistics.median(x[key] / y[key] for x, y in zip(ra, rb, strict=True) if y[key])

    rows = []
    for m, r in setting_results.items():
        if "error" in r:
            rows.append({"method": m, "note": "error"})
            continue
        t, c, mem = r["median_step_s"], r["median_cpu_s"], r["peak_train_bytes"]
        rows.append(
            {
                "method": m,
                "step_s": t,
                "cpu_s": c,
                "x_full": rep_ratio(m, "full", "median_cpu_s"),
                "x_lora": rep_ratio(m, "lora", "median_cpu_s"),
                "x_frozen": rep_ratio(m, "frozen_mlp", "median_cpu_s"),
                "x_full_wall": rep_ratio(m, "full", "median_step_s"),
                "x_lora_wall": rep_ratio(m, "lora", "median_step_s"),
                "peak_mib": reporting.mib(mem),
                "prepare_mib": reporting.mib(r["prepare_peak_bytes"]),
                "job_peak_mib": reporting.mib(max(mem, r["prepare_peak_bytes"])),
                "job_mem_x_full": ratio(max(mem, r["prepare_peak_bytes"]),
                                        max(get("full", "peak_train_bytes") or 0, get("full", "prepare_peak_bytes") or 0)),
                "sparse_state_mib": reporting.mib((r.get("sparsegrad") or {}).get("sparse_state_bytes", 0)),
                "state_mib": reporting.mib(r["state_bytes"]["total"]),
                "mem_x_full": ratio(mem, get("full", "peak_train_bytes")),
                "mem_x_lora": ratio(mem, get("lora", "peak_train_bytes")),
                "state_x_full": ratio(
                    r["state_bytes"]["total"],
                    get("full", "state_bytes")["total"] if get("full", "state_bytes") else None,
                ),
                "state_x_lora": ratio(
                    r["state_bytes"]["total"],
                    get("lora", "state_bytes")["total"] if get("lora", "state_bytes") else None,
                ),
                "trainable_m": r["trainable_params"] / 1e6,
                "clean": f"{r['clean_steps']}/{len(r['step_times_s'])}",
                "foreign": statistics.mean(r["foreign_load"]),
            }
        )
    return rows


TABLE_COLS = [
    ("method", "method"),
    ("step_s", "wall s"),
    ("cpu_s", "CPU s"),
    ("x_full", "×full"),
    ("x_lora", "×LoRA"),
    ("x_frozen", "×frozen"),
    ("x_full_wall", "×full wall"),
    ("x_lora_wall", "×LoRA wall"),
    ("peak_mib", "peak MiB"),
    ("mem_x_full", "mem×full"),
    ("mem_x_lora", "mem×LoRA"),
    ("prepare_mib", "prepare MiB"),
    ("job_mem_x_full", "job peak×full"),
    ("state_mib", "state MiB"),
    ("trainable_m", "trainable M"),
    ("foreign", "foreign CPU"),
]


TARGETS = [  # (method, column, limit, what): the CPU rows of the targets table
    ("sg_block", "x_full", 0.90, "SG block step / full FT"),
    ("sg_block", "x_lora", 1.00, "SG block step / LoRA"),
    ("sg_dynamic", "x_full", 1.15, "SG exact (dynamic) step / full FT"),
]


def target_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time targets on CPU seconds per step (robust to other processes) and on wall seconds."""
    by = {r["method"]: r for r in rows}
    checks = []
    for m, col, limit, what in TARGETS:
        r = by.get(m)
        if r is None or "step_s" not in r:
            continue
        checks.append({"check": f"{what} (CPU s) <= {limit:.2f}", "value": r[col], "limit": limit})
        checks.append({"check": f"{what} (wall s) <= {limit:.2f}", "value": r[f"{col}_wall"], "limit": limit})
    for c in checks:
        c["verdict"] = reporting.verdict(c["value"], c["limit"])
    return checks


def print_report(results: dict[str, dict[str, dict[str, Any]]], *, markdown: bool = False) -> dict[str, Any]:
    summary = {}
    for setting, res in results.items():
        rows = summarize(res)
        checks = target_checks(rows)
        summary[setting] = {"rows": rows, "checks": checks}
        print(f"\n=== setting: {setting} ===")
        print(reporting.fmt_table(rows, TABLE_COLS, markdown=markdown))
        if checks:
            print()
            print(
                reporting.fmt_table(
                    checks, [("check", "target"), ("value", "measured"), ("verdict", "")], markdown=markdown
                )
            )
    return summary
