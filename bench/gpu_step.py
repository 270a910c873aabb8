"""GPU training throughput and memory: the paper's Table 3 encoders and LLaMA-family decoders with gradient
checkpointing (one command, meant to finish within 8 minutes on an H100/H200).

    python bench/gpu_step.py                                   # CUDA: both suites (encoders, then llama)
    python bench/gpu_step.py --suite encoders                  # only the paper's encoders
    python bench/gpu_step.py --suite encoders --precisions fp32,bf16 \
        --methods full,lora,meprop,sg_dynamic,sg_fixed,sg_block,frozen_mlp   # every encoder case (~3x as long)
    python bench/gpu_step.py --suite llama                     # only the LLaMA decoders
    python bench/gpu_step.py --device cpu --layers 2 --steps 2 # CPU smoke check (llama: the llama-tiny shape)

Suite ``encoders``. Models: BERT-base- and RoBERTa-base-shaped sequence classifiers (hidden 768, intermediate
3072, 12 heads, ``--layers`` layers, random init — the throughput does not depend on the weights). Batch 16×128
with ``--pad-frac`` padding at the end of each sequence (default 0.5), deterministic random tokens, binary labels.
Methods: full FT, LoRA (equal trainable MLP parameters), SparseGrad dynamic (exact) and block, and the MLP-frozen
lower bound by default; MeProp and SparseGrad fixed on request; all in the ``paper`` setting (every non-MLP
parameter trains densely). Precisions: fp32 by default, and bf16 autocast on request (forward + loss under
``torch.autocast(dtype=bfloat16)``; weights, gradients and optimizer state fp32). The fp32 and bf16 runs of a
model share one calibration per selection mode (calibration is in fp32 and not timed).

Suite ``llama``. Models (``--llama-shapes``): random-init ``LlamaForCausalLM`` of LLaMA-2-7B's shape (hidden
4096, intermediate 11008, 32 layers, 32 heads, vocab 32000; 6.7B parameters) and of TinyLlama-1.1B's (hidden 2048,
intermediate 5632, 22 layers, 32 heads, 4 key/value heads), built directly on the GPU in bf16: weights,
gradients and AdamW state are all bf16 (precision ``bf16-weights``: no autocast, no fp32 master copy). Gradient
checkpointing is on (non-reentrant, as ``TrainingArguments.gradient_checkpointing``); batch 4×512 random tokens
without padding, causal-LM loss. Methods in the ``peft`` setting — only the method's MLP parameters train
(embeddings, attention, norms and the LM head stay frozen): LoRA (equal trainable MLP parameters), SparseGrad
block and exact (``sg_dynamic``) selection at ``--density``, and the MLP-frozen floor, where nothing trains
(forward + the activation backward every MLP method needs, no optimizer). Full FT trains every parameter with
AdamW. SparseGrad calibrates on ``--llama-calib-steps`` batches (not timed; its peak is reported). A case that
runs out of GPU memory is recorded as "OOM: does not fit" (table and JSON) and the run goes on. On CPU the
default shape is ``llama-tiny`` in fp32 (a smoke check of the code path).

Per case: build → prepare (SparseGrad calibrates; not timed) → warmup steps → ``torch.cuda.reset_peak_memory_stats()``
→ timed steps (forward + backward + optimizer step + zero_grad, synchronised). Reported: steps/s; ``prep peak
MiB`` = ``torch.cuda.max_memory_allocated()`` from building the model to the end of its preparation (calibration
included); ``peak MiB`` = the same over the timed steps (absolute: weights + state + activations); ``state MiB`` =
``torch.cuda.memory_allocated()`` after the last step (what stays between steps, comparable to the paper's
figures, which match retained memory). All memory is relative to what was allocated before the model was built.
Every method runs in a Python process of its own, one per method and suite, all started (imports done) before
anything is measured (``--in-process``: all in this one); each process makes a first CUDA allocation (context,
cuBLAS workspaces) that no baseline includes, and frees a case's objects before the next case. The encoder
cases run ``--repeats`` times (default 3),
methods interleaved (repeat 1 runs every case, then repeat 2...), and the tables report the median steps/s and the
median over repeats of each repeat's ratio to full FT (``x_full``; per-repeat figures in ``steps_per_s_reps`` and
``x_full_reps``, every repeat's row under ``runs``). Memory and preparation figures are the first repeat's; the
calibration is computed once per (model, selection) in the method's process and reused by its later cases.
On CPU the memory columns are RSS based (peaks of RSS − RSS before the model was built) and only smoke-check
the script. A case that fails otherwise is recorded with its error, the others still run, and the script exits 1
at the end. The result file is rewritten after every case (``complete`` false until the end).

Paper Table 3 (RoBERTa-base, GLUE, GPU): FT 4.11 steps/s 1345 MB; LoRA 4.7 / 944; SG with SD 4.3 / 1016;
SG without SD 0.9 / 1210.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

# The parts: gpu_cases.py runs one case (gpu_meters.py measures it), gpu_step_report.py makes the tables.
import common
import gpu_cases
import gpu_step_report
import meters
import reporting
import torch
import worker_process
from gpu_cases import LLAMA_DTYPES, LLAMA_SETTING, OK, OOM

SUITES = ("all", "encoders", "llama")
LLAMA_GPU_SHAPES = "llama-1b,llama-2-7b"
LLAMA_CPU_SHAPES = "llama-tiny"


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, with the device-dependent LLaMA defaults resolved and every listed name checked."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--suite", choices=SUITES, default="all", help="which cases to run (default: all)")
    ap.add_argument("--models", default="bert-base,roberta-base")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--precisions", default="fp32", help="encoder precisions: fp32 (default), bf16 (autocast)")
    ap.add_argument(
        "--methods", default="full,lora,sg_dynamic,sg_block,frozen_mlp",
        help="encoder methods (default: full,lora,sg_dynamic,sg_block,frozen_mlp; meprop and sg_fixed also run)",
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pad-frac", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--calib-steps", type=int, default=10)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument(
        "--llama-shapes",
        help=f"LLaMA shapes (default: {LLAMA_GPU_SHAPES} on CUDA, {LLAMA_CPU_SHAPES} on CPU); "
        f"from {', '.join(common.LLAMA_PRESETS)}",
    )
    ap.add_argument(
        "--llama-dtype", choices=list(LLAMA_DTYPES), help="LLaMA weights (default: bf16 on CUDA, fp32 on CPU)"
    )
    ap.add_argument("--llama-methods", default="full,lora,sg_block,sg_dynamic,frozen_mlp")
    ap.add_argument("--llama-batch-size", type=int, default=4)
    ap.add_argument("--llama-seq-len", type=int, default=512)
    ap.add_argument("--llama-steps", type=int, default=5)
    ap.add_argument("--llama-warmup", type=int, default=2)
    ap.add_argument("--llama-calib-steps", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=3,
        help="encoder cases: each runs this many times, every case of a repeat before the next repeat; steps/s "
        "and its ratio to full FT are medians over repeats (default 3)",
    )
    ap.add_argument("--llama-repeats", type=int, default=1, help="the same for the LLaMA cases (default 1)")
    ap.add_argument(
        "--in-process", action="store_true",
        help="run every case in this process (default: each method in a process of its own)",
    )
    ap.add_argument("--case-timeout", type=float, default=1800, help="seconds one case may take")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the fp32 runs")
    ap.add_argument(
        "--cuda-graphs", action="store_true",
        help="encoder cases: capture every method's training step once in a CUDA graph (after 3 eager steps) and "
        "time its replays, the step without the host's launch overhead (optimizers with capturable step counts)",
    )
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU smoke runs)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    on_cuda = torch.device(args.device).type == "cuda"
    args.llama_shapes = args.llama_shapes or (LLAMA_GPU_SHAPES if on_cuda else LLAMA_CPU_SHAPES)
    args.llama_dtype = args.llama_dtype or ("bf16" if on_cuda else "fp32")
    for shape in _csv(args.llama_shapes):
        if shape not in common.LLAMA_PRESETS:
            ap.error(f"unknown --llama-shapes entry {shape!r}; choose from {', '.join(common.LLAMA_PRESETS)}")
    if args.cuda_graphs and not on_cuda:
        ap.error("--cuda-graphs needs a CUDA --device")
    if args.repeats < 1 or args.llama_repeats < 1:
        ap.error("--repeats and --llama-repeats must be at least 1")
    for method in _csv(args.methods) + _csv(args.llama_methods):
        if method not in common.ALL_METHODS:
            ap.error(f"unknown method {method!r}; choose from {', '.join(common.ALL_METHODS)}")
    return args


def setup_process(args: argparse.Namespace, device: torch.device) -> None:
    """Threads, TF32, the math libraries' code pages and a first CUDA allocation (cuBLAS workspaces, the
    context) before any case measures its baseline; the calibration memo."""
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    meters.touch_kernels()
    if device.type == "cuda":  # plain and bias-fused products (cuBLAS, cuBLASLt), fp32 and bf16: workspaces
        a = torch.randn(256, 256, device=device, requires_grad=True)
        b = torch.randn(256, device=device)
        for autocast in (False, True):
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
                (a @ a + torch.nn.functional.linear(a, a, b)).sum().backward()
        torch.cuda.synchronize(device)
    gpu_cases.memoize_calibration()


def run_case(args: argparse.Namespace, row: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """``row`` (suite, model, precision, method) measured here and completed (``gpu_cases.run_guarded``)."""
    if row["suite"] == "encoders":
        case = functools.partial(gpu_cases.run_encoder, args, row["model"], row["precision"], row["method"], device)
    else:
        dtype = LLAMA_DTYPES[args.llama_dtype][0]
        case = functools.partial(gpu_cases.run_llama, args, row["model"], dtype, row["method"], device)
    return gpu_cases.run_guarded(case, row, device)


def serve_main(payload: dict[str, Any]) -> None:
    """The ``_serve`` entry point: one method's process, running the cases it is sent (``WorkerPool``)."""
    args = argparse.Namespace(**payload["args"])
    device = torch.device(args.device)
    setup_process(args, device)
    worker_process.serve(lambda job: {**run_case(args, job["row"], device), "pid": os.getpid()})


