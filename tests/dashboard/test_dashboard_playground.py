"""The playground of a succeeded job's page in a real browser (Debian's Chromium) against a real deployment: the
API served by uvicorn forwarding to a running inference server (transformers engine), the jobs a fine-tuned SmolLM2
and a fine-tuned MiniLM trained by the worker's runner (``inference_deployment``, shared with the API's tests).

Chat: the fine-tuned model and its base stream into two columns; each column's text is what the API answers for
the request the page sent (so the two differ as the models do), the Python snippet run as it is prints the same
answer and the curl command carries the same body; Stop aborts both; an API error is shown with its message.
Predict: labels and every class's probability equal ``POST /v1/predict``'s for the same texts, for the final model
and for a checkpoint. A job that has not succeeded, or whose model was deleted, has no playground.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.inference_deployment import InferenceDeployment, run_job

from sparsegrad_service.model_names import job_id_of

from .conftest import REPO, SCREENSHOTS

pytestmark = pytest.mark.slow

DOCS_IMAGE = REPO / "docs" / "img" / "playground.png"
REFRESH_DOCS = "SPARSEGRAD_REFRESH_DOCS_IMAGES"
"""Set (scripts/playground_screenshot.py does) to write the chat screenshot to docs/img/playground.png too."""
TUNED, BASE = ".pg-column[data-column='fine-tuned']", ".pg-column[data-column='base']"

# Each column's answer text, and how many different lengths it was seen at while it streamed in.
WATCH = """() => {
  window.pgSeen = {};
  for (const column of document.querySelectorAll('.pg-column')) {
    const lengths = window.pgSeen[column.dataset.column] = new Set();
    new MutationObserver(() => {
      const last = [...column.querySelectorAll('.pg-answer .pg-text')].pop();
      if (last) lengths.add(last.textContent.length);
    }).observe(column, { childList: true, subtree: true, characterData: true });
  }
}"""
ANSWERS = """(selector) => [...document.querySelectorAll(selector + ' .pg-answer')].map(
  (a) => ({ text: a.querySelector('.pg-text').textContent, finish: a.dataset.finishReason ?? null }))"""


def open_playground(page: Any, dep: InferenceDeployment, job_id: str, mode: str) -> list[dict[str, Any]]:
    """Sign in, open the job's page and wait for its playground; returns the inference requests the page sends."""
    sent: list[dict[str, Any]] = []
    page.on("request", lambda r: sent.append({"url": r.url, "body": r.post_data_json})
            if r.method == "POST" and "/v1/" in r.url else None)
    page.add_init_script(f"sessionStorage.setItem('sparsegrad.apiKey', {json.dumps(dep.acme.key)})")
    page.goto(f"{dep.base_url.removesuffix('/v1')}/#/jobs/{job_id}")
    page.wait_for_selector(f"#playground[data-mode='{mode}']")
    return sent


def answers(page: Any, column: str) -> list[dict[str, Any]]:
    return list(page.evaluate(ANSWERS, column))


def wait_answered(page: Any, count: int, timeout_s: float = 120) -> None:
    page.wait_for_function(f"() => [...document.querySelectorAll('.pg-answer')].length === {2 * count} && "
                           "[...document.querySelectorAll('.pg-answer')].every(a => a.dataset.finishReason)",
                           timeout=timeout_s * 1000)


def snippet(page: Any, kind: str, panel: str) -> str:
    return str(page.locator(f"#{panel} pre[data-snippet='{kind}']").text_content())


def curl_body(command: str) -> dict[str, Any]:
    """The JSON body a curl command sends (the word after ``-d``)."""
    words = shlex.split(command.replace("\\\n", " "))
    return dict(json.loads(words[words.index("-d") + 1]))


