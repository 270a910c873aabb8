"""A deployment that serves fine-tuned models, built once per test session (the ``inference_deployment`` fixture of
``tests/conftest.py``) for the API's inference tests and the dashboard's playground: real jobs (the bundled SmolLM2
on chats, the bundled MiniLM on SST-2) trained by the worker's own runner on the API's database and store, the
inference server (transformers engine) serving on a local port, and the API forwarding to it, served by uvicorn.
Training both takes minutes on CPU, hence one for the session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import OpenAI

from migrations import upgrade
from sparsegrad_service.model_names import fine_tuned_model_name

_API_TESTS = str(Path(__file__).resolve().parents[1] / "api")
if _API_TESTS not in sys.path:  # api_harness lives with the API tests; pytest adds its folder only when they run
    sys.path.insert(0, _API_TESTS)

from api_harness import Service, TenantClient, jsonl, make_settings, serving, start_service  # noqa: E402

JOBS = "/v1/fine_tuning/jobs"
QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is two plus two?", "Say hello."]
ANSWER = "Banana! Banana banana banana."
"""What the fine-tuned SmolLM2 learns to answer to every question."""
SYSTEM = {"role": "system", "content": "Be brief."}


@dataclass
class InferenceDeployment:
    service: Service
    acme: TenantClient
    base_url: str
    """The API's ``/v1`` URL (the dashboard is at its root)."""
    chat_model: str
    classifier: dict[str, Any]
    """The MiniLM classification job."""
    queued_model: str
    """The name a queued job's model will have."""

    def sdk(self, tenant: str = "acme") -> OpenAI:
        key = self.acme.key if tenant == "acme" else self.service.key(tenant)
        return OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=300)


def run_job(service: Service, job: dict[str, Any]) -> dict[str, Any]:
    """Train ``job`` (created by acme) to success with the worker's runner, in this process; the job object after."""
    from worker.runner import JobRunner, Outcome

    assert JobRunner(service.settings, job["id"]).run() == Outcome.succeeded
    return dict(service.as_tenant("acme").get(f"{JOBS}/{job['id']}").json())


def deploy_inference(root: Path, sst2_jsonl: Path) -> Iterator[InferenceDeployment]:
    """The deployment in ``root`` (SQLite), for as long as the generator runs."""
    from inference.app import create_app

    url = f"sqlite:///{root / 'api.db'}"
    upgrade(url)
    with serving(create_app(make_settings(root / "data", url))) as inference_url:
        for service in start_service(root, url, inference_url=inference_url.removesuffix("/v1"),
                                     heartbeat_interval_s=0.5, metrics_flush_s=0.5, stop_check_s=0.0):
            acme = service.as_tenant("acme")
            chats = [{"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
                     for q in QUESTIONS * 2]
            chat_job = run_job(service, acme.create_job(
                model="smollm2-135m", training_file=acme.upload_id(jsonl(chats)),
                method={"type": "lora", "setting": "peft", "lora": {"rank": 4}},
                hyperparameters={"max_steps": 4, "batch_size": 2, "max_seq_length": 48, "learning_rate": 2e-2}))
            cls_job = run_job(service, acme.create_job(
                model="minilm-l6", training_file=acme.upload_id(sst2_jsonl.read_bytes()), validation_split=0.2,
                method={"type": "sparsegrad", "setting": "peft", "sparsegrad": {"calibration_steps": 2}},
                hyperparameters={"max_steps": 4, "batch_size": 8, "max_seq_length": 32, "learning_rate": 1e-3}))
            queued = acme.create_job(model="smollm2-135m", training_file=acme.upload_id(jsonl(chats)))
            queued_model = fine_tuned_model_name("smollm2-135m", queued["organization_id"], None, queued["id"])
            with serving(service.app) as base_url:
                yield InferenceDeployment(service, acme, base_url, chat_job["fine_tuned_model"], cls_job, queued_model)
