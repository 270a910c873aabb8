"""Inference on fine-tuned models through the API, end to end and unmocked: real jobs (the bundled SmolLM2 on chats,
the bundled MiniLM on SST-2) trained by the worker's own runner on the API's database and store, the inference
server (transformers engine) serving on a local port, the API forwarding to it, and the official ``openai`` SDK.

A fine-tuned SmolLM2 answers differently from its base model with the same seed (plain and streamed), predict on
the fine-tuned MiniLM returns the labels its job's evaluation computed for the same texts, another tenant's model
is a 404 on every route, an unfinished job's model a 400, and a model on the wrong route a 400 saying which."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, TenantClient, jsonl, make_settings, serving, start_service
from openai import BadRequestError, NotFoundError, OpenAI

from migrations import upgrade
from sparsegrad_service.model_names import fine_tuned_model_name

pytestmark = pytest.mark.slow

JOBS = "/v1/fine_tuning/jobs"
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/predict")
QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is two plus two?", "Say hello."]
ANSWER = "Banana! Banana banana banana."
SYSTEM = {"role": "system", "content": "Be brief."}
CHAT = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]


def request_for(route: str, model: str) -> dict[str, Any]:
    """A small valid body of ``route`` for ``model``."""
    if route.endswith("/predict"):
        return {"model": model, "texts": ["a fine film"]}
    if route.endswith("/chat/completions"):
        return {"model": model, "messages": CHAT, "max_tokens": 4}
    return {"model": model, "prompt": "Hello", "max_tokens": 4}


@dataclass
class Deployment:
    service: Service
    acme: TenantClient
    base_url: str
    chat_model: str
    classifier: dict[str, Any]
    queued_model: str

    def sdk(self, tenant: str = "acme") -> OpenAI:
        key = self.acme.key if tenant == "acme" else self.service.key(tenant)
        return OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=300)


def _run(service: Service, job: dict[str, Any]) -> dict[str, Any]:
    from worker.runner import JobRunner, Outcome

    assert JobRunner(service.settings, job["id"]).run() == Outcome.succeeded
    return dict(service.as_tenant("acme").get(f"{JOBS}/{job['id']}").json())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, sst2_jsonl: Path) -> Iterator[Deployment]:
    from inference.app import create_app

    root = tmp_path_factory.mktemp("inference-api")
    url = f"sqlite:///{root / 'api.db'}"
    upgrade(url)
    with serving(create_app(make_settings(root / "data", url, torch_threads=2))) as inference_url:
        for service in start_service(root, url, inference_url=inference_url.removesuffix("/v1"),
                                     heartbeat_interval_s=0.5, metrics_flush_s=0.5, stop_check_s=0.0):
            acme = service.as_tenant("acme")
            chats = [{"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
                     for q in QUESTIONS * 2]
            chat_job = _run(service, acme.create_job(
                model="smollm2-135m", training_file=acme.upload_id(jsonl(chats)),
                method={"type": "lora", "setting": "peft", "lora": {"rank": 4}},
                hyperparameters={"max_steps": 4, "batch_size": 2, "max_seq_length": 48, "learning_rate": 2e-2}))
            cls_job = _run(service, acme.create_job(
                model="minilm-l6", training_file=acme.upload_id(sst2_jsonl.read_bytes()), validation_split=0.2,
                method={"type": "sparsegrad", "setting": "peft", "sparsegrad": {"calibration_steps": 2}},
                hyperparameters={"max_steps": 4, "batch_size": 8, "max_seq_length": 32, "learning_rate": 1e-3}))
            queued = acme.create_job(model="smollm2-135m", training_file=acme.upload_id(jsonl(chats)))
            queued_model = fine_tuned_model_name("smollm2-135m", queued["organization_id"], None, queued["id"])
            with serving(service.app) as base_url:
                yield Deployment(service, acme, base_url, chat_job["fine_tuned_model"], cls_job, queued_model)


def test_a_fine_tuned_smollm2_answers_differently_from_its_base_through_the_openai_sdk(deployment: Deployment
                                                                                       ) -> None:
    client = deployment.sdk()
    sampling: dict[str, Any] = {"messages": CHAT, "max_tokens": 12, "temperature": 0.7, "seed": 1234}
    tuned = client.chat.completions.create(model=deployment.chat_model, **sampling)
    base = client.chat.completions.create(model="smollm2-135m", **sampling)
    assert tuned.object == "chat.completion" and tuned.model == deployment.chat_model
    tuned_text, base_text = tuned.choices[0].message.content, base.choices[0].message.content
    assert tuned_text and base_text and tuned_text != base_text, (tuned_text, base_text)
    assert tuned.usage is not None and tuned.usage.completion_tokens <= 12
    assert tuned.usage.total_tokens == tuned.usage.prompt_tokens + tuned.usage.completion_tokens

    stream = client.chat.completions.create(model=deployment.chat_model, stream=True,
                                            stream_options={"include_usage": True}, **sampling)
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == tuned_text  # same model, same seed: the same sample, streamed
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == tuned.usage.completion_tokens
    base_stream = client.chat.completions.create(model="smollm2-135m", stream=True, **sampling)
    assert "".join(c.choices[0].delta.content or "" for c in base_stream if c.choices) == base_text


def test_completions_with_the_openai_sdk(deployment: Deployment) -> None:
    client = deployment.sdk()
    done = client.completions.create(model=deployment.chat_model, prompt="The capital of France is", max_tokens=6,
                                     temperature=0, stop=["\n\n"])
    assert done.object == "text_completion" and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and 0 < done.usage.completion_tokens <= 6
    streamed = client.completions.create(model=deployment.chat_model, prompt="The capital of France is",
                                         max_tokens=6, temperature=0, stop=["\n\n"], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text


def test_predict_returns_the_labels_the_jobs_evaluation_reported(deployment: Deployment) -> None:
    acme, job = deployment.acme, deployment.classifier
    probe = acme.get(f"{JOBS}/{job['id']}/insight").json()["probe"]
    names = job["task"].get("label_names")
    response = acme.post("/v1/predict", json={"model": job["fine_tuned_model"], "texts": probe["texts"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == job["fine_tuned_model"] and body["usage"]["prompt_tokens"] > 0
    expected = [max(range(len(row)), key=row.__getitem__) for row in probe["logits"]]
    labels = [list(p["probabilities"]).index(p["label"]) for p in body["data"]]
    assert labels == expected
    if names:
        assert [p["label"] for p in body["data"]] == [names[i] for i in expected]
    for prediction, row in zip(body["data"], probe["logits"], strict=True):
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5
        assert prediction["score"] == max(prediction["probabilities"].values())
        assert len(row) == len(prediction["probabilities"])


def test_another_tenants_model_is_a_404_on_every_route(deployment: Deployment) -> None:
    beta = deployment.service.as_tenant("beta")
    for route in ROUTES:
        model = deployment.classifier["fine_tuned_model"] if route.endswith("predict") else deployment.chat_model
        response = beta.post(route, json=request_for(route, model))
        assert response.status_code == 404, (route, response.text)
        assert response.json()["error"]["param"] == "model"
    with pytest.raises(NotFoundError):
        deployment.sdk("beta").chat.completions.create(model=deployment.chat_model, messages=CHAT)  # type: ignore[arg-type]


def test_an_unfinished_jobs_model_and_the_wrong_route_are_400s(deployment: Deployment) -> None:
    acme = deployment.acme
    for route in ROUTES:
        response = acme.post(route, json=request_for(route, deployment.queued_model))
        assert response.status_code == 400, (route, response.text)
        assert response.json()["error"]["code"] == "model_not_ready" and "queued" in response.text
    wrong = {
        "/v1/chat/completions": deployment.classifier["fine_tuned_model"],
        "/v1/completions": "minilm-l6",
        "/v1/predict": deployment.chat_model,
    }
    for route, model in wrong.items():
        response = acme.post(route, json=request_for(route, model))
        assert response.status_code == 400, (route, response.text)
        error = response.json()["error"]
        assert error["code"] == "wrong_model_type" and error["param"] == "model"
    assert "/v1/predict" in acme.post(ROUTES[0], json=request_for(ROUTES[0], wrong[ROUTES[0]])).text
    base_predict = acme.post("/v1/predict", json=request_for("/v1/predict", "minilm-l6"))
    assert base_predict.status_code == 400 and "base model" in base_predict.text
    with pytest.raises(BadRequestError):
        deployment.sdk().chat.completions.create(model=deployment.queued_model, messages=CHAT)  # type: ignore[arg-type]
