"""Server-Sent Events of one job, in order: each ``id: <seq>``, ``event: <type>``, ``data: <event JSON>``;
after the job is terminal and every event was sent, ``event: end`` with its status, and the stream closes.

Streams start after a given seq (``Last-Event-ID``) and wake on the job's Redis pub/sub channel when Redis
is configured (re-reading SQL every few seconds anyway), else poll SQL twice a second. Each read goes
through the read path (``Reads``): no connection is held while waiting.

A stream outlives the request that authenticated it, so it re-checks its API key every ``key_check_s`` (the
key cache's lifetime): once the key is revoked the stream sends ``event: revoked`` (an error body, code
``invalid_api_key``) and closes, as soon as any request with that key would be refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from sse_starlette import ServerSentEvent

from sparsegrad_service.enums import JobStatus
from sparsegrad_service.live import CHANNEL_PREFIX

from .queries import events_after_statement, job_status_statement
from .reads import Reads
from .serializers import event_object

log = logging.getLogger("sparsegrad.api.sse")

BATCH = 200
POLL_S = 0.5
"""Polling interval without Redis."""
REDIS_RECHECK_S = 5.0
"""With Redis, SQL is still re-read this often (a notification can be lost)."""
PING_S = 15.0


class Wakeup:
    """Waits until the job may have new events: a Redis notification, or simply ``POLL_S``."""

    def __init__(self, pubsub: Any = None, client: Any = None) -> None:
        self._pubsub = pubsub
        self._client = client

    @classmethod
    async def open(cls, redis_url: str | None, job_id: str) -> Wakeup:
        if not redis_url:
            return cls()
        try:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
            pubsub = client.pubsub()
            await pubsub.subscribe(CHANNEL_PREFIX + job_id)
            return cls(pubsub, client)
        except Exception as exc:  # live wake-ups are an optimization: fall back to polling
            log.warning("Redis pub/sub unavailable for %s (%s); polling SQL", job_id, exc)
            return cls()

    async def wait(self, at_most_s: float = REDIS_RECHECK_S) -> None:
        if self._pubsub is None:
            await anyio.sleep(min(POLL_S, at_most_s))
            return
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                     timeout=min(REDIS_RECHECK_S, at_most_s))
            while message is not None:  # drain a burst: one SQL read covers all of it
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
        except Exception as exc:
            log.warning("Redis pub/sub failed (%s); polling SQL", exc)
            await self.close()
            await anyio.sleep(POLL_S)

    async def close(self) -> None:
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        for closable in (pubsub, client):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.aclose()


async def read_batch(reads: Reads, job_id: str, after: int) -> tuple[str | None, list[ServerSentEvent]]:
    """The job's status, then up to ``BATCH`` events after ``after`` (status first: an event committed
    before a terminal status is always seen by the next read)."""
    job = await reads.first(job_status_statement(), {"job_id": job_id})
    rows = await reads.all(events_after_statement(), {"job_id": job_id, "after": after, "limit": BATCH})
    events = [ServerSentEvent(data=event_object(r).model_dump_json(), event=r.type, id=str(r.seq)) for r in rows]
    return (None if job is None else str(job.status)), events


KeyCheck = Callable[[], Awaitable[bool]]
"""True while the stream's API key is still valid."""


def revoked_event() -> ServerSentEvent:
    error = {"message": "The API key of this stream was revoked; the stream ends.",
             "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    return ServerSentEvent(event="revoked", data=json.dumps({"error": error}))


async def job_events(reads: Reads, redis_url: str | None, job_id: str, after: int, key_valid: KeyCheck,
                     key_check_s: float) -> AsyncIterator[ServerSentEvent]:
    """Every event of the job after seq ``after``, then ``end`` once it is terminal; ``revoked`` and the end
    of the stream as soon as ``key_valid`` (asked every ``key_check_s``) says the key was revoked."""
    wakeup = await Wakeup.open(redis_url, job_id)
    try:
        cursor = after
        key_checked = anyio.current_time()
        while True:
            if anyio.current_time() - key_checked >= key_check_s:
                if not await key_valid():
                    yield revoked_event()
                    return
                key_checked = anyio.current_time()
            status, events = await read_batch(reads, job_id, cursor)
            for event in events:
                cursor = int(event.id or cursor)
                yield event
            if len(events) >= BATCH:
                continue
            finished = status is None or JobStatus(status).terminal
            if finished and not events:
                yield ServerSentEvent(event="end", data=json.dumps({"job_id": job_id, "status": status}))
                return
            if not finished:
                await wakeup.wait(at_most_s=max(key_check_s, POLL_S))
    finally:
        await wakeup.close()
