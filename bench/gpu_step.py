"""GPU training throughput and memory, in the shape of the paper's Table 3 (one command, < ~5 min on an H100).

    python bench/gpu_step.py                                   # CUDA: bert-base + roberta-base shapes, fp32 + bf16
    python bench/gpu_step.py --device cpu --layers 2 --steps 2 # CPU smoke check

Models: BERT-base- and RoBERTa-base-shaped sequence classifiers (hidden 768, intermediate 3072, 12 heads,
``--layers`` layers, random init — the throughput does not depend on the weights). Batch 16×128 with
``--pad-frac`` padding at the end of each sequence (default 0.5), deterministic random tokens, binary labels.
Methods: full FT, LoRA (equal trainable MLP parameters), MeProp, SparseGrad dynamic and fixed, and the MLP-frozen
lower bound, all in the ``paper`` setting (every non-MLP parameter trains densely). Precisions: fp32, and bf16
autocast (forward + loss under ``torch.autocast(dtype=bfloat16)``; weights, gradients and optimizer state fp32).

Per (model, precision, method): build → prepare (SparseGrad calibrates; not timed) → ``--warmup`` steps →
``torch.cuda.reset_peak_memory_stats()`` → ``--steps`` timed steps (forward + backward + optimizer step +
zero_grad, synchronised). Reported: steps/s; ``peak MiB`` = ``torch.cuda.max_memory_allocated()`` over the timed
steps (absolute: weights + state + activations), ``state MiB`` = ``torch.cuda.memory_allocated()`` after the last
step (what stays between steps, comparable to the paper's figures, which match retained memory). All methods run
in this one process, freeing everything (and ``empty_cache``) between them; the fp32 and bf16 runs of a model
share one calibration per selection mode (calibration is in fp32 and not timed). On CPU the memory columns are RSS
based (peak RSS over the timed steps − RSS before the model was built) and only smoke-check the script.

Paper Table 3 (RoBERTa-base, GLUE, GPU): FT 4.11 steps/s 1345 MB; LoRA 4.7 / 944; SG with SD 4.3 / 1016;
SG without SD 0.9 / 1210.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common
import torch

PAPER = {"full": (4.11, 1345), "lora": (4.7, 944), "sg_dynamic": (4.3, 1016)}


_CALIBRATIONS: dict[tuple[Any, ...], Any] = {}
_CALIB_KEY: list[tuple[Any, ...]] = [()]


def _memoize_calibration() -> None:
    """fp32 and bf16 runs of one model use the same calibration (it runs in fp32, outside autocast, and is
    not timed): compute it once per (model, selection) and reuse it, to keep the whole run short."""
    import sparsegrad_core.methods as methods

    original = methods.calibrate

    def calibrate(model: Any, batches: Any, cfg: Any, **kw: Any) -> Any:
        key = _CALIB_KEY[0]
        if key not in _CALIBRATIONS:
            _CALIBRATIONS[key] = original(model, batches, cfg, **kw)
        return _CALIBRATIONS[key]

    methods.calibrate = calibrate


def run_one(
    args: argparse.Namespace, model_name: str, precision: str, method: str, device: torch.device
) -> dict[str, Any]:
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.optim import build_optimizer

    spec = common.model_spec(model_name, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=device)
    batches = common.make_batches(4, args.batch_size, args.seq_len, args.pad_frac, seed=1, **kw)
    calib = common.make_batches(args.calib_steps, args.batch_size, args.seq_len, args.pad_frac, seed=2, **kw)
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        base_alloc = torch.cuda.memory_allocated(device)
    else:
        common.malloc_trim()
        base_alloc = common.rss_bytes()
    model = common.build_model(spec, device)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    _CALIB_KEY[0] = (model_name, args.layers, common.ALL_METHODS[method][1], args.calib_steps, args.density)
    t0 = time.perf_counter()
    prepared = prepare_model(
        model, common.method_spec(method, "paper", args.density, args.calib_steps), calib if is_sg else None
    )
    prepare_s = time.perf_counter() - t0
    model = prepared.model.to(device)
    model.train()
    opt = build_optimizer(model, lr=1e-5)

    def amp() -> Any:
        return (
            torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            if precision == "bf16"
            else nullcontext()
        )

    def step(b: dict[str, torch.Tensor]) -> None:
        with amp():
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    sync()
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        peak_ctx: Any = nullcontext()
    else:
        peak_ctx = common.PeakRSS()
    with peak_ctx as pk:
        t_all = time.perf_counter()
        for i in range(args.steps):
            t = time.perf_counter()
            step(batches[i % len(batches)])
            sync()
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - t_all
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base_alloc
        state = torch.cuda.memory_allocated(device) - base_alloc
    else:
        peak = pk.peak - base_alloc
        state = common.rss_bytes() - base_alloc
    out = {
        "model": model_name,
        "precision": precision,
        "method": method,
        "steps_per_s": args.steps / total,
        "median_step_s": statistics.median(times),
        "peak_bytes": peak,
        "state_bytes": state,
        "prepare_s": prepare_s,
        "trainable_params": prepared.trainable_params,
        "lora_rank": prepared.lora_rank,
    }
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="bert-base,roberta-base")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--methods", default="full,lora,meprop,sg_dynamic,sg_fixed,sg_block,frozen_mlp")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pad-frac", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--calib-steps", type=int, default=10)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the fp32 runs")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU smoke runs)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; use --device cpu --layers 2 --steps 2 for a smoke check")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    common.touch_kernels()
    _memoize_calibration()
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    methods = [m for m in args.methods.split(",") if m]
    hw = common.hardware()
    print(
        f"device {hw.get('gpu', hw.get('Model name', device))}; batch {args.batch_size}x{args.seq_len} pad "
        f"{args.pad_frac:.0%}; {args.layers} layers; {args.steps} timed steps (+{args.warmup}); paper setting"
    )
    rows = []
    t_start = time.perf_counter()
    for model_name in models:
        for precision in precisions:
            for method in methods:
                r = run_one(args, model_name, precision, method, device)
                gc.collect()  # the model and optimizer of run_one are garbage now
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(r)
                print(
                    f"  {model_name} {precision} {method}: {r['steps_per_s']:.2f} steps/s, peak "
                    f"{common.mib(r['peak_bytes']):.0f} MiB, state {common.mib(r['state_bytes']):.0f} MiB "
                    f"(prepare {r['prepare_s']:.1f} s; {time.perf_counter() - t_start:.0f} s so far)",
                    flush=True,
                )
    for r in rows:
        ref = next(
            (
                q
                for q in rows
                if q["model"] == r["model"] and q["precision"] == r["precision"] and q["method"] == "full"
            ),
            None,
        )
        lora = next(
            (
                q
                for q in rows
                if q["model"] == r["model"] and q["precision"] == r["precision"] and q["method"] == "lora"
            ),
            None,
        )
        r["x_full"] = r["steps_per_s"] / ref["steps_per_s"] if ref else None
        r["mem_x_full"] = r["peak_bytes"] / ref["peak_bytes"] if ref else None
        r["mem_x_lora"] = r["peak_bytes"] / lora["peak_bytes"] if lora else None
        r["peak_mib"], r["state_mib"] = common.mib(r["peak_bytes"]), common.mib(r["state_bytes"])
        paper = PAPER.get(r["method"])
        r["paper"] = f"{paper[0]} / {paper[1]}" if paper and r["model"] == "roberta-base" else ""
    print()
    print(
        common.fmt_table(
            rows,
            [
                ("model", "model"),
                ("precision", "prec"),
                ("method", "method"),
                ("steps_per_s", "steps/s"),
                ("x_full", "speed ×FT"),
                ("peak_mib", "peak MiB"),
                ("mem_x_full", "peak ×FT"),
                ("mem_x_lora", "peak ×LoRA"),
                ("state_mib", "state MiB"),
                ("paper", "paper steps/s / MB"),
            ],
        )
    )
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    path = common.save_json(
        {"argv": ["bench/gpu_step.py", *argv], "args": vars(args), "hardware": hw, "rows": rows},
        f"gpu_step_{device.type}.json",
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
