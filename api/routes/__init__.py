"""The routers: ``api_router`` (everything under ``/v1``), ``health_router`` and ``internal_router``."""

from fastapi import APIRouter

from . import (
    artifacts,
    checkpoints,
    defaults,
    events,
    files,
    inference,
    insight,
    jobs,
    metrics,
    models,
    storage,
    webhooks,
)
from .health import router as health_router
from .internal import router as internal_router

api_router = APIRouter(prefix="/v1")
for module in (files, models, defaults, jobs, insight, events, metrics, checkpoints, artifacts, storage, webhooks,
               inference):
    api_router.include_router(module.router)

__all__ = ["api_router", "health_router", "internal_router"]
