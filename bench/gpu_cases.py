"""The cases of ``gpu_step.py``: one encoder (paper setting, optional bf16 autocast) or one LLaMA decoder
(gradient checkpointing, ``LLAMA_SETTING``) built, prepared and stepped; and the guard that records a case
that does not fit in GPU memory, or fails, and frees its memory either way.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import common
import torch
from gpu_meters import cuda_graph_step, free_memory, memory_now, peak_memory, timed_steps

LLAMA_SETTING = "peft"
LLAMA_DTYPES = {"bf16": (torch.bfloat16, "bf16-weights"), "fp32": (torch.float32, "fp32")}
OK = "ok"
OOM = "OOM: does not fit"


_CALIBRATIONS: dict[tuple[Any, ...], Any] = {}
_CALIB_KEY: list[tuple[Any, ...] | None] = [None]


def memoize_calibration() -> None:
    """fp32 and bf16 runs of one encoder, and every repeat, use the same calibration (it runs in fp32, outside
    autocast, and is not timed): compute it once per (model, selection) in this process and reuse it, to keep
    the whole run short. With the key set to None (the LLaMA cases, one precision each) every call calibrates
    and nothing is kept."""
    import sparsegrad_core.methods.sparsegrad as sparsegrad_method

    original = sparsegrad_method.calibrate

    def calibrate(model: Any, batches: Any, cfg: Any, **kw: Any) -> Any:
        key = _CALIB_KEY[0]
        if key is None:
            return original(model, batches, cfg, **kw)
        if key not in _CALIBRATIONS:
            _CALIBRATIONS[key] = original(model, batches, cfg, **kw)
        return _CALIBRATIONS[key]

    sparsegrad_method.calibrate = calibrate


def run_encoder(
    args: argparse.Namespace, model_name: str, precision: str, method: str, device: torch.device
) -> dict[str, Any]:
    """One encoder case (paper setting, batch ``--batch-size``×``--seq-len``, optional bf16 autocast); with
    ``--cuda-graphs`` the training step is captured once and replayed (:func:`gpu_meters.cuda_graph_step`)."""
    from sparsegrad_core.methods import prepare_model
    from sparsegrad_core.optim import build_optimizer

    spec = common.model_spec(model_name, layers=args.layers)
    kw = dict(vocab=common.vocab_size(spec), pad_id=common.pad_token_id(spec), device=device)
    batches = common.make_batches(4, args.batch_size, args.seq_len, args.pad_frac, seed=1, **kw)
    calib = common.make_batches(args.calib_steps, args.batch_size, args.seq_len, args.pad_frac, seed=2, **kw)
    free_memory(device)
    base = memory_now(device)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    _CALIB_KEY[0] = (model_name, args.layers, common.ALL_METHODS[method][1], args.calib_steps, args.density)
    with peak_memory(device, base) as prep_peak:
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
    graphs = bool(getattr(args, "cuda_graphs", False))
    opt = build_optimizer(model, lr=1e-5, capturable=graphs)

    def amp() -> Any:
        return (  # a captured step may not reuse autocast's cached casts across replays
            torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=not graphs)
            if precision == "bf16"
            else nullcontext()
        )

    def train(b: dict[str, torch.Tensor]) -> None:
        with amp():
            loss = model(**b).loss
        loss.backward()
        opt.step()

    def zero_grad() -> None:
        opt.zero_grad(set_to_none=True)

    def step(b: dict[str, torch.Tensor]) -> None:
        train(b)
        zero_grad()

    run, capture_peak = cuda_graph_step(train, zero_grad, batches[0], device, base) if graphs else (step, 0)
    timed = timed_steps(run, batches, args.warmup, args.steps, device, base)
    timed["peak_bytes"] = max(timed["peak_bytes"], capture_peak)  # a graph's working set is allocated at capture
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
    free_memory(device)
    base = memory_now(device)
    is_sg = common.ALL_METHODS[method][0] == "sparsegrad"
    _CALIB_KEY[0] = None  # one precision per shape: nothing to share, and a 7B basis is not kept around
    with peak_memory(device, base) as prep_peak:
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

    timed = timed_steps(step, batches, args.llama_warmup, args.llama_steps, device, base)
    return {
        **timed,
        "prepare_peak_bytes": prep_peak["bytes"],
        "prepare_s": prepare_s,
        "trainable_params": prepared.trainable_params,
        "lora_rank": prepared.lora_rank,
    }


def is_out_of_memory(exc: BaseException) -> bool:
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
        if is_out_of_memory(exc):
            result = {**row, "status": OOM, "error": first}
        else:
            traceback.print_exc()
            result = {**row, "status": f"error: {type(exc).__name__}: {first}"[:300]}
    free_memory(device)  # the failed case's tensors were only reachable from the (now released) traceback
    return result
