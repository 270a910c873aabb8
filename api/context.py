"""What one app instance shares across requests: its settings and, created on first use (never at import),
the SQL session factory, the local artifact store, the job queue, the model registry and the worker token."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from sparsegrad_service.db import get_engine, session_factory
from sparsegrad_service.keys import KeyCache
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.ratelimit import RateLimiter
from sparsegrad_service.registry import RegisteredModel, model_registry
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore

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
        return create_async_engine(url, pool_size=10, max_overflow=20, isolation_level="AUTOCOMMIT")

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
