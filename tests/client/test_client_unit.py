"""The client without a server (httpx MockTransport): SSE parsing, reconnecting with Last-Event-ID,
error parsing, idempotency keys on retries, and download verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sparsegrad_client import ApiError, DownloadError, SparseGradClient
from sparsegrad_client.sse import parse_sse


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
    messages = [e.json()["message"] for e in client.stream_events("ftjob-1")]
    assert messages == ["m1", "m2", "m3"]
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
        return httpx.Response(200, json={"id": "ftjob-1", "status": "queued"})

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    job = client.create_job("minilm-l6", "file-1", method={"type": "lora"}, seed=3)
    assert job["id"] == "ftjob-1"
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
    jobs = [{"id": f"ftjob-{i}"} for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        after, limit = request.url.params.get("after"), int(request.url.params["limit"])
        start = 0 if after is None else next(i for i, j in enumerate(jobs) if j["id"] == after) + 1
        page = jobs[start:start + limit]
        return httpx.Response(200, json={"object": "list", "data": page, "has_more": start + limit < len(jobs)})

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    assert [j["id"] for j in client.iter_jobs(page_size=2)] == [j["id"] for j in jobs]


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
