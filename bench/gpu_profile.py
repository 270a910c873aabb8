"""Where a SparseGrad step spends its time and how many kernels it launches: torch.profiler, every method.

    python bench/gpu_profile.py [--model bert-base] [--layers 12] [--out DIR]      # CUDA
    python bench/gpu_profile.py --device cpu --layers 2 --batch-size 4 --seq-len 32 --out DIR

Same model/batch shapes as ``gpu_step.py`` by default (16×128, 50% padding, paper setting, fp32). For 5 profiled
steps after 5 warm-up steps it prints the top ops by self time (CUDA and CPU), and per step and method:

* ``ops``: operators dispatched at the top level (an ``aten::`` op not called from inside another; views, shape
  queries and no-op ``to`` excluded). Each is at least one kernel launch on a GPU and a round of host work in
  eager mode, so this count tracks the launch-bound part of a step on any device (the CPU too);
* on CUDA, ``kernel_launches`` (``cudaLaunchKernel`` and its driver/cuBLAS variants) and the host
  synchronisations (``cudaStreamSynchronize``, ``aten::item``);

with ``--out`` also ``gpu_profile.json`` (or ``gpu_profile_cpu.json``; ``--name FILE`` names it instead), and with ``--traces`` on CUDA a Chrome
trace per method (``trace_<method>.json``, tens of MB each; ``--traces full,sg_block``: those methods' only).
``--clip`` adds the trainer's gradient clipping (``clip_grad_norm``) to the step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common
import torch
from torch.profiler import ProfilerActivity, profile

PROFILED = 5
# Ops that launch no kernel: views, shape queries, and ``to`` (a no-op unless it dispatches ``_to_copy``).
NO_KERNEL = {
    "aten::view", "aten::t", "aten::transpose", "aten::as_strided", "aten::empty", "aten::empty_strided",
    "aten::reshape", "aten::_reshape_alias", "aten::expand", "aten::expand_as", "aten::view_as", "aten::detach",
    "aten::detach_", "aten::alias", "aten::unsqueeze", "aten::squeeze", "aten::permute", "aten::select",
    "aten::slice", "aten::narrow", "aten::unbind", "aten::split", "aten::split_with_sizes", "aten::chunk",
    "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh", "aten::result_type", "aten::_unsafe_view",
    "aten::flatten", "aten::unflatten", "aten::contiguous", "aten::numpy_T", "aten::mT", "aten::size",
    "aten::stride", "aten::is_nonzero", "aten::broadcast_tensors", "aten::empty_like",
}
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNCS = ("cudaStreamSynchronize", "aten::item", "cudaDeviceSynchronize", "aten::_local_scalar_dense")


def dispatched_ops(events: Any) -> int:
    """Top-level ``aten::`` ops that do work (see the module docstring); a ``to`` counts when it copies."""

    def works(e: Any) -> bool:
        if e.name == "aten::to":
            return any(c.name == "aten::_to_copy" for c in e.cpu_children)
        return e.name.startswith("aten::") and e.name not in NO_KERNEL

    n = 0
    for e in events:
        if not works(e):
            continue
        parent = e.cpu_parent
        while parent is not None and not works(parent):
            parent = parent.cpu_parent
        n += parent is None
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--methods", default="full,lora,frozen_mlp,sg_dynamic,sg_fixed,sg_block")
    ap.add_argument("--clip", action="store_true", help="clip gradients in the step, as the trainer does")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs)")
    ap.add_argument("--traces", nargs="?", const="all", default=None, metavar="METHODS",
                    help="with --out on CUDA: a Chrome trace per method (or of the listed methods)")
    ap.add_argument("--out")
    ap.add_argument("--name", help="result file name under --out (default gpu_profile.json, on CPU gpu_profile_cpu.json)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    spec = common.model_spec(args.model, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=dev)
    batches = common.make_batches(4, args.batch_size, args.seq_len, 0.5, seed=1, **kw)
    calib = common.make_batches(10, args.batch_size, args.seq_len, 0.5, seed=2, **kw)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = {}
    for method in args.methods.split(","):
        summary[method] = profile_method(method, spec, batches, calib, dev, args)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print("\n===== per step:", json.dumps(summary, indent=1))
    if args.out:
        name = args.name or ("gpu_profile.json" if dev.type == "cuda" else f"gpu_profile_{dev.type}.json")
        result = {"argv": sys.argv[1:], "torch": torch.__version__, "per_step": summary}
        (Path(args.out) / name).write_text(json.dumps(summary if dev.type == "cuda" else result, indent=2))


def profile_method(
    method: str, spec: dict, batches: list, calib: list, dev: torch.device, args: argparse.Namespace
) -> dict[str, float]:
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.model import sparsegrad_layers
    from sparsegrad_core.optim import build_optimizer, clip_grad_norm

    model = common.build_model(spec, dev)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    prepared = prepare_model(model, common.method_spec(method, "paper", 0.01, 10), calib if is_sg else None)
    model = prepared.model.to(dev).train()
    for _, layer in sparsegrad_layers(model):
        layer.sync_free = True  # the GPU's path everywhere (the CPU default drops zero rows, with a sync)
    opt = build_optimizer(model, lr=1e-5)

    def step(b: dict[str, torch.Tensor]) -> None:
        model(**b).loss.backward()
        if args.clip:
            clip_grad_norm(model, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(5):
        step(batches[i % 4])
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(PROFILED):
            step(batches[i % 4])
        sync()
    ka = prof.key_averages()
    if dev.type == "cuda":
        print(f"\n===== {method}: top CUDA self time ({PROFILED} steps)")
        print(ka.table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=60))
    print(f"===== {method}: top CPU self time ({PROFILED} steps)")
    print(ka.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    result: dict[str, float] = {"ops": dispatched_ops(prof.events()) / PROFILED}
    if dev.type == "cuda":
        syncs = {e.key: e.count / PROFILED for e in ka if e.key in SYNCS}
        result["kernel_launches"] = sum(e.count for e in ka if e.key in LAUNCHES) / PROFILED
        result["syncs"] = sum(syncs.get(n, 0.0) for n in SYNCS[:3])
        result.update(syncs)
        if args.out and args.traces and (args.traces == "all" or method in args.traces.split(",")):
            prof.export_chrome_trace(str(Path(args.out) / f"trace_{method}.json"))
    print(f"===== {method} per step: {result}")
    return result


if __name__ == "__main__":
    main()
