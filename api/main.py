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

from sparsegrad_service.settings import Settings, get_settings

from .context import ServiceContext
from .dashboard import mount_dashboard
from .errors import install_error_handlers
from .fast_reads import FastJobReads
from .observability import Telemetry, TelemetryMiddleware
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
    """The API for ``settings`` (default: read from the environment)."""
    context = ServiceContext(settings or get_settings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything imported so far lives as long as the process: keep it out of the garbage collector's
        # generations, so a full collection under load walks only request garbage (shorter pauses).
        gc.freeze()
        reaper = ReaperThread(context) if context.settings.run_reaper else None
        if reaper is not None:
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            context.engine.dispose()  # pooled connections only; the engine stays usable
            if "async_engine" in vars(context) and context.async_engine is not None:
                await context.async_engine.dispose()
            if "job_read_pool" in vars(context) and context.job_read_pool is not None:
                await context.job_read_pool.close()

    app = FastAPI(title="SparseGrad fine-tuning service", description=DESCRIPTION, version=_version(),
                  lifespan=lifespan)
    app.state.context = context
    app.state.telemetry = Telemetry(context)
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(health_router)
    app.include_router(internal_router)
    mount_dashboard(app)
    app.add_middleware(UploadLimitMiddleware, paths=frozenset({"/v1/files"}),
                       max_bytes=context.settings.max_upload_bytes)
    app.add_middleware(TelemetryMiddleware, telemetry=app.state.telemetry)
    app.add_middleware(FastJobReads, context=context, telemetry=app.state.telemetry)  # outermost: first to see requests
    return app


app = create_app()
