"""``GET /v1/fine_tuning/jobs/{id}`` without the framework: clients poll this route more than any other, so an
ASGI middleware in front of the app calls the route's own function (``routes.jobs.retrieve_job``: the same
statement, read path and serialization) when the request's key is in the key cache, skipping FastAPI's
routing, dependency solving and validation. That is the whole shortcut; it answers nothing the route would not.

Everything else goes to the app, which answers as it always does: another method or path, a query string, a
key not in the cache (the regular route looks it up and caches it), a job that is not found (404), a key over
its rate limit (429, checked after the read so a request handed over takes one token, not two) and a database
error (503 there).
"""

from __future__ import annotations

import time

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import ApiKeys
from .errors import ApiError
from .observability import Telemetry
from .reads import Reads
from .routes.jobs import retrieve_job

PREFIX = "/v1/fine_tuning/jobs/"
ROUTE = "/v1/fine_tuning/jobs/{job_id}"
"""The route template the regular route is counted under (``observability.route_template``)."""


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
    return None


class FastJobReads:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, reads: Reads, telemetry: Telemetry) -> None:
        self.app, self.keys, self.reads, self.telemetry = app, keys, reads, telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]
                or not scope["path"].startswith(PREFIX)):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = await self._answer(scope)
        if response is None:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
        self.telemetry.observe("GET", ROUTE, 200, time.perf_counter() - started)

    async def _answer(self, scope: Scope) -> Response | None:
        """The route's response, or None to hand the request to the app."""
        job_id = scope["path"][len(PREFIX):]
        key = _bearer(scope)
        principal = None if not job_id or "/" in job_id or key is None else self.keys.cached(key)
        if principal is None:
            return None
        try:
            response = await retrieve_job(job_id, principal, self.reads)
        except ApiError:
            return None  # the regular route answers it (404, or 503 for a database error)
        if self.keys.limiter.check(principal.key_id) > 0:
            return None  # 429 there: an empty bucket stays empty
        return response
