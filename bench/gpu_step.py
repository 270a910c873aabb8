"""GPU training throughput and memory: the paper's Table 3 encoders and LLaMA-family decoders with gradient
checkpointing (one command, ~8 min on an H100/H200).

    python bench/gpu_step.py                                   # CUDA: both suites (encoders, then llama)
    python bench/gpu_step.py --suite encoders                  # only the paper's encoders (< ~2 min)
    python bench/gpu_step.py --suite llama                     # only the LLaMA decoders
    python bench/gpu_step.py --device cpu --layers 2 --steps 2 # CPU smoke check (llama: the llama-tiny shape)

Suite ``encoders``. Models: BERT-base- and RoBERTa-base-shaped sequence classifiers (hidden 768, intermediate
3072, 12 heads, ``--layers`` layers, random init — the throughput does not depend on the weights). Batch 16×128
with ``--pad-frac`` padding at the end of each sequence (default 0.5), deterministic random tokens, binary labels.
Methods: full FT, LoRA (equal trainable MLP parameters), MeProp, SparseGrad dynamic, fixed and block, and the
MLP-frozen lower bound, all in the ``paper`` setting (every non-MLP parameter trains densely). Precisions: fp32,
and bf16 autocast (forward + loss under ``torch.autocast(dtype=bfloat16)``; weights, gradients and optimizer
state fp32). The fp32 and bf16 runs of a model share one calibration per selection mode (calibration is in fp32
and not timed).

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
All cases run in this one process, freeing everything (and ``empty_cache``) between them. On CPU the memory
columns are RSS based (peaks of RSS − RSS before the model was built) and only smoke-check the script. A case
that fails otherwise is recorded with its error, the others still run, and the script exits 1 at the end.

Paper Table 3 (RoBERTa-base, GLUE, GPU): FT 4.11 steps/s 1345 MB; LoRA 4.7 / 944; SG with SD 4.3 / 1016;
SG without SD 0.9 / 1210.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common
import torch

PAPER = {"full": (4.11, 1345), "lora": (4.7, 944), "sg_dynamic": (4.3, 1016)}
SUITES = ("all", "encoders", "llama")
LLAMA_SETTING = "peft"
LLAMA_GPU_SHAPES = "llama-1b,llama-2-7b"
LLAMA_CPU_SHAPES = "llama-tiny"
LLAMA_DTYPES = {"bf16": (torch.bfloat16, "bf16-weights"), "fp32": (torch.float32, "fp32")}
OK = "ok"
OOM = "OOM: does not fit"


_CALIBRATIONS: dict[tuple[Any, ...], Any] = {}
_CALIB_KEY: list[tuple[Any, ...] | None] = [None]


def _memoize_calibration() -> None:
    """fp32 and bf16 runs of one encoder use the same calibration (it runs in fp32, outside autocast, and is
    not timed): compute it once per (model, selection) and reuse it, to keep the whole run short. With the key
    set to None (the LLaMA cases, one precision each) every call calibrates and nothing is kept."""
    import sparsegrad_core.methods as methods

    original = methods.calibrate

    def calibrate(model: Any, batches: Any, cfg: Any, **kw: Any) -> Any:
        key = _CALIB_KEY[0]
        if key is None:
            return original(model, batches, cfg, **kw)
        if key not in _CALIBRATIONS:
            _CALIBRATIONS[key] = original(model, batches, cfg, **kw)
        return _CALIBRATIONS[key]

    methods.calibrate = calibrate


# --------------------------------------------------------------------------- memory and timing


def _memory_now(device: torch.device) -> int:
    """Bytes held now: CUDA allocations, or this process's RSS on CPU (freed heap given back first)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    common.malloc_trim()
    return common.rss_bytes()


