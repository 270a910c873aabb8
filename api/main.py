"""Assembles the FastAPI app: routers, error handlers, middleware and the lifespan (reaper thread).

``app = create_app()`` reads the settings from the environment and touches neither the database nor the
broker at import; the schema is created by the migrations (the CLI runs them), and ``/readyz`` fails while
it is missing.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from sqlalchemy.orm import Session

from sparsegrad_service.db import get_engine, session_factory
from sparsegrad_service.keys import KeyCache
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.ratelimit import RateLimiter
from sparsegrad_service.registry import model_registry
from sparsegrad_service.settings import Settings, get_settings
from sparsegrad_service.store import LocalArtifactStore

from .auth import ApiKeys
from .dashboard import mount_dashboard
from .errors import install_error_handlers
from .fast_reads import FastJobReads
from .inference_proxy import InferenceProxy
from .observability import Telemetry, TelemetryMiddleware
from .reads import reads_for
from .reaper import ReaperThread
from .routes import api_router, health_router, internal_router
from .upload_limit import UploadLimitMiddleware

DESCRIPTION = """\
Fine-tune transformer models with **SparseGrad** (selective sparse training of the MLP blocks), LoRA,
MeProp or full fine-tuning. The API mirrors OpenAI's fine-tuning API, so its SDK works unchanged:
upload a dataset (`POST /v1/files`), create a job (`POST /v1/fine_tuning/jobs`), follow its events
(`GET /v1/fine_tuning/jobs/{id}/events/stream`, Server-Sent Events) and download its adapter
(`GET /v1/artifacts/{id}/content`).

Every `/v1` route needs `Authorization: Bearer <API key>` (`sparsegrad keys create --tenant NAME`).
Errors are `{"error": {"message", "type", "param", "code"}}`.
"""


def _version() -> str:
    try:
        return version("sparsegrad")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: read from the environment). What routes depend on (``deps.py``) is
    built here, once, and kept on ``app.state``; nothing connects to anything before its first use."""
    settings = settings or get_settings()

    def sessions() -> Session:
        """A new ORM session, for writes (the engine is created on first use)."""
        return session_factory(settings.sql_url)()

    reads = reads_for(settings.sql_url, settings.db_read_pool)
    queue = JobQueue(settings)
    keys = ApiKeys(reads, sessions, KeyCache(settings.api_key_cache_s),
                   RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst))
    telemetry = Telemetry(reads, queue)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything imported so far lives as long as the process: keep it out of the garbage collector's
        # generations, so a full collection under load walks only request garbage (shorter pauses).
        gc.freeze()
        reaper = ReaperThread(settings, queue, _app.state.store) if settings.run_reaper else None
        if reaper is not None:
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            get_engine(settings.sql_url).dispose()  # pooled connections only; the engine stays usable
            await reads.close()
            await _app.state.inference.aclose()

    app = FastAPI(title="SparseGrad fine-tuning service", description=DESCRIPTION, version=_version(),
                  lifespan=lifespan)
    state = app.state
    state.settings, state.sessions, state.reads, state.queue, state.api_keys = settings, sessions, reads, queue, keys
    state.store = LocalArtifactStore(settings.artifact_root)  # the API owns it; remote workers use /internal/store
    state.registry = model_registry(settings)
    state.telemetry = telemetry
    state.inference = InferenceProxy(settings)  # the inference server's client (opened on first use)
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(health_router)
    app.include_router(internal_router)
    mount_dashboard(app)
    app.add_middleware(UploadLimitMiddleware, paths=frozenset({"/v1/files"}), max_bytes=settings.max_upload_bytes)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
    app.add_middleware(FastJobReads, keys=keys, reads=reads, telemetry=telemetry)  # outermost: sees requests first
    return app


app = create_app()
