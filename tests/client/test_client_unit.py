"""The client without a server (httpx MockTransport): SSE parsing, reconnecting with Last-Event-ID,
error parsing, idempotency keys on retries, download verification, answers parsed into the API's response
models, and a client import that pulls in neither the API, the worker, SQL nor torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sparsegrad_client import ApiError, DownloadError, SparseGradClient
from sparsegrad_client.sse import parse_sse
from sparsegrad_service.job_spec import TaskSpec
from sparsegrad_service.schemas import Hyperparameters, JobEventPublic, JobPublic, JobsPublic, MethodIn

from .conftest import REPO, clean_env, job_object


def test_parse_sse_follows_the_event_stream_rules() -> None:
    lines = [": ping", "retry: 1500", "id: 1", "event: message", "data: {\"a\": 1}", "",
             "data: line one", "data: line two", "", "id: 3", "event: end", "data: {}", "",
             "data: incomplete"]
    events = list(parse_sse(lines))
    assert [e.event for e in events] == ["message", "message", "end"]
    assert events[0].json() == {"a": 1} and events[0].id == "1" and events[0].retry_ms == 1500
    assert events[1].data == "line one\nline two" and events[1].id == "1"  # the last id carries over
    assert events[1].json() is None
    assert events[2].id == "3"


def _event(seq: int) -> bytes:
    body = {"id": f"ftevent-{seq}", "object": "fine_tuning.job.event", "type": "message", "message": f"m{seq}",
            "level": "info", "created_at": 0, "data": None}
    return f"id: ftevent-{seq}\nevent: message\ndata: {json.dumps(body)}\n\n".encode()


class _DroppingStream(httpx.SyncByteStream):
    """Sends some events, then fails like a dropped connection."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset")


def test_stream_events_reconnects_with_last_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sparsegrad_client.client.time.sleep", lambda s: None)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/fine_tuning/jobs/ftjob-1/events/stream"
        assert request.headers["authorization"] == "Bearer sg-k"
        last = request.headers.get("last-event-id")
        seen.append(last)
        if last is None:
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=_DroppingStream([_event(1), _event(2)]))
        assert last == "ftevent-2"
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=_event(3) + b"event: end\ndata: {}\n\n" + _event(4))

    client = SparseGradClient("http://svc/v1", "sg-k", transport=httpx.MockTransport(handler))
    events = list(client.stream_events("ftjob-1"))
    assert all(isinstance(e, JobEventPublic) for e in events)
    assert [e.message for e in events] == ["m1", "m2", "m3"]
    assert seen == [None, "ftevent-2"]


def test_errors_are_parsed_from_the_error_object() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            return httpx.Response(400, json={"error": {
                "message": "train.jsonl:3: field 'label': missing", "type": "invalid_request_error",
                "param": "file", "code": "invalid_file",
                "details": [{"line": 3, "field": "label", "message": "missing"}]}})
        if request.url.path.endswith("/boom"):
            return httpx.Response(502, text="bad gateway")
        return httpx.Response(404, json={"error": {"message": "No job found with id 'x'.", "type": "invalid_request_error",
                                                   "param": None, "code": "not_found"}})

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    with pytest.raises(ApiError) as info:
        client.list_files()
    err = info.value
    assert (err.status, err.code, err.param) == (400, "invalid_file", "file")
    assert str(err) == "train.jsonl:3: field 'label': missing" and err.is_validation
    assert err.details == [{"line": 3, "field": "label", "message": "missing"}]
    with pytest.raises(ApiError) as info:
        client.get_job("x")
    assert info.value.status == 404 and not info.value.is_validation and "x" in str(info.value)
    with pytest.raises(ApiError, match="HTTP 502: bad gateway"):
        client._json("GET", "/boom")


def test_create_job_retries_a_lost_request_with_the_same_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sparsegrad_client.client.time.sleep", lambda s: None)
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        if len(keys) == 1:
            raise httpx.ConnectError("refused", request=request)
        body = json.loads(request.content)
        assert body == {"model": "minilm-l6", "training_file": "file-1", "method": {"type": "lora"}, "seed": 3}
        return httpx.Response(200, json=job_object("ftjob-1"))

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    job = client.create_job("minilm-l6", "file-1", method={"type": "lora"}, seed=3)
    assert job.id == "ftjob-1"
    assert len(keys) == 2 and keys[0] == keys[1]
    client.create_job("minilm-l6", "file-1", method={"type": "lora"}, seed=3, idempotency_key="mine")
    assert keys[-1] == "mine"