def _free(device: torch.device) -> None:
    """Collect the garbage of a finished case and hand cached CUDA blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _peak(device: torch.device, base: int) -> Iterator[dict[str, int]]:
    """Yields a dict whose ``"bytes"`` is, on exit, the peak over the block minus ``base``."""
    out: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        with common.PeakRSS() as pk:
            yield out
        out["bytes"] = pk.peak - base


def _timed_steps(
    step: Callable[[dict[str, torch.Tensor]], None],
    batches: list[dict[str, torch.Tensor]],
    warmup: int,
    steps: int,
    device: torch.device,
    base: int,
) -> dict[str, Any]:
    """``warmup`` untimed steps, then ``steps`` synchronised timed ones: steps/s, median step time, the peak
    over the timed steps and what stays allocated after them (bytes above ``base``)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(warmup):
        step(batches[i % len(batches)])
    sync()
    times = []
    with _peak(device, base) as peak:
        t_all = time.perf_counter()
        for i in range(steps):
            t = time.perf_counter()
            step(batches[i % len(batches)])
            sync()
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - t_all
    return {
        "steps_per_s": steps / total,
        "median_step_s": statistics.median(times),
        "peak_bytes": peak["bytes"],
        "state_bytes": _memory_now(device) - base,
    }


# --------------------------------------------------------------------------- the cases


def run_encoder(
    args: argparse.Namespace, model_name: str, precision: str, method: str, device: torch.device
) -> dict[str, Any]:
    """One encoder case (paper setting, batch ``--batch-size``×``--seq-len``, optional bf16 autocast)."""
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.optim import build_optimizer

    spec = common.model_spec(model_name, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=device)
    batches = common.make_batches(4, args.batch_size, args.seq_len, args.pad_frac, seed=1, **kw)
    calib = common.make_batches(args.calib_steps, args.batch_size, args.seq_len, args.pad_frac, seed=2, **kw)
    _free(device)
    base = _memory_now(device)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    _CALIB_KEY[0] = (model_name, args.layers, common.ALL_METHODS[method][1], args.calib_steps, args.density)
    with _peak(device, base) as prep_peak:
        model = common.build_model(spec, device)
        t0 = time.perf_counter()
        prepared = prepare_model(
            model,
            common.method_spec(method, "paper", args.density, args.calib_steps),
            calib if is_sg else None,
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

    timed = _timed_steps(step, batches, args.warmup, args.steps, device, base)
    return {
        **timed,
        "prepare_peak_bytes": prep_peak["bytes"],
        "prepare_s": prepare_s,
        "trainable_params": prepared.trainable_params,
        "lora_rank": prepared.lora_rank,
    }


def run_llama(
    args: argparse.Namespace, shape: str, dtype: torch.dtype, method: str, device: torch.device
) -> dict[str, Any]:
    """One decoder case: LLaMA ``shape`` in ``dtype`` with gradient checkpointing, ``LLAMA_SETTING``, batch
    ``--llama-batch-size``×``--llama-seq-len`` of random tokens, causal-LM loss."""
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.optim import build_optimizer
    from sparsegrad_core.training import enable_gradient_checkpointing

    vocab = common.LLAMA_PRESETS[shape]["vocab"]
    bs, seq = args.llama_batch_size, args.llama_seq_len
    batches = common.make_lm_batches(2, bs, seq, vocab=vocab, seed=1, device=device)
    calib = common.make_lm_batches(args.llama_calib_steps, bs, seq, vocab=vocab, seed=2, device=device)
    _free(device)
    base = _memory_now(device)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    _CALIB_KEY[0] = None  # one precision per shape: nothing to share, and a 7B basis is not kept around
    with _peak(device, base) as prep_peak:
        model = common.build_llama(shape, device, dtype)
        enable_gradient_checkpointing(model)  # before calibration, whose backward passes need it as much
        t0 = time.perf_counter()
        spec = common.method_spec(method, LLAMA_SETTING, args.density, args.llama_calib_steps)
        prepared = prepare_model(model, spec, calib if is_sg else None)
        prepare_s = time.perf_counter() - t0
    model = prepared.model
    model.train()
    trains = any(p.requires_grad for p in model.parameters())
    opt = build_optimizer(model, lr=1e-5) if trains else None
    if not trains:  # MLP-frozen in the peft setting: backward still runs, from the embeddings' output
        model.enable_input_require_grads()

    def step(b: dict[str, torch.Tensor]) -> None:
        loss = model(**b).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    timed = _timed_steps(step, batches, args.llama_warmup, args.llama_steps, device, base)
    return {
        **timed,
        "prepare_peak_bytes": prep_peak["bytes"],
        "prepare_s": prepare_s,
        "trainable_params": prepared.trainable_params,
        "lora_rank": prepared.lora_rank,
    }


def _is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a library's allocation failure surfacing as a RuntimeError (cuBLAS,
    cuSOLVER)."""
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "ALLOC_FAILED" in text)
    )


def run_guarded(
    run: Callable[[], dict[str, Any]], row: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """``row`` completed by ``run()`` with status ``ok``; or, when it runs out of GPU memory, status
    ``OOM: does not fit``, and on any other exception ``error: ...`` (traceback on stderr). Memory is freed
    either way, so the next case starts clean."""
    try:
        result = {**row, **run(), "status": OK}
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _is_out_of_memory(exc):
            result = {**row, "status": OOM, "error": first}
        else:
            traceback.print_exc()
            result = {**row, "status": f"error: {type(exc).__name__}: {first}"[:300]}
    _free(device)  # the failed case's tensors were only reachable from the (now released) traceback
    return result


# --------------------------------------------------------------------------- report


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed and peak memory relative to full FT and LoRA of the same (suite, model, precision); MiB columns."""

    def same_group(q: dict[str, Any], r: dict[str, Any], method: str) -> bool:
        keys = ("suite", "model", "precision")
        return all(q[k] == r[k] for k in keys) and q["method"] == method and q["status"] == OK

    for r in rows:
        ref = next((q for q in rows if same_group(q, r, "full")), None)
        lora = next((q for q in rows if same_group(q, r, "lora")), None)
        done = r["status"] == OK
        r["x_full"] = r["steps_per_s"] / ref["steps_per_s"] if ref and done else None
        r["mem_x_full"] = r["peak_bytes"] / ref["peak_bytes"] if ref and done else None
        r["mem_x_lora"] = r["peak_bytes"] / lora["peak_bytes"] if lora and done else None
        for key in ("peak", "state", "prepare_peak"):
            r[f"{key}_mib"] = common.mib(r.get(f"{key}_bytes"))
        r["note"] = "" if done else r["status"]
        paper = PAPER.get(r["method"])
        r["paper"] = f"{paper[0]} / {paper[1]}" if paper and r["model"] == "roberta-base" else ""


