"""Where a SparseGrad (dynamic) step spends its time on CUDA: torch.profiler table, SG vs full FT.

    python bench/gpu_profile.py [--model bert-base] [--layers 12] [--out DIR]

Same model/batch shapes as ``gpu_step.py`` (16×128, 50% padding, paper setting, fp32). Prints the top CUDA and
CPU ops by self time for 5 profiled steps after 5 warm-up steps, for full fine-tuning and SparseGrad dynamic, and
the number of device→host synchronisations (``cudaStreamSynchronize``/``aten::item``) per step.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--methods", default="full,sg_dynamic,sg_block")
    ap.add_argument("--out")
    args = ap.parse_args()
    dev = torch.device("cuda")
    spec = common.model_spec(args.model, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=dev)
    batches = common.make_batches(4, 16, 128, 0.5, seed=1, **kw)
    calib = common.make_batches(10, 16, 128, 0.5, seed=2, **kw)
    for method in args.methods.split(","):
        profile_method(method, spec, batches, calib, dev, args.out)
        torch.cuda.empty_cache()


def profile_method(method: str, spec: dict, batches: list, calib: list, dev: torch.device, out: str | None) -> None:
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
    print(f"===== {method}: sync calls per step: {syncs}")
    if out:
        prof.export_chrome_trace(str(Path(out) / f"trace_{method}.json"))

if __name__ == "__main__":
    main()