def run_python(code: str, dep: InferenceDeployment) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SPARSEGRAD_API_KEY": dep.acme.key})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_chat_streams_the_fine_tuned_and_the_base_model_side_by_side(page: Any, inference_deployment:
                                                                      InferenceDeployment) -> None:
    dep = inference_deployment
    sent = open_playground(page, dep, job_id_of(dep.chat_model), "chat")
    assert dep.chat_model in page.locator("#pg-model").inner_text()
    assert "smollm2-135m" in page.locator(BASE).inner_text()
    page.evaluate(WATCH)
    page.fill("#pg-system", "Be brief.")
    page.fill("#pg-message", "What is the capital of France?")
    page.fill("#pg-temperature", "0")  # greedy: the answers to compare with the API's do not hang on sampling
    page.fill("#pg-max-tokens", "12")
    page.fill("#pg-seed", "1234")
    page.click("#pg-send")
    wait_answered(page, 1)

    (tuned,), (base,) = answers(page, TUNED), answers(page, BASE)
    errors = page.locator(".pg-column .alert-error").all_inner_texts()
    assert tuned["text"] and base["text"] and tuned["text"] != base["text"], (tuned, base, errors)
    seen = page.evaluate("() => Object.fromEntries(Object.entries(window.pgSeen).map(([k, v]) => [k, v.size]))")
    assert seen["fine-tuned"] > 2 and seen["base"] > 2, seen  # text arrived piece by piece, not at once
    requests = [r for r in sent if r["url"].endswith("/v1/chat/completions")]
    assert sorted(r["body"]["model"] for r in requests) == sorted([dep.chat_model, "smollm2-135m"])
    body = next(r["body"] for r in requests if r["body"]["model"] == dep.chat_model)
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is the capital of France?"}]
    assert body["temperature"] == 0 and body["top_p"] == 1 and body["seed"] == 1234 and body["max_tokens"] == 12
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and "stop" not in body

    # the same request without streaming: the same text, finish_reason and usage as the page shows
    sdk = dep.sdk()
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    for column, shown, model in ((TUNED, tuned, dep.chat_model), (BASE, base, "smollm2-135m")):
        answer = sdk.chat.completions.create(**{**plain, "model": model})
        assert shown["text"] == answer.choices[0].message.content
        assert shown["finish"] == answer.choices[0].finish_reason
        meta = page.locator(f"{column} .pg-meta").inner_text()
        assert answer.usage is not None
        assert f"{answer.usage.prompt_tokens} prompt + {answer.usage.completion_tokens} completion tokens" in meta

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#playground").screenshot(path=str(SCREENSHOTS / "playground.png"))
    if os.environ.get(REFRESH_DOCS):
        page.locator("#playground").screenshot(path=str(DOCS_IMAGE))

    # the snippets are this request: the Python one, run as it is, prints the fine-tuned model's answer
    python = snippet(page, "python", "pg-chat-snippets")
    assert f'model="{dep.chat_model}"' in python and f'base_url="{dep.base_url}"' in python
    assert curl_body(snippet(page, "curl", "pg-chat-snippets")) == body
    assert run_python(python, dep).startswith(tuned["text"])
    page.click("#pg-chat-snippets-curl-tab")
    assert page.locator("#pg-chat-snippets-python").is_hidden() and page.locator("#pg-chat-snippets-curl").is_visible()
    page.locator("#pg-chat-snippets").get_by_role("button", name="Copy").click()
    page.locator(".toast", has_text="curl copied").wait_for()
    page.click("#pg-chat-snippets-python-tab")

    # Stop aborts both requests: before an answer came, and while one streams (the base model tells a long story;
    # the fine-tuned one may have said "Banana!" by then); the conversation goes on afterwards
    page.fill("#pg-max-tokens", "400")
    page.fill("#pg-message", "Tell me a long story about the sea.")
    page.evaluate("() => { document.getElementById('pg-send').click(); document.getElementById('pg-stop-button').click(); }")
    wait_answered(page, 2, timeout_s=30)
    assert answers(page, TUNED)[-1]["finish"] == answers(page, BASE)[-1]["finish"] == "stopped"
    page.fill("#pg-message", "Tell me a long story about the sea.")
    page.click("#pg-send")
    page.wait_for_function(f"() => ({ANSWERS})(\"{BASE}\").length === 3 && ({ANSWERS})(\"{BASE}\")[2].text.length > 0")
    page.click("#pg-stop-button")
    wait_answered(page, 3, timeout_s=30)
    story = answers(page, BASE)[-1]
    assert story["finish"] == "stopped" and story["text"], story
    assert page.locator(f"{BASE} .pg-meta").inner_text() == "Stopped."
    assert answers(page, TUNED)[-1]["finish"] in ("stopped", "stop", "length")
    assert page.locator("#pg-send").is_enabled() and page.locator("#pg-stop-button").is_disabled()

    # an error of the API is shown in each column with the API's message
    page.fill("#pg-message", "Hello")
    page.fill("#pg-stop", "a\nb\nc\nd\ne")
    page.click("#pg-send")
    wait_answered(page, 4)
    expected = dep.acme.post("/v1/chat/completions", json={**plain, "stop": list("abcde")})
    assert expected.status_code == 400
    for column in (TUNED, BASE):
        assert expected.json()["error"]["message"] in page.locator(f"{column} .alert-error").inner_text()