COLUMNS = [
    ("model", "model"),
    ("precision", "prec"),
    ("method", "method"),
    ("steps_per_s", "steps/s"),
    ("x_full", "speed ×FT"),
    ("peak_mib", "peak MiB"),
    ("mem_x_full", "peak ×FT"),
    ("mem_x_lora", "peak ×LoRA"),
    ("state_mib", "state MiB"),
    ("prepare_peak_mib", "prep peak MiB"),
]


def _print_case(r: dict[str, Any], started: float) -> None:
    head = f"  {r['model']} {r['precision']} {r['method']}: "
    if r["status"] != OK:
        print(f"{head}{r['status']} ({time.perf_counter() - started:.0f} s so far)", flush=True)
        return
    print(
        f"{head}{r['steps_per_s']:.2f} steps/s, peak {common.mib(r['peak_bytes']):.0f} MiB, state "
        f"{common.mib(r['state_bytes']):.0f} MiB, prep peak {common.mib(r['prepare_peak_bytes']):.0f} MiB "
        f"(prepare {r['prepare_s']:.1f} s; {time.perf_counter() - started:.0f} s so far)",
        flush=True,
    )


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, with the device-dependent LLaMA defaults resolved and every listed name checked."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--suite", choices=SUITES, default="all", help="which cases to run (default: all)")
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
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the fp32 runs")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU smoke runs)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    on_cuda = torch.device(args.device).type == "cuda"
    args.llama_shapes = args.llama_shapes or (LLAMA_GPU_SHAPES if on_cuda else LLAMA_CPU_SHAPES)
    args.llama_dtype = args.llama_dtype or ("bf16" if on_cuda else "fp32")
    for shape in _csv(args.llama_shapes):
        if shape not in common.LLAMA_PRESETS:
            ap.error(f"unknown --llama-shapes entry {shape!r}; choose from {', '.join(common.LLAMA_PRESETS)}")
    for method in _csv(args.methods) + _csv(args.llama_methods):
        if method not in common.ALL_METHODS:
            ap.error(f"unknown method {method!r}; choose from {', '.join(common.ALL_METHODS)}")
    return args


