"""``python bench/step.py sweep --axis seq_len|batch|width``: the step benchmark over one axis on a small
config, one table and one PNG (CPU seconds and peak memory per method) per setting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import common
import reporting
import step_runner

SWEEPS = {
    # axis: (points, how a point overrides the args/spec)
    "seq_len": [64, 128, 256],
    "batch": [4, 16, 32],
    "width": [256, 384, 512],
}


def sweep(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(
        description="Sweep one axis on a small config and plot time/memory per method."
    )
    ap.add_argument("--axis", required=True, choices=list(SWEEPS))
    ap.add_argument("--points", help=f"comma list of values (default: {SWEEPS})")
    ap.add_argument("--model", default="bert-small", choices=list(common.MODEL_PRESETS))
    ap.add_argument("--plot-dir", default=str(reporting.RESULTS_DIR), help="where the PNG goes")
    step_runner.add_common_args(ap)
    ap.set_defaults(
        methods="full,lora,sg_dynamic,frozen_mlp",
        settings="paper",
        steps=3,
        warmup=1,
        calib_steps=2,
        max_foreign=1.0,
        quiet_wait=10.0,
    )
    args = ap.parse_args(argv)
    points = [int(v) for v in args.points.split(",")] if args.points else SWEEPS[args.axis]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    base_spec = common.model_spec(args.model, args.hidden, args.intermediate, args.layers, args.heads)
    print(
        f"sweep {args.axis} over {points} on {base_spec}, batch {args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}"
    )
    all_results: dict[str, Any] = {}
    common.clear_calibration_cache()
    t_start = time.perf_counter()
    for v in points:
        a = argparse.Namespace(**vars(args))
        spec = dict(base_spec)
        if args.axis == "seq_len":
            a.seq_len = v
        elif args.axis == "batch":
            a.batch_size = v
        else:
            spec = common.model_spec(args.model, v, 4 * v, args.layers, max(1, v // 64))
        print(f"-- {args.axis} = {v}", flush=True)
        all_results[str(v)] = step_runner.run_methods(a, spec, methods, settings)
    print(f"sweep took {time.perf_counter() - t_start:.0f} s")
    for setting in settings:
        rows = []
        for v in points:
            for m, r in all_results[str(v)][setting].items():
                if "error" not in r:
                    rows.append(
                        {
                            args.axis: v,
                            "method": m,
                            "step_s": r["median_step_s"],
                            "cpu_s": r["median_cpu_s"],
                            "foreign": statistics.mean(r["foreign_load"]),
                            "peak_mib": reporting.mib(r["peak_train_bytes"]),
                            "state_mib": reporting.mib(r["state_bytes"]["total"]),
                        }
                    )
        for row in rows:
            full = next((q for q in rows if q[args.axis] == row[args.axis] and q["method"] == "full"), None)
            if full:
                row["x_full"] = row["cpu_s"] / full["cpu_s"]
                row["mem_x_full"] = row["peak_mib"] / full["peak_mib"]
        print(f"\n=== sweep {args.axis}, setting {setting} ===")
        print(
            reporting.fmt_table(
                rows,
                [
                    (args.axis, args.axis),
                    ("method", "method"),
                    ("step_s", "wall s"),
                    ("cpu_s", "CPU s"),
                    ("x_full", "×full (CPU)"),
                    ("peak_mib", "peak MiB"),
                    ("mem_x_full", "mem×full"),
                    ("state_mib", "state MiB"),
                    ("foreign", "foreign CPU"),
                ],
            )
        )
        plot_path = Path(args.plot_dir) / f"sweep_{args.axis}_{setting}.png"
        plot_sweep(rows, args.axis, methods, plot_path, title=f"{base_spec['name']} ({setting} setting)")
        print(f"wrote {plot_path}")
    path = reporting.save_json(
        {
            "argv": ["bench/step.py", "sweep", *argv],
            "axis": args.axis,
            "points": points,
            "model_spec": base_spec,
            "args": vars(args),
            "hardware": reporting.hardware(),
            "results": all_results,
        },
        f"sweep_{args.axis}.json",
        args.out,
    )
    print(f"wrote {path}")


def plot_sweep(rows: list[dict[str, Any]], axis: str, methods: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xlabel = {
        "seq_len": "sequence length (tokens, 50% padding)",
        "batch": "batch size",
        "width": "hidden size (intermediate = 4×)",
    }[axis]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        pts = sorted((r[axis], r["cpu_s"], r["peak_mib"]) for r in rows if r["method"] == m)
        if not pts:
            continue
        xs = [q[0] for q in pts]
        ax_t.plot(xs, [q[1] for q in pts], marker="o", label=m)
        ax_m.plot(xs, [q[2] for q in pts], marker="o", label=m)
    for ax, yl in ((ax_t, "median CPU seconds per step (2 threads)"), (ax_m, "peak training memory (MiB)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({r[axis] for r in rows}))
    ax_t.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