def test_predict_shows_the_labels_and_probabilities_of_the_api(page: Any, inference_deployment:
                                                               InferenceDeployment) -> None:
    dep = inference_deployment
    job = dep.classifier
    sent = open_playground(page, dep, job["id"], "predict")
    assert "has no trained head" in page.locator("#pg-base-note").inner_text()
    assert page.locator(BASE).count() == 0
    checkpoints = dep.acme.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    names = [c["fine_tuned_model_checkpoint"] for c in checkpoints if c["fine_tuned_model_checkpoint"]]
    options = page.locator("#pg-model option").evaluate_all("(os) => os.map((o) => o.value)")
    assert options == [job["fine_tuned_model"], *names] and names

    texts = ["A gripping, beautifully acted film.", "Dull, predictable and far too long.", "It is a movie."]
    page.fill("#pg-texts", "\n".join(texts))
    for model in (job["fine_tuned_model"], names[-1]):
        page.select_option("#pg-model", model)
        page.evaluate("() => document.querySelector('.pg-results').replaceChildren()")
        page.click("#pg-predict")
        page.wait_for_selector(".pg-predictions tbody tr")
        expected = dep.acme.post("/v1/predict", json={"model": model, "texts": texts})
        assert expected.status_code == 200, expected.text
        assert sent[-1]["body"] == {"model": model, "texts": texts}
        rows = page.locator(".pg-predictions tbody tr")
        assert rows.count() == len(texts)
        for i, prediction in enumerate(expected.json()["data"]):
            row = rows.nth(i)
            assert row.locator(".pg-label").inner_text() == prediction["label"]
            assert float(str(row.locator(".pg-score").get_attribute("data-score"))) == prediction["score"]
            bars = row.locator(".pg-bar").evaluate_all(
                "(bs) => bs.map((b) => [b.dataset.class, Number(b.dataset.probability)])")
            assert dict(bars) == prediction["probabilities"]
            assert row.locator(".pg-bar.top").get_attribute("data-class") == prediction["label"]

    python = snippet(page, "python", "pg-predict-snippets")
    assert names[-1] in python and curl_body(snippet(page, "curl", "pg-predict-snippets")) == sent[-1]["body"]
    printed = run_python(python, dep).splitlines()
    assert [line.split()[0] for line in printed] == [p["label"] for p in expected.json()["data"]]

    # a request the API refuses: its message in the panel
    page.check("#pg-pairs")
    page.fill("#pg-text-pairs", "only one")
    page.click("#pg-predict")
    error = dep.acme.post("/v1/predict", json={"model": names[-1], "texts": texts, "text_pairs": ["only one"]})
    assert error.status_code == 400
    page.locator("#pg-predict-error", has_text=error.json()["error"]["message"]).wait_for()


def test_a_job_that_has_not_succeeded_has_no_playground(page: Any, inference_deployment: InferenceDeployment
                                                        ) -> None:
    dep = inference_deployment
    page.add_init_script(f"sessionStorage.setItem('sparsegrad.apiKey', {json.dumps(dep.acme.key)})")
    page.goto(f"{dep.base_url.removesuffix('/v1')}/#/jobs/{job_id_of(dep.queued_model)}")
    page.wait_for_selector(".job-badge .status-queued")
    page.wait_for_selector("#checkpoints h2")
    assert page.locator("#playground").is_hidden()


def test_a_job_whose_model_was_deleted_has_no_playground(page: Any, inference_deployment: InferenceDeployment,
                                                          sst2_jsonl: Path) -> None:
    dep = inference_deployment
    job = run_job(dep.service, dep.acme.create_job(
        model="minilm-l6", training_file=dep.acme.upload_id(sst2_jsonl.read_bytes()),
        method={"type": "lora", "lora": {"rank": 2}}, hyperparameters={"max_steps": 1, "max_seq_length": 16}))
    open_playground(page, dep, job["id"], "predict")
    assert dep.acme.delete(f"/v1/models/{job['fine_tuned_model']}").status_code == 200
    with page.expect_response(lambda r: "/v1/models/" in r.url) as checked:
        page.reload()
    assert checked.value.status == 404
    page.wait_for_selector("#checkpoints h2")
    assert page.locator("#playground").is_hidden()
