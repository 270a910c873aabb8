"""The live channel: wakes a job's SSE streams when it gets new events (Redis pub/sub; SQL stays the record)."""

from __future__ import annotations

import json
import logging
from typing import Any

from .settings import Settings

log = logging.getLogger("sparsegrad.live")

CHANNEL_PREFIX = "sparsegrad:job:"


class LiveChannel:
    """Wakes SSE streams when a job gets new events: Redis pub/sub when configured, else nothing (the
    streams poll SQL)."""

    def __init__(self, settings: Settings) -> None:
        self.redis_url = settings.redis_url
        self._client: Any = None

    def notify(self, job_id: str, payload: dict[str, Any] | None = None) -> None:
        if not self.redis_url:
            return
        try:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self._client.publish(CHANNEL_PREFIX + job_id, json.dumps(payload or {}, default=str))
        except Exception as exc:  # live delivery is best effort; SQL is the record
            log.warning("live notification for %s failed: %s", job_id, exc)
            self._client = None
