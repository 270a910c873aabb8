"""Job events: OpenAI paging (newest first, ``after`` = last id of the previous page) and chronological
paging; the Server-Sent Events stream to its ``end``, resumed with ``Last-Event-ID``, live by polling and
by Redis pub/sub."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, TenantClient, start_service
from sqlalchemy import update
from support.sse import read_events

from api import event_stream
from migrations import upgrade
from sparsegrad_client.sse import ServerSentEvent
from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import EventType
from sparsegrad_service.job_records import add_event
from sparsegrad_service.live import LiveChannel
from sparsegrad_service.models import Job

JOBS = "/v1/fine_tuning/jobs"


def add_events(service: Service, job_id: str, count: int, type: EventType = EventType.message) -> None:
    with session_scope(service.url) as session:
        for i in range(count):
            add_event(session, job_id, type, f"event {i}", data={"i": i})


def finish(service: Service, job_id: str, status: str = "succeeded") -> None:
    with session_scope(service.url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))
        add_event(session, job_id, EventType.message, f"Job {status}.")


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_events_page_in_both_orders(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    add_events(service, job["id"], 9)  # 10 events with "Job created"
    url = f"{JOBS}/{job['id']}/events"
    everything = acme.get(url, params={"limit": 100}).json()["data"]
    ids = [e["id"] for e in everything]
    assert len(ids) == 10 and all(i.startswith("ftevent-") for i in ids)
    seqs = [int(i.removeprefix("ftevent-")) for i in ids]
    assert seqs == sorted(seqs, reverse=True)
    event = everything[0]
    assert event["object"] == "fine_tuning.job.event" and event["type"] == "message" and event["level"] == "info"
    assert event["data"] == {"i": 8} and isinstance(event["created_at"], int)

    newest = acme.get(url, params={"limit": 4}).json()
    assert [e["id"] for e in newest["data"]] == ids[:4] and newest["has_more"]
    older = acme.get(url, params={"limit": 4, "after": newest["data"][-1]["id"]}).json()
    assert [e["id"] for e in older["data"]] == ids[4:8] and older["has_more"]
    oldest = acme.get(url, params={"limit": 4, "after": older["data"][-1]["id"]}).json()
    assert [e["id"] for e in oldest["data"]] == ids[8:] and not oldest["has_more"]

    chronological = acme.get(url, params={"order": "asc", "limit": 3}).json()
    assert [e["id"] for e in chronological["data"]] == ids[::-1][:3] and chronological["has_more"]
    bare = str(seqs[-3])  # bare seqs are accepted too
    later = acme.get(url, params={"order": "asc", "after": bare, "limit": 100}).json()["data"]
    assert [e["id"] for e in later] == ids[::-1][3:]
    r = acme.get(url, params={"after": "evt-x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    r = acme.get(url, params={"order": "sideways"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "order"


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_stream_to_the_end_then_resume_with_last_event_id(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    add_events(service, job["id"], 4, EventType.metrics)
    finish(service, job["id"])
    url = f"{JOBS}/{job['id']}/events/stream"
    messages = read_events(acme, url)
    assert messages[-1].event == "end" and messages[-1].json()["status"] == "succeeded"
    events = messages[:-1]
    assert [m.event for m in events] == ["message", "metrics", "metrics", "metrics", "metrics", "message"]
    ids = [int(m.id) for m in events]
    assert ids == sorted(ids) and events[1].json()["data"] == {"i": 0}
    assert events[0].json()["id"] == f"ftevent-{ids[0]}" and events[0].json()["message"] == "Job created"

    resumed = read_events(acme, url, last_event_id=str(ids[2]))
    assert [int(m.id) for m in resumed[:-1]] == ids[3:] and resumed[-1].event == "end"
    by_query = read_events(acme, f"{url}?after=ftevent-{ids[4]}")
    assert [int(m.id) for m in by_query[:-1]] == ids[5:]
    assert read_events(acme, url, last_event_id=str(ids[-1]))[0].event == "end"
    r = acme.get(url, headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Last-Event-ID"


def stream_live(service: Service, acme: TenantClient, notify: Any = None) -> tuple[list[ServerSentEvent], float]:
    """Stream a queued job while another thread adds events and then finishes it: (messages, seconds)."""
    job = acme.create_job()
    first = threading.Event()

    def produce() -> None:
        first.wait(10)
        for i in range(3):
            add_events(service, job["id"], 1, EventType.phase)
            if notify:
                notify(job["id"])
            time.sleep(0.05 * i)
        finish(service, job["id"], "cancelled")
        if notify:
            notify(job["id"])

    producer = threading.Thread(target=produce)
    producer.start()
    started = time.monotonic()
    messages = read_events(acme, f"{JOBS}/{job['id']}/events/stream", on_event=lambda _e: first.set())
    producer.join()
    return messages, time.monotonic() - started


def test_stream_follows_a_live_job_by_polling(service: Service, acme: TenantClient) -> None:
    messages, seconds = stream_live(service, acme)
    assert seconds < 10
    assert [m.event for m in messages] == ["message", "phase", "phase", "phase", "message", "end"]
    assert messages[-1].json()["status"] == "cancelled"


@pytest.fixture()
def redis_service(tmp_path: Path, redis_url: str) -> Iterator[Service]:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    yield from start_service(tmp_path, url, redis_url=redis_url)


NOT_WOKEN_S = 30.0
"""The polling interval and the Redis re-read interval while a test checks that notifications wake a stream."""


def test_stream_wakes_on_redis_notifications(redis_service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any way of reading the events without a wake-up (the polling fallback, the periodic re-read after a lost
    # notification) now waits 30 s per read; the producer's notifications come within 0.2 s.
    monkeypatch.setattr(event_stream, "POLL_S", NOT_WOKEN_S)
    monkeypatch.setattr(event_stream, "REDIS_RECHECK_S", NOT_WOKEN_S)
    acme = redis_service.as_tenant("acme")
    channel = LiveChannel(redis_service.settings)
    messages, seconds = stream_live(redis_service, acme,
                                    notify=lambda job_id: channel.notify(job_id, {"kind": "event"}))
    assert [m.event for m in messages] == ["message", "phase", "phase", "phase", "message", "end"]
    assert seconds < 5.0, f"the stream took {seconds:.1f} s: not woken by the notifications"


def revoke_while_streaming(service: Service) -> tuple[list[ServerSentEvent], float]:
    """Follow a queued job's stream, revoke its key once the stream is open: (messages, seconds from the
    revocation to the stream's close)."""
    from sparsegrad_service.keys import revoke_api_key

    acme = service.as_tenant("acme")
    job = acme.create_job()
    opened = threading.Event()
    revoked_at: list[float] = []

    def revoke() -> None:
        opened.wait(10)
        with session_scope(service.url) as session:
            assert acme.key is not None and revoke_api_key(session, acme.key[:10]) == 1
        revoked_at.append(time.monotonic())

    revoker = threading.Thread(target=revoke)
    revoker.start()
    messages = read_events(acme, f"{JOBS}/{job['id']}/events/stream", timeout=60, on_event=lambda _e: opened.set())
    closed_at = time.monotonic()
    revoker.join()
    return messages, closed_at - revoked_at[0]


@pytest.mark.parametrize("live", ["polling", "redis"])
def test_a_revoked_key_ends_its_open_streams_within_the_key_cache_time(
    live: str, tmp_path: Path, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    for service in start_service(tmp_path, url, redis_url=redis_url if live == "redis" else None):
        messages, seconds = revoke_while_streaming(service)
        ttl = service.settings.api_key_cache_s
    assert [m.event for m in messages] == ["message", "revoked"], [m.event for m in messages]
    assert messages[-1].json()["error"]["code"] == "invalid_api_key"
    assert seconds <= ttl + 1.0, f"the stream outlived its revoked key by {seconds:.1f} s (key cache {ttl} s)"

