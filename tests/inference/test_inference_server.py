"""The inference server beyond generation: predictions equal the merged model's, archives are checked against
their SHA-256, only the worker token gets in, prompts longer than the context and models on the wrong route are
400s, the model cache evicts the least recently used per base model, and the runner refuses work beyond its bound
and stops a generation whose client left."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from inference_harness import Trained, base_model, server_settings, store_folder

from inference.decoding import StopText
from inference.errors import InferenceError
from inference.model_cache import ModelCache
from inference.runner import ThreadRunner
from sparsegrad_core import SparseGradConfig
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.recipe import finetune, merge
from sparsegrad_core.training import TrainingArguments, read_training_info
from sparsegrad_data import ColumnMapping, TaskType, load_dataset
from sparsegrad_service.schemas.inference import ServedModel
from sparsegrad_service.store import LocalArtifactStore

TEXTS = ["a gripping, beautifully acted film", "dull and far too long", "it was fine", "the worst of the year"]


def predict(server: TestClient, served: ServedModel, **request: object) -> dict[str, object]:
    body = {"model": served.model_dump(), "request": {"model": served.name, "texts": TEXTS, **request}}
    response = server.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_predictions_are_the_merged_models_labels_and_probabilities(server: TestClient,
                                                                     classifier_adapter: Trained) -> None:
    answer = predict(server, classifier_adapter.served)
    merged, tokenizer = merge(classifier_adapter.source, classifier_adapter.export_dir)
    names = read_training_info(classifier_adapter.export_dir)["label_names"]
    with torch.no_grad():
        enc = tokenizer(TEXTS, truncation=True, max_length=32, padding=True, return_tensors="pt")
        probs = torch.softmax(merged.eval()(**enc).logits, dim=-1)
    data = answer["data"]
    assert isinstance(data, list) and [p["index"] for p in data] == list(range(len(TEXTS)))
    assert [p["label"] for p in data] == [names[i] for i in probs.argmax(-1).tolist()]
    for prediction, row in zip(data, probs.tolist(), strict=True):
        assert list(prediction["probabilities"]) == names
        assert list(prediction["probabilities"].values()) == pytest.approx(row, abs=1e-5)
        assert prediction["score"] == pytest.approx(max(row), abs=1e-5)
    assert answer["usage"]["prompt_tokens"] == int(enc["attention_mask"].sum())  # type: ignore[index]


def test_a_corrupted_archive_is_not_loaded(server: TestClient, chat_adapter: Trained) -> None:
    altered = chat_adapter.served.model_copy(deep=True)
    altered.chain[0].sha256 = "0" * 64
    body = {"model": altered.model_dump(), "request": {"model": altered.name, "messages": [{"role": "user",
                                                                                             "content": "hi"}]}}
    response = server.post("/v1/chat/completions", json=body)
    assert response.status_code == 500 and response.json()["error"]["code"] == "artifact_corrupted"
    assert chat_adapter.served.chain[0].sha256 in response.text  # the archive's real digest, named


def test_only_the_worker_token_gets_in(server: TestClient) -> None:
    body = {"model": base_model(), "request": {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}}
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-wrong-token"}):
        response = server.post("/v1/completions", json=body, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_worker_token"
    assert server.get("/healthz").json() == {"status": "ok", "backend": "transformers"}


def test_what_cannot_be_served_is_a_4xx_naming_the_field(server: TestClient, classifier_adapter: Trained,
                                                          chat_adapter: Trained) -> None:
    long_chat = {"model": base_model(), "request": {
        "model": "tiny-llama", "messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 2}}
    response = server.post("/v1/chat/completions", json=long_chat)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages" and "at most 256 tokens" in response.text
    on_decoder = {"model": chat_adapter.served.model_dump(), "request": {"model": "x", "texts": ["a"]}}
    response = server.post("/v1/predict", json=on_decoder)
    assert response.status_code == 400 and response.json()["error"]["code"] == "wrong_model_type"
    unknown = {"model": base_model("no-such-base"), "request": {"model": "x", "prompt": "hi"}}
    response = server.post("/v1/completions", json=unknown)
    assert response.status_code == 404 and "not registered" in response.text


@pytest.fixture(scope="module")
def second_chat_adapter(inference_root: Path, tiny_llama_dir: Path, artifact_store: LocalArtifactStore,
                        chat_adapter: Trained) -> ServedModel:
    """Another adapter of ``tiny-llama`` (another seed, two steps)."""
    chats = load_dataset(inference_root / "chats.jsonl", TaskType.CAUSAL_LM, ColumnMapping())
    spec = MethodSpec(type="sparsegrad", setting="peft", sparsegrad=SparseGradConfig(
        density=0.2, calibration_steps=1, selection="block"))
    args = TrainingArguments(batch_size=4, max_steps=2, max_seq_length=48, learning_rate=5e-2, seed=1,
                             output_dir=str(inference_root / "chat-run-2"))
    export = finetune(str(tiny_llama_dir), chats, None, spec, args).result.export_dir
    assert export is not None
    return ServedModel(name="ft:tiny-llama:org-test::ftjob-two", base="tiny-llama", task="causal_lm",
                       chain=[store_folder(artifact_store, export, "jobs/ftjob-two/artifacts/adapter.tar.gz")])


def test_the_cache_keeps_the_most_recently_used_models_of_each_base(
        inference_root: Path, tiny_llama_dir: Path, tiny_model_dir: Path, artifact_store: LocalArtifactStore,
        chat_adapter: Trained, second_chat_adapter: ServedModel) -> None:
    settings = server_settings(inference_root, tiny_llama_dir, tiny_model_dir, inference_cache_size=1)
    cache = ModelCache(settings, artifact_store, device="cpu")
    first = cache.get(chat_adapter.served)
    assert cache.get(chat_adapter.served) is first  # cached
    assert cache.loaded("tiny-llama") == [chat_adapter.served.identity]
    second = cache.get(second_chat_adapter)
    assert cache.loaded("tiny-llama") == [second_chat_adapter.identity]  # the other one left
    base = cache.get(ServedModel(name="tiny-llama", base="tiny-llama", task="causal_lm"))
    weights = [dict(m.model.named_parameters())["model.layers.0.mlp.down_proj.weight"] for m in (first, second, base)]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert cache.get(chat_adapter.served) is not first  # loaded again, into a fresh copy of the base
    assert torch.equal(dict(cache.get(chat_adapter.served).model.named_parameters())[
        "model.layers.0.mlp.down_proj.weight"], weights[0])


def test_the_runner_refuses_work_beyond_its_bound_and_stops_abandoned_streams() -> None:
    runner = ThreadRunner(workers=1, max_pending=1)
    release, stopped = threading.Event(), threading.Event()

    async def scenario() -> None:
        blocked = asyncio.ensure_future(runner.call(release.wait))
        await asyncio.sleep(0.05)
        with pytest.raises(InferenceError) as refused:
            await runner.call(lambda: None)
        assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]
        release.set()
        await blocked
        assert runner.pending == 0

        def produce(cancelled: Callable[[], bool]) -> Iterator[int]:
            for i in range(10_000):
                if cancelled():
                    stopped.set()
                    return
                yield i
                threading.Event().wait(0.01)

        stream = runner.stream(produce)
        assert await anext(stream) == 0
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert stopped.wait(5), "the generator kept running after its consumer left"
    runner.shutdown()


def test_stop_text_holds_back_what_may_begin_a_stop_sequence() -> None:
    text = StopText(("END", "\n\n"))
    assert text.update("Hello E") == "Hello "
    assert text.update("Hello EN") == ""
    assert text.update("Hello ENX") == "ENX"
    assert text.update("Hello ENX\n") == ""
    assert text.update("Hello ENX\n\nmore") == "" and text.stopped
    assert text.text == "Hello ENX" and text.flush() == ""
    partial = StopText(())
    assert partial.update("caf\ufffd") == "caf" and partial.update("café") == "é"
