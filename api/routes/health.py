"""Liveness, readiness (database schema and broker reachable) and Prometheus metrics; no API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import inspect, text

from ..context import ServiceContext
from ..deps import ContextDep

router = APIRouter(tags=["health"])


def _short(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return f"error: {type(exc).__name__}" + (f": {lines[0][:200]}" if lines else "")


def check_database(context: ServiceContext) -> str:
    try:
        with context.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            if not inspect(conn).has_table("jobs"):
                return "error: the schema is missing (run the migrations first)"
    except Exception as exc:
        return _short(exc)
    return "ok"


def check_broker(context: ServiceContext) -> str:
    try:
        _ = context.queue.app  # configuring the app creates the filesystem broker's folders
        context.queue.ping()
    except Exception as exc:
        return _short(exc)
    return "ok"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: the failing dependency is named."}})
def readyz(context: ContextDep, response: Response) -> dict[str, str]:
    """Ready to serve: the database answers and has the schema, and the broker is reachable."""
    checks = {"database": check_database(context), "broker": check_broker(context)}
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
    return {"status": "ready" if ready else "unavailable", **checks}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route, jobs per status, queue depth."""
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