def case_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every case of the chosen suites in run order: per suite, repeat 1 of every case, then repeat 2..."""
    dtype_name = LLAMA_DTYPES[args.llama_dtype][1]
    rows = []
    if args.suite in ("all", "encoders"):
        for rep in range(args.repeats):
            for model_name in _csv(args.models):
                for precision in _csv(args.precisions):
                    for method in _csv(args.methods):
                        rows.append({"suite": "encoders", "model": model_name, "precision": precision,
                                     "method": method, "setting": "paper", "gradient_checkpointing": False,
                                     "repeat": rep + 1})
    if args.suite in ("all", "llama"):
        for rep in range(args.llama_repeats):
            for shape in _csv(args.llama_shapes):
                for method in _csv(args.llama_methods):
                    rows.append({"suite": "llama", "model": shape, "precision": dtype_name, "method": method,
                                 "setting": LLAMA_SETTING, "gradient_checkpointing": True, "repeat": rep + 1})
    return rows


def print_suite_header(args: argparse.Namespace, suite: str) -> None:
    where = "in this process" if args.in_process else "each method in its own process"
    if suite == "encoders":
        print(
            f"encoders: batch {args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}; {args.layers} layers; "
            f"{args.steps} timed steps (+{args.warmup}); paper setting; {args.repeats} repeat(s), methods "
            f"interleaved; {where}" + ("; CUDA graphs (each step captured once, replayed)" if args.cuda_graphs else "")
        )
    else:
        print(
            f"llama: batch {args.llama_batch_size}x{args.llama_seq_len}; {LLAMA_DTYPES[args.llama_dtype][1]}; "
            f"gradient checkpointing; {args.llama_steps} timed steps (+{args.llama_warmup}); "
            f"{args.llama_calib_steps} calibration steps; {LLAMA_SETTING} setting (full FT: every parameter); "
            f"{args.llama_repeats} repeat(s); {where}"
        )


def main(argv: list[str]) -> None:
    if argv[:1] == ["_serve"]:
        serve_main(json.loads(argv[1]))
        return
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; use --device cpu --layers 2 --steps 2 for a smoke check")
    setup_process(args, device)
    hw = reporting.hardware()
    print(f"device {hw.get('gpu', hw.get('Model name', device))}")
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []

    def save(complete: bool) -> Path:
        """The result file, rewritten after every case (``complete`` false until the end), so that a run
        stopped part way (a time limit on a lent GPU) keeps the cases it finished: ``runs`` holds every
        repeat's row, ``rows`` one row per case (medians over the repeats so far)."""
        return reporting.save_json(
            {
                "argv": ["bench/gpu_step.py", *argv],
                "args": vars(args),
                "hardware": hw,
                "seconds": time.perf_counter() - started,
                "complete": complete,
                "rows": gpu_step_report.aggregate_repeats(runs),
                "runs": runs,
            },
            f"gpu_step_{device.type}.json",
            args.out,
        )

    def record(row: dict[str, Any]) -> None:
        runs.append(row)
        gpu_step_report.print_case(row, started)
        save(False)

    plan = case_rows(args)
    for suite in ("encoders", "llama"):
        cases = [row for row in plan if row["suite"] == suite]
        if not cases:
            continue
        print_suite_header(args, suite)
        if args.in_process:
            for row in cases:
                record(run_case(args, row, device))
            continue
        methods = list(dict.fromkeys(row["method"] for row in cases))
        payload = {"args": vars(args)}
        with worker_process.WorkerPool(Path(__file__), methods, payload, timeout=args.case_timeout) as pool:
            for row in cases:
                result = pool.run(row["method"], {"row": row})
                record(result if "status" in result else {**row, "status": f"error: {result['error']}"[:300]})
    rows = gpu_step_report.aggregate_repeats(runs)
    gpu_step_report.print_tables(rows)
    path = save(True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    print(f"wrote {path}")
    failed = [r for r in rows if r["status"] not in (OK, OOM)]
    if failed:
        summary = "; ".join(f"{r['model']} {r['precision']} {r['method']}: {r['status']}" for r in failed)
        raise SystemExit(f"{len(failed)} case(s) failed: {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
