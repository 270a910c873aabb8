"""The GPU step's memory, counted on the CPU: what each method holds and its peak inside a step, tensor by tensor.

    python bench/step_memory.py                                   # gpu_step.py's encoder case: BERT-base, 16×128
    python bench/step_memory.py --methods full,sg_block --layers 2 --batch-size 4 --seq-len 32   # quick

``gpu_step.py`` reports ``max_memory_allocated`` on a GPU: the bytes of live tensors at the worst moment of the
timed steps, above what was allocated before the model was built. This script counts the same quantity where no GPU
is at hand, on the GPU's code path (``sync_free``: zero-gradient rows kept, dense push-back, batched top-k):

* ``held``: the bytes of every live tensor after the warm-up steps (storages counted once), less those alive before
  the model was built (the batches): weights, SparseGrad's bases and deltas, optimizer state;
* ``step_peak``: the most bytes allocated on top of ``held`` at any moment of one profiled step
  (``torch.profiler``'s memory events, a running sum of every allocation and free);
* ``peak = held + step_peak``, compared across methods as ``gpu_step.py`` does (÷ full FT, ÷ LoRA);
* ``at_peak``: the operators running when the step reached its peak (outermost first), to see what to shrink.

The CUDA caching allocator rounds each block up to 512 bytes and the GPU's libraries keep workspaces, so GPU
figures are slightly higher; the ratios are what this script is for. Results: bench/results/step_memory_cpu.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common
import reporting
import torch
from torch.profiler import ProfilerActivity, profile


def live_tensor_bytes() -> int:
    """Bytes of the storages of every tensor the garbage collector can reach, each storage once."""
    gc.collect()
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on some of torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and not obj.is_sparse and obj.device.type == "cpu":
                    storage = obj.untyped_storage()
                    seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
            except (RuntimeError, ReferenceError):  # meta tensors, tensors mid-teardown
                continue
    return sum(seen.values())


def step_peak(step: Any, batch: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """The most bytes allocated on top of what was live when ``step(batch)`` started, and the operators running
    at that moment (outermost first)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    total = peak = 0
    peak_ts = None
    for e in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: (e["ts"], e["args"].get("Ev Idx", 0))):
        total += e["args"]["Bytes"]
        if total > peak:
            peak, peak_ts = total, e["ts"]
    running = []
    if peak_ts is not None:
        ops = [e for e in events if e.get("ph") == "X" and e["ts"] <= peak_ts <= e["ts"] + e.get("dur", 0)]
        running = [e["name"] for e in sorted(ops, key=lambda e: (e["ts"], -e.get("dur", 0)))]
    return peak, running


def measure(method: str, args: argparse.Namespace) -> dict[str, Any]:
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.model import sparsegrad_layers
    from sparsegrad_core.optim import build_optimizer

    spec = common.model_spec(args.model, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=torch.device("cpu"))
    batches = common.make_batches(2, args.batch_size, args.seq_len, args.pad_frac, seed=1, **kw)
    calib = common.make_batches(args.calib_steps, args.batch_size, args.seq_len, args.pad_frac, seed=2, **kw)
    before = live_tensor_bytes()
    t0 = time.perf_counter()
    model = common.build_model(spec, torch.device("cpu"))
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    prepared = prepare_model(model, common.method_spec(method, "paper", args.density, args.calib_steps),
                             calib if is_sg else None)
    model = prepared.model.train()
    del calib, prepared
    for _, layer in sparsegrad_layers(model):
        layer.sync_free = True  # the GPU's path
    opt = build_optimizer(model, lr=1e-5)

    def step(b: dict[str, torch.Tensor]) -> None:
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    held = live_tensor_bytes() - before
    peak, running = step_peak(step, batches[0])
    print(f"  {method}: held {held / 2**20:.1f} MiB, step peak +{peak / 2**20:.1f} MiB, "
          f"peak {(held + peak) / 2**20:.1f} MiB ({time.perf_counter() - t0:.0f} s); at the peak: "
          f"{' > '.join(running[-4:])}", flush=True)
    return {"method": method, "held_bytes": held, "step_peak_bytes": peak, "peak_bytes": held + peak,
            "at_peak": running}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--methods", default="full,lora,sg_block,sg_dynamic,frozen_mlp")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pad-frac", type=float, default=0.5)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--calib-steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default bench/results/step_memory_cpu.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(m.strip(), args) for m in args.methods.split(",") if m.strip()]
    by = {r["method"]: r for r in rows}
    for r in rows:
        r["mem_x_full"] = r["peak_bytes"] / by["full"]["peak_bytes"] if "full" in by else None
        r["mem_x_lora"] = r["peak_bytes"] / by["lora"]["peak_bytes"] if "lora" in by else None
        for key in ("held", "step_peak", "peak"):
            r[f"{key}_mib"] = r[f"{key}_bytes"] / 2**20
    print()
    print(reporting.fmt_table(rows, [("method", "method"), ("held_mib", "held MiB"), ("step_peak_mib", "step peak MiB"),
                                     ("peak_mib", "peak MiB"), ("mem_x_full", "÷ full"), ("mem_x_lora", "÷ LoRA")]))
    reporting.save_run("bench/step_memory.py", argv, args, "step_memory_cpu.json", results=rows)


if __name__ == "__main__":
    main(sys.argv[1:])
