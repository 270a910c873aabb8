"""Fine-tuning jobs: create (validated, idempotent), list, retrieve, and the cancel / pause / resume / merge
requests. A transition the job's status does not allow is a 409 ``invalid_state``; asking for the state a
job is already in (cancel a cancelled job, pause a paused one, resume a queued one) returns it unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from sparsegrad_service.enums import ArtifactKind, EventType, JobStatus
from sparsegrad_service.job_records import add_event
from sparsegrad_service.models import Artifact, Job
from sparsegrad_service.schemas import JobCreate, JobPublic, JobsPublic
from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.transitions import request_cancel, request_pause, request_resume

from ..deps import ContextDep, CurrentTenant, SessionDep
from ..errors import ApiError, conflict, not_found
from ..job_submission import enqueue_or_warn, submit_job
from ..ownership import tenant_job
from ..serializers import (
    artifact_ids_statement,
    job_object,
    job_objects,
    job_public,
    job_row_statement,
    queue_position_column,
)

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning jobs"], responses=error_responses(400, 401, 404))


def invalid_state(job: Job, action: str) -> ApiError:
    return conflict(f"Cannot {action} job {job.id}: its status is '{job.status}'.", "invalid_state")


@router.post("", response_model=JobPublic, responses=error_responses(409))
def create_job(
    body: JobCreate, session: SessionDep, tenant: CurrentTenant, context: ContextDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="Same key and body: the same job again; same key, other body: 409.",
    )] = None,
) -> JobPublic:
    """Create a fine-tuning job: files are checked now, then the job is queued for a worker."""
    submission = submit_job(session, context, tenant.id, body, idempotency_key)
    return job_object(session, submission.job)


@router.get("", response_model=JobsPublic)
async def list_jobs(
    tenant: CurrentTenant, context: ContextDep,
    after: Annotated[str | None, Query(description="A job id: return the jobs created before it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100. Default 20.")] = 20,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
) -> JobsPublic:
    """List the tenant's jobs, newest first."""
    return await context.read(lambda session: _list_jobs(session, tenant.id, after, limit, status))


def _list_jobs(session: Session, tenant_id: str, after: str | None, limit: int, status: JobStatus | None) -> JobsPublic:
    query = select(Job, queue_position_column()).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if after is not None:
        cursor = session.scalar(select(Job).where(Job.id == after, Job.tenant_id == tenant_id))
        if cursor is None:
            raise ApiError(400, f"Invalid after: no such job '{after}'.", param="after", code="invalid_cursor")
        query = query.where(or_(Job.created_at < cursor.created_at,
                                (Job.created_at == cursor.created_at) & (Job.id < cursor.id)))
    rows = session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).all()
    page = rows[:limit]
    return JobsPublic(data=job_objects(session, [r[0] for r in page], {r[0].id: r[1] for r in page}),
                      has_more=len(rows) > limit)


@router.get("/{job_id}", response_model=JobPublic)
async def retrieve_job(job_id: str, tenant: CurrentTenant, context: ContextDep) -> Response:
    """Retrieve a job with its status, phase, progress and results."""
    jobs, artifacts = await context.rows((job_row_statement(), {"job_id": job_id, "tenant_id": tenant.id}),
                                         (artifact_ids_statement(), {"job_ids": [job_id]}))
    if not jobs:
        raise not_found("fine-tuning job", job_id, param="job_id")
    job = job_public(jobs[0], [a.id for a in artifacts], jobs[0].queue_position)
    # Already a validated JobPublic: serialize it once instead of letting FastAPI validate it again.
    return Response(job.model_dump_json(by_alias=True), media_type="application/json")


def _request(session: Session, job: Job, action: str, change: Callable[[Session, Job], bool]) -> Job:
    if not change(session, job):
        session.rollback()
        raise invalid_state(tenant_job(session, job.tenant_id, job.id, fresh=True), action)
    session.commit()
    return tenant_job(session, job.tenant_id, job.id, fresh=True)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=error_responses(409))
def cancel_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> JobPublic:
    """Cancel a job: queued and paused jobs at once, running ones after the current step."""
    job = tenant_job(session, tenant.id, job_id)
    if job.status not in (JobStatus.cancelled, JobStatus.cancelling):
        job = _request(session, job, "cancel", request_cancel)
    return job_object(session, job)


@router.post("/{job_id}/pause", response_model=JobPublic, responses=error_responses(409))
def pause_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> JobPublic:
    """Pause a job: a running one checkpoints and stops; a queued one is held back."""
    job = tenant_job(session, tenant.id, job_id)
    if not (job.status == JobStatus.paused or (job.status == JobStatus.running and job.pause_requested)):
        job = _request(session, job, "pause", request_pause)
    return job_object(session, job)


@router.post("/{job_id}/resume", response_model=JobPublic, responses=error_responses(409))
def resume_job(job_id: str, session: SessionDep, tenant: CurrentTenant, context: ContextDep) -> JobPublic:
    """Resume a paused job (queued again, it continues from its last checkpoint) or withdraw a pending pause."""
    job = tenant_job(session, tenant.id, job_id)
    if job.status != JobStatus.queued:
        job = _request(session, job, "resume", request_resume)
        if job.status == JobStatus.queued:
            enqueue_or_warn(session, context, job.id)
    return job_object(session, job)


@router.post("/{job_id}/merge", response_model=JobPublic, status_code=202, responses=error_responses(409, 503))
def merge_job(job_id: str, session: SessionDep, tenant: CurrentTenant, context: ContextDep,
              response: Response) -> JobPublic:
    """Ask a worker to merge a succeeded job's adapter into its base model (a `merged_model` artifact)."""
    job = tenant_job(session, tenant.id, job_id)
    if job.status != JobStatus.succeeded:
        raise conflict(f"Only a succeeded job can be merged; job {job.id} is '{job.status}'.", "invalid_state")
    merged = session.scalar(select(Artifact.id).where(Artifact.job_id == job.id,
                                                      Artifact.kind == str(ArtifactKind.merged_model)))
    if merged is not None:
        response.status_code = 200
        return job_object(session, job)
    try:
        context.queue.enqueue_merge(job.id)
    except Exception as exc:
        raise ApiError(503, f"The job queue is unreachable ({type(exc).__name__}); try again shortly.",
                       type="server_error", code="queue_unavailable") from exc
    add_event(session, job.id, EventType.message, "Merged model requested.")
    session.commit()
    return job_object(session, job)
