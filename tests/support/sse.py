"""Read a job's Server-Sent Events in tests, with the client package's parser (``sparsegrad_client.sse``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sparsegrad_client.sse import ServerSentEvent, parse_sse


def read_events(client: Any, path: str, *, last_event_id: str | None = None, timeout: float = 300,
                on_event: Callable[[ServerSentEvent], object] | None = None,
                stop_after: int | None = None) -> list[ServerSentEvent]:
    """Every event of the stream at ``path`` until the server closes it (or until ``stop_after`` events,
    then hang up). ``client`` is an httpx client or anything with its ``stream``; the response must be a
    200 event stream and every event's data JSON (``event.json()``); ``on_event`` sees each as it arrives."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[ServerSentEvent] = []
    with client.stream("GET", path, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in parse_sse(response.iter_lines()):
            json.loads(event.data)  # fails the test on data that is not JSON
            events.append(event)
            if on_event is not None:
                on_event(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events