def run_encoder_suite(args: argparse.Namespace, device: torch.device, started: float) -> list[dict[str, Any]]:
    """Every (encoder, precision, method) case, printed as it finishes."""
    print(
        f"encoders: batch {args.batch_size}x{args.seq_len} pad {args.pad_frac:.0%}; {args.layers} layers; "
        f"{args.steps} timed steps (+{args.warmup}); paper setting"
    )
    rows = []
    for model_name in _csv(args.models):
        for precision in _csv(args.precisions):
            for method in _csv(args.methods):
                row = {"suite": "encoders", "model": model_name, "precision": precision, "method": method}
                row.update(setting="paper", gradient_checkpointing=False)
                rows.append(
                    run_guarded(
                        lambda m=model_name, p=precision, k=method: run_encoder(args, m, p, k, device),
                        row,
                        device,
                    )
                )
                _print_case(rows[-1], started)
    return rows


def run_llama_suite(args: argparse.Namespace, device: torch.device, started: float) -> list[dict[str, Any]]:
    """Every (LLaMA shape, method) case, printed as it finishes."""
    dtype, precision = LLAMA_DTYPES[args.llama_dtype]
    print(
        f"llama: batch {args.llama_batch_size}x{args.llama_seq_len}; {precision}; gradient checkpointing; "
        f"{args.llama_steps} timed steps (+{args.llama_warmup}); {args.llama_calib_steps} calibration steps; "
        f"{LLAMA_SETTING} setting (full FT: every parameter)"
    )
    rows = []
    for shape in _csv(args.llama_shapes):
        for method in _csv(args.llama_methods):
            row = {"suite": "llama", "model": shape, "precision": precision, "method": method}
            row.update(setting=LLAMA_SETTING, gradient_checkpointing=True)
            rows.append(
                run_guarded(lambda s=shape, k=method: run_llama(args, s, dtype, k, device), row, device)
            )
            _print_case(rows[-1], started)
    return rows


def print_tables(rows: list[dict[str, Any]]) -> None:
    """One table per suite (the encoders' with the paper's numbers)."""
    for suite in ("encoders", "llama"):
        selected = [r for r in rows if r["suite"] == suite]
        if selected:
            extra = [("paper", "paper steps/s / MB")] if suite == "encoders" else []
            print(f"\n{suite}")
            print(common.fmt_table(selected, [*COLUMNS, *extra, ("note", "note")]))


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available; use --device cpu --layers 2 --steps 2 for a smoke check")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    common.touch_kernels()
    _memoize_calibration()
    hw = common.hardware()
    print(f"device {hw.get('gpu', hw.get('Model name', device))}")
    started = time.perf_counter()
    rows = run_encoder_suite(args, device, started) if args.suite in ("all", "encoders") else []
    rows += run_llama_suite(args, device, started) if args.suite in ("all", "llama") else []
    _add_ratios(rows)
    print_tables(rows)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    path = common.save_json(
        {"argv": ["bench/gpu_step.py", *argv], "args": vars(args), "hardware": hw, "rows": rows},
        f"gpu_step_{device.type}.json",
        args.out,
    )
    print(f"wrote {path}")
    failed = [r for r in rows if r["status"] not in (OK, OOM)]
    if failed:
        summary = "; ".join(f"{r['model']} {r['precision']} {r['method']}: {r['status']}" for r in failed)
        raise SystemExit(f"{len(failed)} case(s) failed: {summary}")


if __name__ == "__main__":
    main(sys.argv[1:])
