"""Run the plan through a running SparseGrad service instead of in this process (``--service URL``).

Each run becomes one job: the run's train/eval datasets (built exactly as in-process, see
``quality_data``) are written as JSONL, uploaded once (cached by content hash in
``<out>/service_files.json``), and a job is created with the same method spec and hyperparameters.
The worker's runner trains; the result row is read from the finished job's ``summary.after``. The
``Idempotency-Key`` is derived from the run key, so a restarted benchmark finds its jobs instead of
creating new ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from quality_data import run_datasets, write_jsonl
from quality_plan import hyperparameters, service_method

from sparsegrad_client import SparseGradClient


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ServiceRunner:
    """Submits runs as jobs and yields ``(run, row)`` as they finish."""

    def __init__(self, url: str, api_key: str, out: Path, data_dir: Path | None, chat_source: str | None) -> None:
        self.client = SparseGradClient(url, api_key=api_key)
        self.out, self.data_dir, self.chat_source = Path(out), data_dir, chat_source
        self.cache_path = self.out / "service_files.json"
        self.cache: dict[str, str] = json.loads(self.cache_path.read_text()) if self.cache_path.is_file() else {}

    def _upload(self, path: Path, pair: bool, chat: bool) -> str:
        digest = _sha(path)
        if digest not in self.cache:
            mapping: dict[str, Any] = ({"task": "causal_lm"} if chat else
                                       {"task": "classification", "text_column": "text", "label_column": "label",
                                        "text_pair_column": "text_pair" if pair else None})
            self.cache[digest] = self.client.upload_file(path, **mapping).id
            self.out.mkdir(parents=True, exist_ok=True)
            self.cache_path.write_text(json.dumps(self.cache, indent=1))
        return self.cache[digest]

    def submit(self, run: Any) -> str:
        train, held = run_datasets(run, self.data_dir, self.chat_source, self.out / "data")
        chat = run.task == "chat"
        pair = not chat and train.examples[0].text_pair is not None
        stem = hashlib.sha256(run.key.encode()).hexdigest()[:16]
        files = self.out / "service_data"
        train_id = self._upload(write_jsonl(train, files / f"{stem}_train.jsonl"), pair, chat)
        eval_id = self._upload(write_jsonl(held, files / f"{stem}_eval.jsonl"), pair, chat)
        task: dict[str, Any] = {"type": "causal_lm"} if chat else {
            "type": "classification", "text_column": "text", "label_column": "label",
            **({"text_pair_column": "text_pair"} if pair else {})}
        hp = {**hyperparameters(run), "original_share_every": 0}
        job = self.client.create_job(
            run.model, train_id, eval_id, task=task,
            method=service_method(run.method, run.setting, run.density, run.calibration_steps),
            hyperparameters=hp, seed=run.seed, suffix=f"q-{run.task}-{run.method}"[:64],
            metadata={"bench": "quality", "run_key": run.key[:512]},
            idempotency_key=f"quality-{stem}",
        )
        return job.id

    def run_all(self, runs: Sequence[Any], timeout_s: float | None = None) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Submit every run (the service queues them), then wait for each in order."""
        jobs = [(run, self.submit(run)) for run in runs]
        for run, job_id in jobs:
            job = self.client.wait_for_job(job_id, poll_s=5.0, timeout=timeout_s)
            summary = job.summary or {}
            if job.status != "succeeded" or not summary.get("after"):
                raise RuntimeError(f"job {job_id} ({run.key}) ended {job.status}: {job.error}")
            train_time = float(summary.get("train_time_s") or 0.0)
            steps = int(summary.get("steps") or run.steps)
            yield run, {
                "metrics": summary["after"], "trainable_params": summary.get("trainable_params"),
                "total_params": summary.get("total_params"), "lora_rank": (summary.get("spec") or {}).get("lora_rank"),
                "train_examples": summary.get("train_examples"), "eval_examples": summary.get("eval_examples"),
                "steps_done": steps, "train_time_s": round(train_time, 2),
                "s_per_step": round(train_time / max(1, steps), 4),
                "calibration_time_s": summary.get("calibration_time_s"),
                "mode": "service", "job_id": job_id,
            }
