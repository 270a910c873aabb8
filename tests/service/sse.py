"""A minimal Server-Sent Events reader for the tests (independent of the client package under test)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx


def read_events(client: httpx.Client, path: str, last_event_id: str | None = None,
                timeout: float = 300) -> list[dict[str, Any]]:
    """Every SSE message of ``path`` until the server closes the stream: ``{"id", "event", "data"}``."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", path, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    with contextlib.suppress(ValueError):
                        current["data"] = json.loads(current["data"])
                    messages.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data" and "data" in current:
                current["data"] += "\n" + value
            else:
                current[key] = value
    return messages
