"""The hot read path: ``GET /v1/fine_tuning/jobs/{id}`` answered before the framework, on PostgreSQL.

Clients poll this route more than any other, so its happy path skips FastAPI's routing, dependency solving and
validation and SQLAlchemy's execution layer: the key comes from the process's key cache, the rate limit is
checked, and one prepared statement — compiled once from the same SQLAlchemy expressions the regular route
uses, with the artifact ids aggregated in the same query — runs on a ``psycopg_pool`` connection; the body is
the same ``JobPublic`` the regular route returns.

Everything else takes the regular route, which then answers exactly as before: another method or path, a
query string, SQLite, a key not in the cache (the regular route looks it up and caches it), a key over its
rate limit (429), a job that is not found (404), and any database error (503 there, or the answer once the
database is back).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Receive, Scope, Send

from sparsegrad_service.keys import KEY_PREFIX, hash_key
from sparsegrad_service.models import Artifact, Job

from .context import ServiceContext
from .observability import Telemetry
from .serializers import job_public, job_row_statement

log = logging.getLogger("sparsegrad.api")

PREFIX = "/v1/fine_tuning/jobs/"
ROUTE = "/v1/fine_tuning/jobs/{job_id}"
"""The route template the regular route is counted under (``observability.route_template``)."""


@functools.cache
def job_query() -> tuple[str, dict[str, Any]]:
    """``(SQL, constant parameters)`` of the job's columns (under their attribute names), its queue position
    and its artifact ids in creation order, for ``job_id`` and ``tenant_id``."""
    artifacts = (select(func.array_agg(aggregate_order_by(Artifact.id, Artifact.created_at, Artifact.id)))
                 .where(Artifact.job_id == Job.id).scalar_subquery())
    statement = job_row_statement().add_columns(artifacts.label("result_files"))
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())  # type: ignore[attr-defined]
    constants = {k: v for k, v in compiled.params.items() if k not in ("job_id", "tenant_id")}
    return str(compiled), constants


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
    return None


class JobReadPool:
    """The psycopg connection pool of the fast path, opened on first use in the serving event loop."""

    def __init__(self, sql_url: str, size: int) -> None:
        self.conninfo = make_url(sql_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self.pool: AsyncConnectionPool | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def get(self) -> AsyncConnectionPool | None:
        """The pool, or None when it belongs to another event loop (test clients run one per lifespan)."""
        loop = asyncio.get_running_loop()
        if self.pool is None:
            pool = AsyncConnectionPool(self.conninfo, min_size=min(4, self.size), max_size=self.size, open=False,
                                       timeout=5, kwargs={"autocommit": True, "prepare_threshold": 0,
                                               "row_factory": namedtuple_row})
            await pool.open()
            if self.pool is None:
                self.pool, self.loop = pool, loop
            else:  # another request opened one meanwhile
                await pool.close()
        return self.pool if self.loop is loop else None

    async def close(self) -> None:
        if self.pool is not None and self.loop is asyncio.get_running_loop():
            await self.pool.close()
        self.pool = self.loop = None


class FastJobReads:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, context: ServiceContext, telemetry: Telemetry) -> None:
        self.app, self.context, self.telemetry = app, context, telemetry
        self.reads = context.job_read_pool  # None off PostgreSQL

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.reads is None or scope["type"] != "http" or scope["method"] != "GET"
                or scope["query_string"] or not scope["path"].startswith(PREFIX)):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body = await self._body(scope)
        if body is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        self.telemetry.observe("GET", ROUTE, 200, time.perf_counter() - started)

    async def _body(self, scope: Scope) -> bytes | None:
        job_id = scope["path"][len(PREFIX):]
        key = _bearer(scope)
        if not job_id or "/" in job_id or len(job_id) > 64 or key is None or not key.startswith(KEY_PREFIX) \
                or len(key) > 200:
            return None
        principal = self.context.key_cache.get(hash_key(key))
        if principal is None:
            return None
        assert self.reads is not None
        try:
            pool = await self.reads.get()
            if pool is None:
                return None
            sql, constants = job_query()
            async with pool.connection() as conn:
                cursor = await conn.execute(sql, {**constants, "job_id": job_id, "tenant_id": principal.id},
                                            prepare=True)
                row: Any = await cursor.fetchone()  # a named tuple of the selected labels
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            log.warning("fast job read failed (%s); the regular route answers", exc)
            return None
        if row is None or self.context.rate_limiter.check(principal.key_id) > 0:
            return None  # the regular route answers 404 or 429 (an empty bucket stays empty)
        job = job_public(row, list(row.result_files or []), row.queue_position)
        return job.model_dump_json(by_alias=True).encode()
