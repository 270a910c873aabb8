"""Inference on fine-tuned models through the API, end to end and unmocked: real jobs (the bundled SmolLM2 on chats,
the bundled MiniLM on SST-2) trained by the worker's own runner on the API's database and store, the inference
server (transformers engine) serving on a local port, the API forwarding to it, and the official ``openai`` SDK.

A fine-tuned SmolLM2 answers differently from its base model with the same seed (plain and streamed), its kept
checkpoint answers by its ``{model}:ckpt-step-{N}`` name, predict on
the fine-tuned MiniLM returns the labels its job's evaluation computed for the same texts, another tenant's model
is a 404 on every route, an unfinished job's model a 400, and a model on the wrong route a 400 saying which.
Without real models: bad requests are 400s naming the field, fields the SDK may send are accepted, and an
inference server that is not configured or not running is a 503 saying so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_harness import CHAT_ROWS, Service, TenantClient, jsonl, start_service
from openai import BadRequestError, NotFoundError
from support.endpoints import free_port
from support.inference_deployment import JOBS, SYSTEM
from support.inference_deployment import InferenceDeployment as Deployment

from sparsegrad_service.model_names import fine_tuned_model_name, job_id_of

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/predict")
CHAT = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]


def request_for(route: str, model: str) -> dict[str, Any]:
    """A small valid body of ``route`` for ``model``."""
    if route.endswith("/predict"):
        return {"model": model, "texts": ["a fine film"]}
    if route.endswith("/chat/completions"):
        return {"model": model, "messages": CHAT, "max_tokens": 4}
    return {"model": model, "prompt": "Hello", "max_tokens": 4}


@pytest.fixture(scope="module")
def deployment(inference_deployment: Deployment) -> Deployment:
    """The session's deployment serving a fine-tuned SmolLM2 and MiniLM (``support.inference_deployment``)."""
    return inference_deployment


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_kept_checkpoint_is_served_by_its_name(deployment: Deployment) -> None:
    client = deployment.sdk()
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id_of(deployment.chat_model)).data
    final = next(c for c in checkpoints if c.step_number == max(c.step_number for c in checkpoints))
    assert final.fine_tuned_model_checkpoint == f"{deployment.chat_model}:ckpt-step-{final.step_number}"
    greedy: dict[str, Any] = {"messages": CHAT, "max_tokens": 8, "temperature": 0}
    answer = client.chat.completions.create(model=final.fine_tuned_model_checkpoint, **greedy)
    assert answer.model == final.fine_tuned_model_checkpoint
    # the last step's checkpoint holds the fine-tuned model's weights
    assert answer.choices[0].message.content == client.chat.completions.create(
        model=deployment.chat_model, **greedy).choices[0].message.content


@pytest.mark.slow
def test_completions_with_the_openai_sdk(deployment: Deployment) -> None:
    client = deployment.sdk()
    done = client.completions.create(model=deployment.chat_model, prompt="The capital of France is", max_tokens=6,
                                     temperature=0, stop=["\n\n"])
    assert done.object == "text_completion" and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None and 0 < done.usage.completion_tokens <= 6
    streamed = client.completions.create(model=deployment.chat_model, prompt="The capital of France is",
                                         max_tokens=6, temperature=0, stop=["\n\n"], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text


@pytest.mark.slow
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


@pytest.mark.slow
def test_another_tenants_model_is_a_404_on_every_route(deployment: Deployment) -> None:
    beta = deployment.service.as_tenant("beta")
    for route in ROUTES:
        model = deployment.classifier["fine_tuned_model"] if route.endswith("predict") else deployment.chat_model
        response = beta.post(route, json=request_for(route, model))
        assert response.status_code == 404, (route, response.text)
        assert response.json()["error"]["param"] == "model"
    with pytest.raises(NotFoundError):
        deployment.sdk("beta").chat.completions.create(model=deployment.chat_model, messages=CHAT)  # type: ignore[arg-type]


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------ without real models
BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/chat/completions", {"n": 2}, "n"),
    ("/v1/chat/completions", {"max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {"max_tokens": 100_000}, "max_tokens"),
    ("/v1/chat/completions", {"temperature": 3}, "temperature"),
    ("/v1/chat/completions", {"top_p": 0}, "top_p"),
    ("/v1/chat/completions", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages.0.content"),
    ("/v1/chat/completions", {"logprobs": True}, "logprobs"),
    ("/v1/chat/completions", {"tools": [{"type": "function"}]}, "tools"),
    ("/v1/chat/completions", {"model": ""}, "model"),
    ("/v1/completions", {"prompt": ["one", "two"]}, "prompt"),
    ("/v1/completions", {"echo": True}, "echo"),
    ("/v1/completions", {"best_of": 3}, "best_of"),
    ("/v1/predict", {"texts": []}, "texts"),
    ("/v1/predict", {"text_pairs": ["one", "two"]}, "text_pairs"),
]


@pytest.mark.parametrize(("route", "change", "param"), BAD_REQUESTS)
def test_bad_requests_are_400s_naming_the_field(acme: TenantClient, route: str, change: dict[str, Any],
                                                param: str) -> None:
    response = acme.post(route, json={**request_for(route, "smollm2-135m"), **change})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text


def test_what_the_sdk_may_send_is_accepted_and_no_inference_server_is_a_503(acme: TenantClient) -> None:
    extra = {"user": "u1", "metadata": {"a": "b"}, "store": False, "n": 1, "presence_penalty": 0,
             "frequency_penalty": 0, "logprobs": False, "response_format": {"type": "text"}, "service_tier": "auto"}
    response = acme.post("/v1/chat/completions", json={**request_for("/v1/chat/completions", "smollm2-135m"), **extra})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "inference_unavailable" and "SPARSEGRAD_INFERENCE_URL" in error["message"]
    unknown = acme.post("/v1/completions", json=request_for("/v1/completions", "gpt-4o"))
    assert unknown.status_code == 400 and "smollm2-135m" in unknown.text  # the available models, listed


def test_an_inference_server_that_is_not_running_is_a_503(tmp_path: Path, db: str) -> None:
    for service in start_service(tmp_path, db, inference_url=f"http://127.0.0.1:{free_port()}"):
        response = service.as_tenant("acme").post("/v1/completions", json=request_for("/v1/completions",
                                                                                      "smollm2-135m"))
        assert response.status_code == 503, response.text
        assert "cannot be reached" in response.json()["error"]["message"]


def test_another_tenants_unfinished_job_is_a_404_and_its_owners_a_400(service: Service, acme: TenantClient) -> None:
    job = acme.create_job(model="smollm2-135m", training_file=acme.upload_id(jsonl(CHAT_ROWS)))
    name = fine_tuned_model_name("smollm2-135m", job["organization_id"], None, job["id"])
    beta = service.as_tenant("beta")
    for route in ROUTES:
        assert acme.post(route, json=request_for(route, name)).status_code == 400
        response = beta.post(route, json=request_for(route, name))
        assert response.status_code == 404, (route, response.text)
        assert "queued" not in response.text  # nothing of the other tenant's job shows
