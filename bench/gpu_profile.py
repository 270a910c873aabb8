"""Where a SparseGrad (dynamic) step spends its time on CUDA: torch.profiler table, SG vs full FT.

    python bench/gpu_profile.py [--model bert-base] [--layers 12] [--out DIR]

Same model/batch shapes as ``gpu_step.py`` (16×128, 50% padding, paper setting, fp32). Prints the top CUDA and
CPU ops by self time for 5 profiled steps after 5 warm-up steps, for full fine-tuning and SparseGrad dynamic, and
the number of device→host synchronisations (``cudaStreamSynchronize``/``aten::item``) and of kernel launches
(``cudaLaunchKernel`` and its driver/cuBLAS variants) per step, for every method; with ``--out`` also
``gpu_profile.json`` (per method: launches and syncs per step) and a Chrome trace per method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common
import torch
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--methods", default="full,lora,frozen_mlp,sg_dynamic,sg_fixed,sg_block")
    ap.add_argument("--out")
    args = ap.parse_args()
    dev = torch.device("cuda")
    spec = common.model_spec(args.model, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=dev)
    batches = common.make_batches(4, 16, 128, 0.5, seed=1, **kw)
    calib = common.make_batches(10, 16, 128, 0.5, seed=2, **kw)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = {}
    for method in args.methods.split(","):
        summary[method] = profile_method(method, spec, batches, calib, dev, args.out)
        torch.cuda.empty_cache()
    print("\n===== per step:", json.dumps(summary, indent=1))
    if args.out:
        (Path(args.out) / "gpu_profile.json").write_text(json.dumps(summary, indent=2))


def profile_method(method: str, spec: dict, batches: list, calib: list, dev: torch.device,
                   out: str | None) -> dict[str, float]:
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.optim import build_optimizer

    model = common.build_model(spec, dev)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    prepared = prepare_model(model, common.method_spec(method, "paper", 0.01, 10), calib if is_sg else None)
    model = prepared.model.to(dev).train()
    opt = build_optimizer(model, lr=1e-5)

    def step(b: dict[str, torch.Tensor]) -> None:
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(5):
        step(batches[i % 4])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(5):
            step(batches[i % 4])
        torch.cuda.synchronize()
    ka = prof.key_averages()
    print(f"\n===== {method}: top CUDA self time (5 steps)")
    print(ka.table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=60))
    print(f"===== {method}: top CPU self time (5 steps)")
    print(ka.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    names = ("cudaStreamSynchronize", "aten::item", "cudaDeviceSynchronize", "aten::_local_scalar_dense")
    syncs = {e.key: e.count / 5 for e in ka if e.key in names}
    launches = sum(e.count for e in ka if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                    "cuLaunchKernelEx")) / 5
    print(f"===== {method}: sync calls per step: {syncs}; kernel launches per step: {launches:.0f}")
    if out:
        prof.export_chrome_trace(str(Path(out) / f"trace_{method}.json"))
    return {"kernel_launches": launches, "syncs": sum(syncs.get(n, 0.0) for n in names[:3]), **syncs}

if __name__ == "__main__":
    main()
