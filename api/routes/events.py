"""A job's typed events: pages in OpenAI's order (newest first) or chronologically, and a live
Server-Sent Events stream resumable with ``Last-Event-ID``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from sparsegrad_service.models import MAX_BIGINT
from sparsegrad_service.schemas import JobEventsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import ApiKeysDep, CurrentTenant, ReadsDep, SettingsDep
from ..errors import ApiError
from ..event_stream import PING_S, job_events
from ..ownership import read_job
from ..queries import events_page
from ..serializers import EVENT_ID_PREFIX, event_object

router = APIRouter(prefix="/fine_tuning/jobs", tags=["events"], responses=error_responses(400, 401, 404))


def parse_event_id(value: str, param: str) -> int:
    """``ftevent-12`` or ``12`` → 12."""
    raw = value.strip().removeprefix(EVENT_ID_PREFIX)
    if not raw.isdigit() or int(raw) > MAX_BIGINT:
        raise ApiError(400, f"Invalid {param} '{value[:40]}': expected an event id like '{EVENT_ID_PREFIX}42' "
                       f"(at most {EVENT_ID_PREFIX}{MAX_BIGINT}).", param=param, code="invalid_cursor")
    return int(raw)


@router.get("/{job_id}/events", response_model=JobEventsPublic)
async def list_events(
    job_id: str, tenant: CurrentTenant, reads: ReadsDep,
    after: Annotated[str | None, Query(description="Event id of the previous page's last event.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size, 1-1000. Default 20.")] = 20,
    order: Annotated[Literal["desc", "asc"], Query(
        description="`desc` (default, like OpenAI): newest first, `after` pages to older events; "
                    "`asc`: chronological, `after` pages to newer events.")] = "desc",
) -> JobEventsPublic:
    """List a job's events (message, phase, metrics, checkpoint, error)."""
    seq = None if after is None else parse_event_id(after, "after")
    await read_job(reads, tenant.id, job_id)
    rows = await reads.all(events_page(job_id, seq, order, limit + 1))
    return JobEventsPublic(data=[event_object(r) for r in rows[:limit]], has_more=len(rows) > limit)


@router.get("/{job_id}/events/stream", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}})
async def stream_events(
    job_id: str, tenant: CurrentTenant, reads: ReadsDep, settings: SettingsDep, keys: ApiKeysDep,
    after: Annotated[str | None, Query(description="Start after this event id (`Last-Event-ID` wins).")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description="Resume after this event.")] = None,
) -> EventSourceResponse:
    """Stream a job's events live, chronologically; `event: end` follows the last one of a finished job.
    If the stream's API key is revoked, `event: revoked` (an error body) ends it within the key-cache time."""
    cursor = last_event_id if last_event_id else after
    start = parse_event_id(cursor, "Last-Event-ID" if last_event_id else "after") if cursor else 0
    await read_job(reads, tenant.id, job_id)
    events = job_events(reads, settings.redis_url, job_id, start, key_valid=lambda: keys.still_valid(tenant),
                        key_check_s=settings.api_key_cache_s)
    return EventSourceResponse(events, ping=PING_S,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
