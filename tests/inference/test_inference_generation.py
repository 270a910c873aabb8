"""The inference server generates with the models the API names: a fine-tuned adapter (merged into its base with
the project's loaders) answers differently from its base, greedy output is transformers' own greedy output of
the merged model, a seed fixes a sample, stop sequences and ``max_tokens`` end the text as OpenAI's do, streams
carry the same text as whole answers, and usage counts the prompt's and the answer's tokens."""

from __future__ import annotations

import json
from typing import Any

import torch
from fastapi.testclient import TestClient
from inference_harness import Trained, base_model

from sparsegrad_core.chat import generation_prompt
from sparsegrad_core.loading import load_tokenizer
from sparsegrad_core.recipe import merge

CHAT = [{"role": "user", "content": "What is two plus two?"}]


def chat(server: TestClient, model: dict[str, Any], **request: Any) -> dict[str, Any]:
    body = {"model": model, "request": {"model": model["name"], "messages": CHAT, "max_tokens": 12, **request}}
    response = server.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def stream_events(server: TestClient, path: str, body: dict[str, Any]) -> list[Any]:
    with server.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_a_fine_tuned_adapter_answers_differently_from_its_base(server: TestClient, chat_adapter: Trained) -> None:
    tuned = chat(server, chat_adapter.served.model_dump(), temperature=0)
    base = chat(server, base_model(), temperature=0)
    assert tuned["object"] == "chat.completion" and tuned["model"] == chat_adapter.served.name
    assert tuned["choices"][0]["message"]["role"] == "assistant"
    assert tuned["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]


def test_greedy_output_is_transformers_greedy_output_of_the_merged_model(server: TestClient, chat_adapter: Trained
                                                                         ) -> None:
    answer = chat(server, chat_adapter.served.model_dump(), temperature=0, max_tokens=10)
    merged, tokenizer = merge(chat_adapter.source, chat_adapter.export_dir)
    ids = tokenizer(generation_prompt(CHAT, tokenizer), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = merged.eval().generate(ids, max_new_tokens=10, do_sample=False,  # type: ignore[operator]
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    expected = tokenizer.decode([t for t in new if t != tokenizer.eos_token_id], skip_special_tokens=True)
    assert answer["choices"][0]["message"]["content"] == expected
    usage = answer["usage"]
    assert usage["prompt_tokens"] == ids.shape[1] and usage["completion_tokens"] == len(new)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    finish = "stop" if new[-1] == tokenizer.eos_token_id else "length"
    assert answer["choices"][0]["finish_reason"] == finish


def test_a_seed_fixes_a_sample(server: TestClient, chat_adapter: Trained) -> None:
    model = chat_adapter.served.model_dump()
    texts = [chat(server, model, temperature=1.5, seed=seed, max_tokens=16)["choices"][0]["message"]["content"]
             for seed in (1, 1, 2, 3)]
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) > 1  # other seeds draw other samples


def test_max_tokens_and_stop_sequences_end_the_text(server: TestClient, chat_adapter: Trained) -> None:
    model = chat_adapter.served.model_dump()
    short = chat(server, model, temperature=0, max_tokens=3)
    assert short["usage"]["completion_tokens"] <= 3
    if short["usage"]["completion_tokens"] == 3:
        assert short["choices"][0]["finish_reason"] == "length"
    full = chat(server, model, temperature=0, max_tokens=12)["choices"][0]["message"]["content"]
    assert len(full) >= 4, full
    stop = full[2:4]
    cut = chat(server, model, temperature=0, max_tokens=12, stop=[stop, "never-generated"])
    assert cut["choices"][0]["message"]["content"] == full[:full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_a_stream_carries_the_whole_answer(server: TestClient, chat_adapter: Trained) -> None:
    model = chat_adapter.served.model_dump()
    whole = chat(server, model, temperature=0)
    body = {"model": model, "request": {"model": model["name"], "messages": CHAT, "max_tokens": 12, "temperature": 0,
                                        "stream": True, "stream_options": {"include_usage": True}}}
    chunks = stream_events(server, "/v1/chat/completions", body)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_completions_continue_the_prompt_as_it_is(server: TestClient, chat_adapter: Trained) -> None:
    model = chat_adapter.served.model_dump()
    request = {"model": model["name"], "prompt": "two plus two is", "max_tokens": 8, "temperature": 0}
    response = server.post("/v1/completions", json={"model": model, "request": request})
    assert response.status_code == 200, response.text
    answer = response.json()
    tokenizer = load_tokenizer(chat_adapter.source)
    assert answer["object"] == "text_completion"
    assert answer["usage"]["prompt_tokens"] == len(tokenizer("two plus two is", add_special_tokens=False)["input_ids"])
    chunks = stream_events(server, "/v1/completions", {"model": model, "request": {**request, "stream": True}})
    assert "".join(c["choices"][0]["text"] for c in chunks) == answer["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]
