"""Liveness, readiness (database schema and broker reachable) and Prometheus metrics; no API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from sparsegrad_service.queue import JobQueue

from ..deps import QueueDep, SessionDep

router = APIRouter(tags=["health"])


def _short(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return f"error: {type(exc).__name__}" + (f": {lines[0][:200]}" if lines else "")


def check_database(session: Session) -> str:
    """The database of the write session answers and has the schema."""
    try:
        conn = session.connection()
        conn.execute(text("SELECT 1"))
        if not inspect(conn).has_table("jobs"):
            return "error: the schema is missing (run the migrations first)"
    except Exception as exc:
        return _short(exc)
    return "ok"


def check_broker(queue: JobQueue) -> str:
    try:
        _ = queue.app  # configuring the app creates the filesystem broker's folders
        queue.ping()
    except Exception as exc:
        return _short(exc)
    return "ok"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: the failing dependency is named."}})
def readyz(session: SessionDep, queue: QueueDep, response: Response) -> dict[str, str]:
    """Ready to serve: the database answers and has the schema, and the broker is reachable."""
    checks = {"database": check_database(session), "broker": check_broker(queue)}
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
    return {"status": "ready" if ready else "unavailable", **checks}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route, jobs per status, queue depth."""
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
