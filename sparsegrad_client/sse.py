"""Server-Sent Events parsing: text lines in, :class:`ServerSentEvent` objects out (the WHATWG rules)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its ``event`` name (``message`` when unnamed), ``data`` and ``id``."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events from a stream of lines (without their line endings); comments (``: ping``) are skipped.

    An event is dispatched at a blank line when it carried data or a name; a trailing event without its
    blank line (the connection dropped mid-event) is discarded, as browsers do.
    """
    event = ""
    data: list[str] = []
    event_id: str | None = None
    retry: int | None = None
    seen_field = False
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if seen_field and (data or event):
                yield ServerSentEvent(event or "message", "\n".join(data), event_id, retry)
            event, data, retry, seen_field = "", [], None, False
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen_field = True
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            if "\0" not in value:
                event_id = value
        elif field == "retry" and value.isdigit():
            retry = int(value)
