"""The step benchmark's runs: its shared options, and every (setting, method) run in its own worker process
(``step_worker.py``), repeats interleaved and then folded into one record per method.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import common
import meters
import reporting
import worker_process

WORKER_SCRIPT = Path(__file__).resolve().parent / "step_worker.py"
DEFAULT_METHODS = ["full", "lora", "meprop", "sg_dynamic", "sg_fixed", "sg_block", "frozen_mlp"]


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """The options ``step.py`` and its sweeps share (batch shape, steps, methods, measurement hygiene)."""
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
    ap.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"],
        help="bf16: every method's forward (and the loss) under torch.autocast('cpu', bfloat16), as a job with "
        "bf16 runs; weights, gradients and optimizer state stay fp32",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--allocator", default="system", choices=["system", "jemalloc"],
        help="jemalloc: the workers run with jemalloc preloaded, as training workers do (sparsegrad_service/allocator.py; "
        "needs libjemalloc2); each result records the allocator its process had",
    )
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
        "precision": args.precision,
        "threads": args.threads,
        "max_foreign": args.max_foreign,
        "cache_calibration": not args.no_cache,
        "fresh_calibration": False,
        "n_batches": args.n_batches,
        "sampler": args.sampler,
    }


def use_allocator(name: str) -> None:
    """Start the worker processes with jemalloc preloaded (``jemalloc``) or with the system's malloc: they inherit
    this process's environment."""
    from sparsegrad_service.allocator import jemalloc_library, with_jemalloc

    if name == "jemalloc":
        if jemalloc_library() is None:
            raise SystemExit("--allocator jemalloc: jemalloc is not installed (sudo apt-get install -y libjemalloc2)")
        os.environ.update(with_jemalloc(os.environ))
    else:
        os.environ.pop("LD_PRELOAD", None)
        os.environ.pop("MALLOC_CONF", None)


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
    use_allocator(getattr(args, "allocator", "system"))
    for rep in range(getattr(args, "repeats", 1)):
        for setting in settings:
            for m in methods:
                if args.quiet_wait > 0:
                    meters.wait_for_quiet(args.quiet_wait)
                t0 = time.perf_counter()
                payload = payload_for(args, spec, m, setting)
                payload["fresh_calibration"] = rep == 0
                r = worker_process.run_worker(WORKER_SCRIPT, payload)
                r["wall_s"] = time.perf_counter() - t0
                raw[setting][m].append(r)
                if verbose:
                    if "error" in r:
                        print(f"  [{setting} #{rep + 1}] {m}: ERROR {r['error'][-600:]}", flush=True)
                    else:
                        print(
                            f"  [{setting} #{rep + 1}] {m}: {r['median_step_s']:.3f} s/step wall, "
                            f"{r['median_cpu_s']:.3f} CPU s ({r['clean_steps']}/{len(r['step_times_s'])} clean steps), "
                            f"peak train {reporting.mib(r['peak_train_bytes']):.0f} MiB, prepare "
                            f"{reporting.mib(r['prepare_peak_bytes']):.0f} MiB ({r['wall_s']:.0f} s wall)",
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
