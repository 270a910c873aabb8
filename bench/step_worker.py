"""The step benchmark's worker: one (setting, method) measured in a fresh process (see ``step.py``).

    python bench/step_worker.py _worker '<payload json>'      # run by step_runner.run_methods, not by hand

Imports everything any method needs → RSS baseline → builds the model → prepares it (SparseGrad calibrates,
or reads the calibration cache) → warmup steps → timed steps under ``PeakRSS``, each with its foreign CPU
share; steps that other processes disturbed are replaced. Writes the record (times, peaks, state memory,
SparseGrad layer figures) as JSON to ``payload["result_path"]``.
"""

from __future__ import annotations

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
import meters
import worker_process

from sparsegrad_service.allocator import process_allocator


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

    meters.touch_kernels()
    gc.collect()
    meters.malloc_trim()
    baseline = meters.rss_bytes()

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
    with meters.PeakRSS() as prepare_peak:  # calibration included (when it is not read from the cache)
        prepared = prepare_model(
            model, common.method_spec(label, setting, p["density"], p["calib_steps"]), calib if is_sg else None
        )
    prepare_s = time.perf_counter() - t0
    model = prepared.model
    model.train()
    torch.manual_seed(0)
    opt = build_optimizer(model, lr=p["lr"])

    bf16 = p.get("precision", "fp32") == "bf16"

    def train_step(batch: dict[str, Any], keep_grads: bool = False) -> list[Any]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch)
        out.loss.backward()
        grads = [q.grad for q in model.parameters() if q.grad is not None] if keep_grads else []
        opt.step()
        opt.zero_grad(set_to_none=True)
        return grads

    for i in range(p["warmup"]):
        train_step(batches[i % len(batches)])
    gc.collect()
    meters.malloc_trim()
    rss_before_timed = meters.rss_bytes()
    # Timed steps. The machine is shared: a step during which other processes used more than
    # ``max_foreign`` of the CPU is kept in the record but not in the median, and replaced by another
    # step, up to ``3 * steps`` steps in all.
    # The last step keeps references to its gradients for the state accounting; they are released only
    # after the measured region ends, so they do not raise the peak (gradients are alive at the peak anyway).
    times, cpu, foreign = [], [], []
    grads: list[Any] = []
    with meters.PeakRSS(sampler=p.get("sampler", False)) as peak:
        i = 0
        while i < 3 * p["steps"]:
            last = sum(f <= p["max_foreign"] for f in foreign) == p["steps"] - 1 or i == 3 * p["steps"] - 1
            with meters.ForeignLoad() as fl:
                c = meters.cpu_seconds()
                t = time.perf_counter()
                grads = train_step(batches[(p["warmup"] + i) % len(batches)], keep_grads=last)
                times.append(time.perf_counter() - t)
                cpu.append(meters.cpu_seconds() - c)
            foreign.append(fl.share)
            i += 1
            if sum(f <= p["max_foreign"] for f in foreign) >= p["steps"]:
                break
    if not grads:
        grads = train_step(batches[0], keep_grads=True)
    state = meters.state_memory(model, opt, grads)
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
        "precision": p.get("precision", "fp32"),
        "allocator": process_allocator(),
        "malloc_conf": os.environ.get("MALLOC_CONF"),
    }


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "_worker":
        raise SystemExit("usage: step_worker.py _worker '<payload json>' (run by bench/step.py)")
    payload = json.loads(sys.argv[2])
    worker_process.write_result(worker(payload), payload["result_path"])
