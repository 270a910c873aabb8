"""Per-step training time and peak training memory of SparseGrad vs full FT, LoRA, MeProp, frozen MLP (CPU).

    python bench/step.py --model bert-base-4l                 # both settings, all methods
    python bench/step.py --model minilm --settings paper
    python bench/step.py sweep --axis seq_len                 # also: batch, width (writes a PNG per axis)

Every (setting, method) runs in a fresh subprocess: import everything → RSS baseline → build the model →
prepare (SparseGrad calibrates here; not timed) → warmup steps → timed steps (forward + backward +
optimizer step + zero_grad), same batches for all methods, ``torch.set_num_threads(threads)``.

Memory metric ("peak training memory"): the peak resident set size of the worker process during the timed
steps (Linux VmHWM, reset right before the first timed step) minus the RSS measured right before the model
was built (after imports and batch creation; heap trimmed with ``malloc_trim`` before both readings). It
therefore includes the model weights, gradients, optimizer state, SparseGrad bases and the activation peak.
"State memory" is computed from tensors: parameters + buffers + gradients + optimizer state + SparseGrad
bases/indices/deltas (and fixed-selection support tensors), each storage counted once.

Time: median wall seconds and median process CPU seconds (user + system, all threads) per step. On a shared
machine the CPU seconds are the comparable figure; each step also records the "foreign" CPU share used by
other processes (``/proc/stat``), steps above ``--max-foreign`` are replaced (up to 3x ``--steps``), and the
workers run with ``OMP_WAIT_POLICY=PASSIVE``. SparseGrad calibrations are cached per model/selection mode
within one invocation (``--no-cache`` to recalibrate in every worker). Results: bench/results/step_<model>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common

SCRIPT = Path(__file__).resolve()
DEFAULT_METHODS = ["full", "lora", "meprop", "sg_dynamic", "sg_fixed", "sg_block", "frozen_mlp"]


# =========================================================================== worker (fresh process)


def worker(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(p["threads"])
    # Import everything any method needs *before* the baseline, so every method pays the same.
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.model import sparsegrad_layers
    from sparsegrad_core.optim import build_optimizer

    spec = p["model_spec"]
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec))
    batches = common.make_batches(p["n_batches"], p["batch_size"], p["seq_len"], p["pad_frac"], seed=1, **kw)
    calib = common.make_batches(p["calib_steps"], p["batch_size"], p["seq_len"], p["pad_frac"], seed=2, **kw)
    label, setting = p["method"], p["setting"]
    is_sg = common.ALL_METHODS[label][0] == "sparsegrad"

    common.touch_kernels()
    gc.collect()
    common.malloc_trim()
    baseline = common.rss_bytes()

    if is_sg and p.get("cache_calibration", True):
        common.cached_calibration(
            refresh=p.get("fresh_calibration", False),
            key={
                "spec": spec,
                "batch": [p["batch_size"], p["seq_len"], p["pad_frac"]],
                "calib_steps": p["calib_steps"],
                "density": p["density"],
                "selection": common.ALL_METHODS[label][1],
            }
        )
    model = common.build_model(spec)
    t0 = time.perf_counter()
    with common.PeakRSS() as prepare_peak:  # calibration included (when it is not read from the cache)
        prepared = prepare_model(
            model, common.method_spec(label, setting, p["density"], p["calib_steps"]), calib if is_sg else None
        )
    prepare_s = time.perf_counter() - t0
    model = prepared.model
    model.train()
    torch.manual_seed(0)
    opt = build_optimizer(model, lr=p["lr"])

    def train_step(batch: dict[str, Any], keep_grads: bool = False) -> list[Any]:
        out = model(**batch)
        out.loss.backward()
        grads = [q.grad for q in model.parameters() if q.grad is not None] if keep_grads else []
        opt.step()
        opt.zero_grad(set_to_none=True)
        return grads

    for i in range(p["warmup"]):
        train_step(batches[i % len(batches)])
    gc.collect()
    common.malloc_trim()
    rss_before_timed = common.rss_bytes()
    # Timed steps. The machine is shared: a step during which other processes used more than
    # ``max_foreign`` of the CPU is kept in the record but not in the median, and replaced by another
    # step, up to ``3 * steps`` steps in all.
    # The last step keeps references to its gradients for the state accounting; they are released only
    # after the measured region ends, so they do not raise the peak (gradients are alive at the peak anyway).
    times, cpu, foreign = [], [], []
    grads: list[Any] = []
    with common.PeakRSS(sampler=p.get("sampler", False)) as peak:
        i = 0
        while i < 3 * p["steps"]:
            last = sum(f <= p["max_foreign"] for f in foreign) == p["steps"] - 1 or i == 3 * p["steps"] - 1
            with common.ForeignLoad() as fl:
                c = common.cpu_seconds()
                t = time.perf_counter()
                grads = train_step(batches[(p["warmup"] + i) % len(batches)], keep_grads=last)
                times.append(time.perf_counter() - t)
                cpu.append(common.cpu_seconds() - c)
            foreign.append(fl.share)
            i += 1
            if sum(f <= p["max_foreign"] for f in foreign) >= p["steps"]:
                break
    if not grads:
        grads = train_step(batches[0], keep_grads=True)
    state = common.state_memory(model, opt, grads)
    del grads
    clean = [t for t, f in zip(times, foreign, strict=True) if f <= p["max_foreign"]]
    clean_cpu = [t for t, f in zip(cpu, foreign, strict=True) if f <= p["max_foreign"]]
    enough = len(clean) >= max(1, p["steps"] // 2)

    sg_info: dict[str, Any] = {}
    layers = [layer for _, layer in sparsegrad_layers(model)]
    if layers:
        sparse = next(o for o in opt.optimizers if hasattr(o, "state_bytes"))
        sg_info = {
            "layers": len(layers),
            "k_per_layer": [layer.k for layer in layers],
            "touched_entries_per_layer": [int(layer.touched_entries()) for layer in layers],
            "block_per_layer": [[layer.r_out, layer.r_in] for layer in layers] if layers[0].selection == "block" else None,
            "block_stats": (prepared.basis.stats.get("block") if prepared.basis is not None else None),
            "sparse_state_bytes": sparse.state_bytes(),
        }
    return {
        "method": label,
        "setting": setting,
        "step_times_s": times,
        "step_cpu_s": cpu,
        "foreign_load": foreign,
        "clean_steps": len(clean),
        "median_step_s": statistics.median(clean if enough else times),
        "median_cpu_s": statistics.median(clean_cpu if enough else cpu),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "baseline_rss": baseline,
        "rss_before_timed": rss_before_timed,
        "peak_rss": peak.peak,
        "peak_sampled_rss": peak.peak_sampled or None,
        "peak_method": peak.method,
        "peak_train_bytes": peak.peak - baseline,
        "prepare_peak_bytes": prepare_peak.peak - baseline,
        "calibration_measured": is_sg and not bool((prepared.info.get("calibration") or {}).get("cached")),
        "state_bytes": state,
        "prepare_s": prepare_s,
        "calibration_s": (prepared.info.get("calibration") or {}).get("seconds"),
        "calibration_cached": bool((prepared.info.get("calibration") or {}).get("cached")),
        "trainable_params": prepared.trainable_params,
        "lora_rank": prepared.lora_rank,
        "sparsegrad": sg_info,
        "threads": torch.get_num_threads(),
    }


# =========================================================================== driver


def add_common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument(
        "--pad-frac", type=float, default=0.5, help="share of each sequence that is padding (at the end)"
    )
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method")
    ap.add_argument(
        "--repeats", type=int, default=1,
        help="runs of every method, interleaved (method order repeated); ratios are medians of per-repeat ratios",
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help=f"comma list of {','.join(common.ALL_METHODS)}"
    )
    ap.add_argument("--settings", default="paper,peft", help="comma list of paper,peft")
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument(
        "--calib-steps", type=int, default=8, help="SparseGrad calibration backward passes (not timed)"
    )
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=0.10,
        help="steps during which other processes used more than this share of the CPUs are not "
        "counted (replaced, up to 3x --steps)",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each method, wait up to this many seconds for the machine to be idle",
    )
    ap.add_argument("--n-batches", type=int, default=4, help="distinct training batches, cycled")
    ap.add_argument(
        "--no-cache",
        action="store_true",
        help="recalibrate in every SparseGrad worker (default: one calibration per model/selection, "
        "reused by the other setting from a file cache)",
    )
    ap.add_argument(
        "--sampler", action="store_true", help="also sample RSS every 1 ms in a thread (cross-check)"
    )
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--out", help="JSON output path (default bench/results/step_<model>.json)")


def payload_for(args: argparse.Namespace, spec: dict[str, Any], method: str, setting: str) -> dict[str, Any]:
    return {
        "model_spec": spec,
        "method": method,
        "setting": setting,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "pad_frac": args.pad_frac,
        "steps": args.steps,
        "warmup": args.warmup,
        "density": args.density,
        "calib_steps": args.calib_steps,
        "lr": args.lr,
        "threads": args.threads,
        "max_foreign": args.max_foreign,
        "cache_calibration": not args.no_cache,
        "fresh_calibration": False,
        "n_batches": args.n_batches,
        "sampler": args.sampler,
    }


def run_methods(
    args: argparse.Namespace,
    spec: dict[str, Any],
    methods: list[str],
    settings: list[str],
    *,
    verbose: bool = True,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every (setting, method) in its own process, ``args.repeats`` times, methods interleaved: repeat 1 runs
    every method, then repeat 2... The first repeat calibrates afresh (its calibration memory is measured)."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {m: [] for m in methods} for s in settings}
    for rep in range(getattr(args, "repeats", 1)):
        for setting in settings:
            for m in methods:
                if args.quiet_wait > 0:
                    common.wait_for_quiet(args.quiet_wait)
                t0 = time.perf_counter()
                payload = payload_for(args, spec, m, setting)
                payload["fresh_calibration"] = rep == 0
                r = common.run_worker(SCRIPT, payload)
                r["wall_s"] = time.perf_counter() - t0
                raw[setting][m].append(r)
                if verbose:
                    if "error" in r:
                        print(f"  [{setting} #{rep + 1}] {m}: ERROR {r['error'][-600:]}", flush=True)
                    else:
                        print(
                            f"  [{setting} #{rep + 1}] {m}: {r['median_step_s']:.3f} s/step wall, "
                            f"{r['median_cpu_s']:.3f} CPU s ({r['clean_steps']}/{len(r['step_times_s'])} clean steps), "
                            f"peak train {common.mib(r['peak_train_bytes']):.0f} MiB, prepare "
                            f"{common.mib(r['prepare_peak_bytes']):.0f} MiB ({r['wall_s']:.0f} s wall)",
                            flush=True,
                        )
    return {s: {m: aggregate_repeats(rs) for m, rs in by_m.items()} for s, by_m in raw.items()}


REP_KEYS = ("median_step_s", "median_cpu_s", "peak_train_bytes", "prepare_peak_bytes")


def aggregate_repeats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first successful run's record, with step times replaced by medians over repeats and each
    repeat's figures kept under ``reps`` (for per-repeat ratios)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    out = dict(ok[0])
    out["reps"] = [{k: r[k] for k in REP_KEYS} for r in ok]
    out["median_step_s"] = statistics.median(r["median_step_s"] for r in ok)
    out["median_cpu_s"] = statistics.median(r["median_cpu_s"] for r in ok)
    out["prepare_peak_bytes"] = max(r["prepare_peak_bytes"] for r in ok if r.get("calibration_measured", True)) \
        if any(r.get("calibration_measured", True) for r in ok) else ok[0]["prepare_peak_bytes"]
    return out


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
                "peak_mib": common.mib(mem),
                "prepare_mib": common.mib(r["prepare_peak_bytes"]),
                "job_peak_mib": common.mib(max(mem, r["prepare_peak_bytes"])),
                "job_mem_x_full": ratio(max(mem, r["prepare_peak_bytes"]),
                                        max(get("full", "peak_train_bytes") or 0, get("full", "prepare_peak_bytes") or 0)),
                "sparse_state_mib": common.mib((r.get("sparsegrad") or {}).get("sparse_state_bytes", 0)),
                "state_mib": common.mib(r["state_bytes"]["total"]),
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
        c["verdict"] = common.verdict(c["value"], c["limit"])
    return checks


def print_report(results: dict[str, dict[str, dict[str, Any]]], *, markdown: bool = False) -> dict[str, Any]:
    summary = {}
    for setting, res in results.items():
        rows = summarize(res)
        checks = target_checks(rows)
        summary[setting] = {"rows": rows, "checks": checks}
        print(f"\n=== setting: {setting} ===")
        print(common.fmt_table(rows, TABLE_COLS, markdown=markdown))
        if checks:
            print()
            print(
                common.fmt_table(
                    checks, [("check", "target"), ("value", "measured"), ("verdict", "")], markdown=markdown
                )
            )
    return summary


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base-4l", choices=list(common.MODEL_PRESETS))
    ap.add_argument("--markdown", action="store_true", help="print tables as markdown")
    add_common_args(ap)
    args = ap.parse_args(argv)
    spec = common.model_spec(args.model, args.hidden, args.intermediate, args.layers, args.heads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for m in methods:
        if m not in common.ALL_METHODS:
            raise SystemExit(f"unknown method {m!r}")
    print(
        f"model {spec}  batch {args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}  "
        f"steps {args.steps} (+{args.warmup} warmup)  threads {args.threads}  density {args.density}"
    )
    print("peak training memory = peak RSS during the timed steps − RSS right before the model was built")
    common.clear_calibration_cache()
    results = run_methods(args, spec, methods, settings)
    common.clear_calibration_cache()
    summary = print_report(results, markdown=args.markdown)
    path = common.save_json(
        {
            "argv": ["bench/step.py", *argv],
            "model_spec": spec,
            "args": vars(args),
            "hardware": common.hardware(),
            "metric": "peak_train_bytes = VmHWM during timed steps - RSS before model build",
            "results": results,
            "summary": summary,
        },
        f"step_{args.model}.json",
        args.out,
    )
    print(f"\nwrote {path}")


# =========================================================================== sweeps

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
    ap.add_argument("--plot-dir", default=str(common.RESULTS_DIR), help="where the PNG goes")
    add_common_args(ap)
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
        all_results[str(v)] = run_methods(a, spec, methods, settings)
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
                            "peak_mib": common.mib(r["peak_train_bytes"]),
                            "state_mib": common.mib(r["state_bytes"]["total"]),
                        }
                    )
        for row in rows:
            full = next((q for q in rows if q[args.axis] == row[args.axis] and q["method"] == "full"), None)
            if full:
                row["x_full"] = row["cpu_s"] / full["cpu_s"]
                row["mem_x_full"] = row["peak_mib"] / full["peak_mib"]
        print(f"\n=== sweep {args.axis}, setting {setting} ===")
        print(
            common.fmt_table(
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
    path = common.save_json(
        {
            "argv": ["bench/step.py", "sweep", *argv],
            "axis": args.axis,
            "points": points,
            "model_spec": base_spec,
            "args": vars(args),
            "hardware": common.hardware(),
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


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        payload = json.loads(sys.argv[2])
        result = worker(payload)
        common.write_result(result, payload["result_path"])
    elif len(sys.argv) > 1 and sys.argv[1] == "sweep":
        sweep(sys.argv[2:])
    else:
        main(sys.argv[1:])