def test_download_verifies_sha256_and_leaves_nothing_when_corrupt(tmp_path: Path) -> None:
    payload = b"x" * 5000
    good = hashlib.sha256(payload).hexdigest()

    def handler(request: httpx.Request) -> httpx.Response:
        sha = good if request.url.path.startswith("/v1/artifacts/good") else "0" * 64
        return httpx.Response(200, content=payload, headers={
            "X-Content-SHA256": sha, "content-disposition": 'attachment; filename="ftjob-1-metrics.csv"'})

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    progress: list[tuple[int, int | None]] = []
    path = client.download_artifact("good", tmp_path, lambda d, t: progress.append((d, t)), expected_sha256=good)
    assert path == tmp_path / "ftjob-1-metrics.csv" and path.read_bytes() == payload
    assert progress[-1] == (5000, 5000)
    with pytest.raises(DownloadError, match="X-Content-SHA256"):
        client.download_artifact("bad", tmp_path / "bad.csv")
    with pytest.raises(DownloadError, match="artifact record"):
        client.download_artifact("good", tmp_path / "other.csv", expected_sha256="1" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ftjob-1-metrics.csv"]


def test_iter_jobs_walks_every_page() -> None:
    jobs = [job_object(f"ftjob-{i}") for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        after, limit = request.url.params.get("after"), int(request.url.params["limit"])
        start = 0 if after is None else next(i for i, j in enumerate(jobs) if j["id"] == after) + 1
        page = jobs[start:start + limit]
        return httpx.Response(200, json={"object": "list", "data": page, "has_more": start + limit < len(jobs)})

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    assert [j.id for j in client.iter_jobs(page_size=2)] == [j["id"] for j in jobs]


def test_answers_are_the_api_response_models_read_back_field_for_field() -> None:
    served = job_object("ftjob-7", "running", phase="training", step=12, total_steps=40, progress=0.3)
    assert served["hyperparameters"]["learning_rate_multiplier"] == pytest.approx(2.0)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/fine_tuning/jobs":
            return httpx.Response(200, json={"object": "list", "data": [served], "has_more": False})
        return httpx.Response(200, json=served)

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    job = client.get_job("ftjob-7")
    assert isinstance(job, JobPublic) and isinstance(job.task, TaskSpec)
    assert (job.status, job.phase, job.step, job.total_steps) == ("running", "training", 12, 40)
    assert job.hyperparameters.learning_rate == 2e-4 and job.hyperparameters.learning_rate_multiplier == pytest.approx(2.0)
    assert job.model_dump(mode="json") == served  # nothing lost or added on the way through the client
    page = client.list_jobs()
    assert isinstance(page, JobsPublic) and page.data == [job] and page.has_more is False


def test_create_job_sends_request_models_with_only_the_fields_given() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=job_object("ftjob-1"))

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    client.create_job("minilm-l6", "file-1", method=MethodIn(type="lora"),
                      hyperparameters=Hyperparameters(max_steps=5, learning_rate=None))
    assert bodies[-1] == {"model": "minilm-l6", "training_file": "file-1", "method": {"type": "lora"},
                          "hyperparameters": {"max_steps": 5, "learning_rate": None}}


def test_the_client_imports_neither_the_api_the_worker_sql_nor_torch() -> None:
    code = (
        "import sys\n"
        "import sparsegrad_client\n"
        "heavy = {'api', 'worker', 'sparsegrad_cli', 'sparsegrad_core', 'torch', 'transformers', 'sqlalchemy',\n"
        "         'fastapi', 'celery', 'redis', 'pydantic_settings'}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_stream_events_retries_while_the_service_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sparsegrad_client.client.time.sleep", lambda s: None)
    answers = iter([httpx.Response(503, json={"error": {"message": "database unavailable"}}),
                    httpx.Response(200, content=_event(1) + b"event: end\ndata: {}\n\n")])
    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(lambda request: next(answers)))
    assert [e.id for e in client.stream_events("ftjob-1")] == ["ftevent-1"]


def test_stream_events_raises_api_errors_at_once() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(404, json={"error": {"message": "No fine-tuning job found with id 'x'.",
                                                   "type": "invalid_request_error", "param": None, "code": "not_found"}})

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    with pytest.raises(ApiError, match="id 'x'"):
        list(client.stream_events("x"))
    assert calls == [1]
