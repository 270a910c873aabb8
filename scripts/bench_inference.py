"""First-token latency and tokens/s of the inference server's transformers engine (CPU) on SmolLM2-135M: the base
model against a fine-tuned block SparseGrad adapter of it (merged into a copy of the base, so it should cost the
same per token).

The server runs in this process on a local port (uvicorn); each request goes over HTTP as the API sends it
(worker token, ``stream: true``), and the clock runs from sending the request to the first text chunk (first-token
latency) and to the end (tokens/s = completion tokens / total seconds; decode tokens/s counts the tokens after
the first over the time after it). The first request of each model also loads it and is reported apart.

    python scripts/bench_inference.py                       # trains a small adapter first (minutes on 2 cores)
    python scripts/bench_inference.py --adapter RUN/adapter # an existing SparseGrad export of smollm2-135m

Writes ``bench/results/inference/cpu_smollm2.json``. The machine's load averages before and after are recorded:
numbers taken on a shared machine are only comparable with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.app import create_app  # noqa: E402
from sparsegrad_service.schemas.inference import ServedModel, StoredWeights  # noqa: E402
from sparsegrad_service.settings import Settings  # noqa: E402
from sparsegrad_service.store import LocalArtifactStore, pack_directory  # noqa: E402

MODEL = "smollm2-135m"
TOKEN = "bench-inference-token-0123456789"
PROMPT = "Once upon a time, in a small village by the sea, there lived"
CHATS = [
    [{"role": "user", "content": "Tell me about the sea."},
     {"role": "assistant", "content": "The sea is vast, deep and full of life, from tiny plankton to great whales."}],
    [{"role": "user", "content": "What is a village?"},
     {"role": "assistant", "content": "A village is a small community of people living together in the country."}],
]


def train_adapter(work: Path) -> Path:
    """A block SparseGrad adapter of SmolLM2 (the job defaults, peft setting), trained for a few steps."""
    from sparsegrad_core import SparseGradConfig
    from sparsegrad_core.methods import MethodSpec
    from sparsegrad_core.recipe import finetune
    from sparsegrad_core.training import TrainingArguments
    from sparsegrad_data import ColumnMapping, TaskType, load_dataset

    data = work / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": CHATS[i % 2]}) + "\n" for i in range(8)))
    chats = load_dataset(data, TaskType.CAUSAL_LM, ColumnMapping())
    spec = MethodSpec(type="sparsegrad", setting="peft",
                      sparsegrad=SparseGradConfig(selection="block", calibration_steps=1))
    args = TrainingArguments(batch_size=2, max_steps=3, max_seq_length=64, learning_rate=1e-3, seed=0,
                             output_dir=str(work / "run"))
    export = finetune(MODEL, chats, None, spec, args, run_info={"model": MODEL}).result.export_dir
    assert export is not None
    return export


def serve(settings: Settings) -> tuple[uvicorn.Server, str]:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the inference server did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def timed_request(http: httpx.Client, model: ServedModel, max_tokens: int) -> dict[str, float]:
    """One streamed greedy completion: seconds to the first text, in all, and the completion tokens."""
    body = {"model": model.model_dump(), "request": {
        "model": model.name, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}}}
    start = time.perf_counter()
    first = None
    usage: dict[str, Any] = {}
    with http.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    tokens = int(usage["completion_tokens"])
    assert first is not None
    return {"first_token_s": first, "total_s": total, "completion_tokens": tokens,
            "tokens_per_s": tokens / total, "decode_tokens_per_s": (tokens - 1) / (total - first)}


def measure(http: httpx.Client, model: ServedModel, repeats: int, max_tokens: int) -> dict[str, Any]:
    cold = timed_request(http, model, max_tokens)
    warm = [timed_request(http, model, max_tokens) for _ in range(repeats)]
    median = {k: statistics.median(r[k] for r in warm) for k in warm[0]}
    return {"cold_first_request": cold, "warm_median": median, "warm_runs": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="a SparseGrad export of smollm2-135m (default: train one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the engine")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/inference/cpu_smollm2.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_start = time.perf_counter()
        adapter = args.adapter or train_adapter(work)
        train_s = None if args.adapter else time.perf_counter() - train_start
        settings = Settings(data_dir=work / "data", worker_token=TOKEN, torch_threads=args.threads,  # type: ignore[arg-type]
                            database_url=None, redis_url=None)
        stored = LocalArtifactStore(settings.artifact_root).put_file(
            "jobs/ftjob-bench/artifacts/adapter.tar.gz", pack_directory(adapter, work / "adapter.tar.gz"))
        base = ServedModel(name=MODEL, base=MODEL, task="causal_lm")
        tuned = ServedModel(name=f"ft:{MODEL}:org-bench::ftjob-bench", base=MODEL, task="causal_lm",
                            chain=[StoredWeights(key=stored.key, sha256=stored.sha256, format="adapter")])
        server, url = serve(settings)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600) as http:
                results = {name: measure(http, model, args.repeats, args.max_tokens)
                           for name, model in (("base", base), ("fine_tuned", tuned))}
        finally:
            server.should_exit = True
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {
        "what": "inference server, transformers engine on CPU: streamed greedy completions of SmolLM2-135M, base vs "
                "a block SparseGrad adapter merged into a copy of it, over HTTP in one process",
        "script": "scripts/bench_inference.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": args.threads,
                    "shared": "the CPU was shared with other long-running processes (benchmarks, tests) during the "
                              "run: compare these numbers with each other, not with other machines",
                    "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())},
        "prompt": PROMPT, "max_tokens": args.max_tokens, "repeats": args.repeats,
        "adapter": "given" if args.adapter else {"trained_s": train_s, "method": "sparsegrad block, peft setting, "
                                                 "job defaults, 3 steps"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        m = r["warm_median"]
        print(f"{name:>10}: first token {m['first_token_s'] * 1000:.0f} ms, {m['tokens_per_s']:.1f} tokens/s "
              f"({m['decode_tokens_per_s']:.1f} decoding), cold first request {r['cold_first_request']['first_token_s']:.1f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
