"""What one app instance shares across requests: its settings and, created on first use (never at import),
the SQL session factory, the local artifact store, the job queue, the model registry and the worker token."""

from __future__ import annotations

import time
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from sparsegrad_service.db import get_engine, session_factory
from sparsegrad_service.keys import KeyCache
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.registry import RegisteredModel, model_registry
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore


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
