"""A job's typed events: pages in OpenAI's order (newest first) or chronologically, and a live
Server-Sent Events stream resumable with ``Last-Event-ID``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from sparsegrad_service.models import JobEvent
from sparsegrad_service.schemas import JobEventsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import ContextDep, CurrentTenant
from ..errors import ApiError
from ..event_stream import PING_S, job_events
from ..ownership import tenant_job
from ..serializers import EVENT_ID_PREFIX, event_object

router = APIRouter(prefix="/fine_tuning/jobs", tags=["events"], responses=error_responses(400, 401, 404))


def parse_event_id(value: str, param: str) -> int:
    """``ftevent-12`` or ``12`` → 12."""
    raw = value.strip().removeprefix(EVENT_ID_PREFIX)
    if not raw.isdigit():
        raise ApiError(400, f"Invalid {param} '{value}': expected an event id like '{EVENT_ID_PREFIX}42'.",
                       param=param, code="invalid_cursor")
    return int(raw)


@router.get("/{job_id}/events", response_model=JobEventsPublic)
async def list_events(
    job_id: str, tenant: CurrentTenant, context: ContextDep,
    after: Annotated[str | None, Query(description="Event id of the previous page's last event.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size, 1-1000. Default 20.")] = 20,
    order: Annotated[Literal["desc", "asc"], Query(
        description="`desc` (default, like OpenAI): newest first, `after` pages to older events; "
                    "`asc`: chronological, `after` pages to newer events.")] = "desc",
) -> JobEventsPublic:
    """List a job's events (message, phase, metrics, checkpoint, error)."""
    seq = None if after is None else parse_event_id(after, "after")
    return await context.read(lambda session: _list_events(session, tenant.id, job_id, seq, limit, order))


def _list_events(session: Session, tenant_id: str, job_id: str, after: int | None, limit: int,
                 order: Literal["desc", "asc"]) -> JobEventsPublic:
    tenant_job(session, tenant_id, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.seq < after if order == "desc" else JobEvent.seq > after)
    query = query.order_by(JobEvent.seq.desc() if order == "desc" else JobEvent.seq.asc())
    rows = list(session.scalars(query.limit(limit + 1)))
    return JobEventsPublic(data=[event_object(r) for r in rows[:limit]], has_more=len(rows) > limit)


@router.get("/{job_id}/events/stream", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}})
async def stream_events(
    job_id: str, tenant: CurrentTenant, context: ContextDep,
    after: Annotated[str | None, Query(description="Start after this event id (`Last-Event-ID` wins).")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description="Resume after this event.")] = None,
) -> EventSourceResponse:
    """Stream a job's events live, chronologically; `event: end` follows the last one of a finished job."""
    cursor = last_event_id if last_event_id else after
    start = parse_event_id(cursor, "Last-Event-ID" if last_event_id else "after") if cursor else 0
    await context.read(lambda session: tenant_job(session, tenant.id, job_id))
    return EventSourceResponse(job_events(context, job_id, start), ping=PING_S,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
