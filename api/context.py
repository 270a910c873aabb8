"""What one app instance shares across requests: its settings and, created on first use (never at import),
the SQL session factory, the local artifact store, the job queue, the model registry and the worker token."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine, Executable, Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from sparsegrad_service.db import get_engine, session_factory
from sparsegrad_service.keys import KeyCache
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.ratelimit import RateLimiter
from sparsegrad_service.registry import RegisteredModel, model_registry
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore

if TYPE_CHECKING:
    from .fast_reads import JobReadPool

T = TypeVar("T")


class ServiceContext:
    """Per-app state; every attribute is lazy so building the app touches neither the DB nor the broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = int(time.time())

    @property
    def engine(self) -> Engine:
        return get_engine(self.settings.sql_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.settings.sql_url)

    @cached_property
    def async_engine(self) -> AsyncEngine | None:
        """PostgreSQL only: an asyncio engine for the hot read routes (see ``read``)."""
        url = self.settings.sql_url
        if not url.startswith("postgresql+psycopg"):
            return None
        # Reads only: autocommit spares the BEGIN and ROLLBACK round trips of every request. No pre-ping
        # either: a connection found dead answers 503 once and the pool is invalidated (SQLAlchemy's
        # disconnect handling), so the next request reconnects.
        # A fixed pool and no overflow: requests beyond ``db_read_pool`` wait for a pooled connection (on the
        # event loop, cheaply) instead of opening and closing one each, which costs both processes far more.
        return create_async_engine(url, pool_size=self.settings.db_read_pool, max_overflow=0, pool_timeout=30,
                                   isolation_level="AUTOCOMMIT")

    @cached_property
    def job_read_pool(self) -> JobReadPool | None:
        """PostgreSQL only: the connection pool of the fast ``GET /v1/fine_tuning/jobs/{id}`` path."""
        from .fast_reads import JobReadPool

        url = self.settings.sql_url
        return JobReadPool(url, self.settings.db_read_pool) if url.startswith("postgresql+psycopg") else None

    @cached_property
    def async_sessions(self) -> async_sessionmaker[AsyncSession] | None:
        engine = self.async_engine
        return None if engine is None else async_sessionmaker(engine, expire_on_commit=False)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` with a session of its own and close it. For reads (each statement
        commits on its own on PostgreSQL) and single-statement writes.

        On PostgreSQL the session is an ``AsyncSession`` driving the same synchronous ORM code on the event
        loop (its I/O awaited, no worker thread); otherwise ``work`` runs in a worker thread."""
        factory = self.async_sessions
        if factory is None:
            return await anyio.to_thread.run_sync(self._read_sync, work)
        async with factory() as session:
            return await session.run_sync(work)

    def _read_sync(self, work: Callable[[Session], T]) -> T:
        with self.sessions() as session:
            return work(session)

    async def rows(self, *queries: tuple[Executable, dict[str, Any]]) -> list[Sequence[Row[Any]]]:
        """The rows of each ``(statement, parameters)``, read on one connection without an ORM session (no
        identity map, no transaction object): the cheapest read there is, for the hottest routes. Selected
        ORM attributes come back under their attribute names."""
        engine = self.async_engine
        if engine is None:
            return await anyio.to_thread.run_sync(self._rows_sync, queries)
        async with engine.connect() as conn:
            return [(await conn.execute(statement, params)).all() for statement, params in queries]

    def _rows_sync(self, queries: tuple[tuple[Executable, dict[str, Any]], ...]) -> list[Sequence[Row[Any]]]:
        with self.engine.connect() as conn:
            return [conn.execute(statement, params).all() for statement, params in queries]

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit_per_minute, self.settings.rate_limit_burst)

    @cached_property
    def key_cache(self) -> KeyCache:
        return KeyCache(self.settings.api_key_cache_s)

    @cached_property
    def store(self) -> LocalArtifactStore:
        """The API owns the artifact directory; remote workers reach it through ``/internal/store``."""
        return LocalArtifactStore(self.settings.artifact_root)

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.settings)

    @cached_property
    def registry(self) -> dict[str, RegisteredModel]:
        return model_registry(self.settings)

    @cached_property
    def worker_token(self) -> str:
        return self.settings.worker_secret()
