"""GPU check of the vLLM engine: a block SparseGrad adapter of SmolLM2-135M, served through vLLM as the LoRA adapter
its export makes, decodes greedily the same tokens as the transformers engine. One command, unattended:

    pip install vllm                      # on a machine with an NVIDIA GPU and CUDA (vLLM brings its torch build)
    python scripts/gpu_vllm_check.py      # about 5 minutes; writes gpu_vllm_check.json to $OUT or --out

1. Train the adapter: ``sparsegrad_core.recipe.finetune`` on a few chats (block selection, peft setting, a high
   learning rate so the adapter changes the answer); its export holds the SparseGrad adapter and, next to it, the
   PEFT LoRA form (``sparsegrad_core.export_lora``), which must equal what the inference server derives from the
   stored adapter (``inference.lora.lora_form``).
2. Reference: the transformers engine's decoding (``inference.decoding.generate``, greedy) of a chat prompt on
   the base model and on the fine-tuned one (the adapter merged by the project's loaders), in float32 on the CPU,
   and its token ids (``transformers`` greedy ``generate``, which the test suite holds equal to it).
3. vLLM: ``LLM(base, enable_lora=True, dtype=float32)``, greedy decoding of the same prompt token ids, with a
   ``LoRARequest`` for the fine-tuned model (the export as written, ranks per module in ``rank_pattern``; and
   padded to one rank, as the server serves it) and without one for the base. PASS when each token list equals
   the reference's and the adapter changes the answer.
4. The server's engine: ``inference.vllm_backend.VllmBackend`` serves the stored adapter by name (the path the
   API's requests take); PASS when its text equals the transformers engine's. It also records first-token latency
   and tokens/s of greedy 128-token answers, base and fine-tuned (three each, the engine warm).

Prints one PASS/FAIL line per check, then the overall verdict; exit 0 only when every check passed. Without vLLM
or without a GPU it fails at once with one line saying what to install.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "smollm2-135m"
MAX_TOKENS = 32
QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is two plus two?", "Say hello."]
ANSWER = "Banana! Banana banana banana, and bananas for everyone."
SYSTEM = {"role": "system", "content": "Be brief."}
PROMPT = [SYSTEM, {"role": "user", "content": "What is the capital of Italy?"}]


def fail_fast() -> None:
    """One line and exit 2 when vLLM or a GPU is missing."""
    if importlib.util.find_spec("vllm") is None:
        print("FAIL: vLLM is not installed. On a machine with an NVIDIA GPU and CUDA run `pip install vllm` (it "
              "installs its own torch build), then rerun `python scripts/gpu_vllm_check.py`.")
        sys.exit(2)
    import torch

    if not torch.cuda.is_available():
        print("FAIL: no CUDA GPU visible (torch.cuda.is_available() is False); vLLM needs an NVIDIA GPU.")
        sys.exit(2)


def train(work: Path) -> Path:
    from sparsegrad_core import SparseGradConfig
    from sparsegrad_core.methods import MethodSpec
    from sparsegrad_core.recipe import finetune
    from sparsegrad_core.training import TrainingArguments
    from sparsegrad_data import ColumnMapping, TaskType, load_dataset

    path = work / "chats.jsonl"
    rows = [{"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            for q in QUESTIONS * 4]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset(path, TaskType.CAUSAL_LM, ColumnMapping())
    spec = MethodSpec(type="sparsegrad", setting="peft", sparsegrad=SparseGradConfig(selection="block",
                                                                                     calibration_steps=2))
    args = TrainingArguments(batch_size=4, max_steps=12, max_seq_length=64, learning_rate=1e-2, seed=0,
                             output_dir=str(work / "run"))
    export = finetune(MODEL, data, None, spec, args, device="cuda", run_info={"model": MODEL}).result.export_dir
    assert export is not None
    return export


def reference(export: Path, work: Path) -> dict[str, Any]:
    """The transformers engine's greedy answers (text and token ids) on the CPU, base and fine-tuned."""
    import torch

    from inference.backend import Prompt, Sampling, TextDelta
    from inference.decoding import generate, prompt_ids
    from sparsegrad_core.loading import load_base_model
    from sparsegrad_core.recipe import merge

    base, tokenizer = load_base_model(MODEL, "causal_lm")
    base_dir = work / "base"  # what vLLM loads: the bundled GGUF weights dequantized to float32, saved
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(str(base_dir))
    tuned, _ = merge(MODEL, export)
    ids = prompt_ids(tokenizer, Prompt(messages=PROMPT))
    out: dict[str, Any] = {"prompt_ids": ids, "base_dir": str(base_dir)}
    for name, model in (("base", base.eval()), ("fine_tuned", tuned.eval())):
        text = "".join(d.text for d in generate(model, tokenizer, ids, Sampling(max_tokens=MAX_TOKENS, temperature=0))
                       if isinstance(d, TextDelta))
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False,  # type: ignore[operator]
                                       pad_token_id=tokenizer.pad_token_id)
        out[name] = {"text": text, "token_ids": generated[0, len(ids):].tolist()}
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def vllm_check(ref: dict[str, Any], lora_dirs: dict[str, Path], rank: int) -> dict[str, Any]:
    """vLLM's greedy token ids with each LoRA folder and without, against the reference."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from inference.vllm_backend import served_lora_rank

    llm = LLM(model=ref["base_dir"], enable_lora=True, max_lora_rank=served_lora_rank(rank), max_loras=2,
              dtype="float32", seed=0, gpu_memory_utilization=0.4, enforce_eager=True)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    prompt = {"prompt_token_ids": ref["prompt_ids"]}
    runs = {name: ("fine_tuned", llm.generate(prompt, params, lora_request=LoRARequest(name, i + 1, str(folder))))
            for i, (name, folder) in enumerate(lora_dirs.items())}
    runs["base"] = ("base", llm.generate(prompt, params))
    result: dict[str, Any] = {}
    for name, (expected, outputs) in runs.items():
        got = list(outputs[0].outputs[0].token_ids)
        want = ref[expected]["token_ids"]
        result[name] = {"vllm_token_ids": got, "vllm_text": outputs[0].outputs[0].text,
                        "first_difference": first_difference(got, want), "equal": got == want}
    del llm
    gc.collect()
    return result


def backend_check(export: Path, work: Path, ref: dict[str, Any]) -> dict[str, Any]:
    """The inference server's VllmBackend serving the stored adapter by name, against the transformers text."""
    from inference.backend import Finished, Prompt, Sampling, TextDelta
    from inference.vllm_backend import VllmBackend
    from sparsegrad_service.schemas.inference import ServedModel, StoredWeights
    from sparsegrad_service.settings import Settings
    from sparsegrad_service.store import LocalArtifactStore, pack_directory

    settings = Settings(data_dir=work / "data", worker_token="gpu-check-token-0123456789",  # type: ignore[arg-type]
                        inference_vllm_gpu_memory_utilization=0.8)
    stored = LocalArtifactStore(settings.artifact_root).put_file(
        "jobs/ftjob-gpu/artifacts/adapter.tar.gz", pack_directory(export, work / "adapter.tar.gz"))
    served = ServedModel(name="ft:smollm2-135m:org-gpu::ftjob-gpu", base=MODEL, task="causal_lm",
                         chain=[StoredWeights(key=stored.key, sha256=stored.sha256, format="adapter")])

    async def answer(backend: VllmBackend, model: ServedModel, max_tokens: int) -> dict[str, Any]:
        """The greedy answer, its first-token latency and tokens/s (the engine already started)."""
        start, first, pieces, tokens = time.perf_counter(), None, [], 0
        async for item in backend.generate(model, Prompt(messages=PROMPT), Sampling(max_tokens=max_tokens,
                                                                                     temperature=0)):
            if isinstance(item, TextDelta):
                first = first if first is not None else time.perf_counter() - start
                pieces.append(item.text)
            elif isinstance(item, Finished):
                tokens = item.completion_tokens
        total = time.perf_counter() - start
        return {"text": "".join(pieces), "first_token_s": first, "total_s": total, "completion_tokens": tokens,
                "tokens_per_s": tokens / total}

    async def run() -> dict[str, Any]:
        backend = VllmBackend(settings)
        base = ServedModel(name=MODEL, base=MODEL, task="causal_lm")
        try:
            tuned = await answer(backend, served, MAX_TOKENS)  # the first request also starts the engine
            out = {"text": tuned["text"], "first_request_s": tuned["total_s"],
                   "served_as_lora": backend._adapters.get(stored.sha256) is not None,
                   "timing": {name: [await answer(backend, model, 128) for _ in range(3)]
                              for name, model in (("base", base), ("fine_tuned", served))}}
        finally:
            await backend.aclose()
        return out

    result = asyncio.run(run())
    return {**result, "equal": result["text"] == ref["fine_tuned"]["text"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "bench/results/inference")))
    args = parser.parse_args()
    fail_fast()
    import torch
    import vllm

    from inference.lora import lora_form, lora_rank, with_uniform_rank
    from sparsegrad_core.methods import lora_export_dir
    from sparsegrad_core.recipe import load_base_for

    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "vllm": vllm.__version__, "torch": torch.__version__,
                              "model": MODEL, "max_tokens": MAX_TOKENS, "checks": {}}
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        export = train(work)
        report["train_s"] = time.perf_counter() - started
        lora_dir = lora_export_dir(export)
        derived = lora_form(export, load_base_for(MODEL, export)[0], work / "derived", max_rank=512)
        from safetensors.torch import load_file

        a, b = load_file(str(lora_dir / "adapter_model.safetensors")), load_file(str(derived / "adapter_model.safetensors"))
        checks["derived LoRA equals the export"] = set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        rank = lora_rank(lora_dir)
        report["lora_rank"] = rank
        ref = reference(export, work)
        report["reference"] = {k: ref[k] for k in ("base", "fine_tuned")}
        checks["the adapter changes the greedy answer"] = ref["base"]["token_ids"] != ref["fine_tuned"]["token_ids"]
        uniform = with_uniform_rank(shutil.copytree(derived, work / "uniform"))
        try:
            report["vllm"] = vllm_check(ref, {"export": lora_dir, "uniform_rank": uniform}, rank)
            checks["vLLM + LoRARequest (the export as written) equals transformers"] = report["vllm"]["export"]["equal"]
            checks["vLLM + LoRARequest (one rank, as the server serves it) equals transformers"] = \
                report["vllm"]["uniform_rank"]["equal"]
            checks["vLLM equals transformers (base)"] = report["vllm"]["base"]["equal"]
        except Exception as exc:  # report and go on to the server's engine
            report["vllm_error"] = f"{type(exc).__name__}: {exc}"
            checks["vLLM + LoRARequest equals transformers"] = False
        try:
            report["backend"] = backend_check(export, work, ref)
            checks["VllmBackend serves the adapter as LoRA"] = report["backend"]["served_as_lora"]
            checks["VllmBackend text equals the transformers engine's"] = report["backend"]["equal"]
        except Exception as exc:
            report["backend_error"] = f"{type(exc).__name__}: {exc}"
            checks["VllmBackend text equals the transformers engine's"] = False
    report["checks"] = checks
    report["passed"] = all(checks.values())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_vllm_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    for key in ("vllm_error", "backend_error"):
        if key in report:
            print(f"  {key}: {report[key]}")
    print(f"{'PASS' if report['passed'] else 'FAIL'}: vLLM check ({args.out / 'gpu_vllm_check.json'})")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
