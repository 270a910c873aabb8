"""Fine-tuning jobs: create (validated, idempotent), list, retrieve, delete (a finished one), and the cancel /
pause / resume / merge requests. A transition the job's status does not allow is a 409 ``invalid_state``;
asking for the state a job is already in (cancel a cancelled job, pause a paused one, resume a queued one)
returns it unchanged."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.datastructures import QueryParams

from sparsegrad_service.enums import ArtifactKind, EventType, JobStatus
from sparsegrad_service.job_records import add_event
from sparsegrad_service.models import Artifact, Job, utcnow
from sparsegrad_service.retention import CheckpointRetention, delete_job_records
from sparsegrad_service.schemas import JobCreate, JobDeleted, JobPublic, JobsPublic
from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.schemas.job_create import MAX_METADATA_KEY_CHARS, MAX_METADATA_KEYS
from sparsegrad_service.transitions import request_cancel, request_pause, request_resume

from ..deletion import refuse_while_merging, refuse_while_trained_on, remove_job_storage
from ..deps import CurrentTenant, QueueDep, ReadsDep, RegistryDep, SessionDep, SettingsDep, StoreDep
from ..errors import ApiError, conflict, not_found
from ..job_submission import enqueue_or_warn, submit_job
from ..ownership import read_job, tenant_job
from ..queries import job_statement, jobs_page
from ..reads import Reads
from ..serializers import job_public

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning jobs"], responses=error_responses(400, 401, 404))


def invalid_state(job: Job, action: str) -> ApiError:
    return conflict(f"Cannot {action} job {job.id}: its status is '{job.status}'.", "invalid_state")


async def find_job(reads: Reads, tenant_id: str, job_id: str) -> JobPublic:
    """The tenant's job as the API shows it (one statement); 404 when it has none by that id. Every route that
    answers a job answers this, and ``fast_reads`` serves ``GET /v1/fine_tuning/jobs/{id}`` with it too."""
    row = await reads.first(job_statement(), {"job_id": job_id, "tenant_id": tenant_id})
    if row is None:
        raise not_found("fine-tuning job", job_id, param="job_id")
    return job_public(row)


def job_response(job: JobPublic, status_code: int = 200) -> Response:
    """The job as JSON: already a validated ``JobPublic``, serialized once (FastAPI would validate it again)."""
    return Response(job.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")


def written_job(reads: Reads, job: Job, status_code: int = 200) -> Response:
    """From a write route (in a worker thread): the job it changed, committed, read like ``retrieve_job``."""
    return job_response(anyio.from_thread.run(find_job, reads, job.tenant_id, job.id), status_code)


@router.post("", response_model=JobPublic, responses=error_responses(409))
def create_job(
    body: JobCreate, session: SessionDep, reads: ReadsDep, tenant: CurrentTenant, settings: SettingsDep,
    registry: RegistryDep, store: StoreDep, queue: QueueDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="Same key and body: the same job again; same key, other body: 409.",
    )] = None,
) -> Response:
    """Create a fine-tuning job: files are checked now, then the job is queued for a worker."""
    submission = submit_job(session, tenant.id, body, idempotency_key, settings=settings, registry=registry,
                            store=store, queue=queue)
    return written_job(reads, submission.job)


def metadata_filter(query: QueryParams) -> dict[str, str]:
    """The ``metadata[key]=value`` pairs of a query string (what the OpenAI SDK sends for ``metadata={...}``)."""
    pairs: dict[str, str] = {}
    for name, value in query.multi_items():
        if not name.startswith("metadata["):
            continue
        key = name[len("metadata["):-1]
        if not name.endswith("]") or not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise ApiError(400, f"Invalid metadata filter {name!r}: write metadata[key]=value with a key of 1-"
                           f"{MAX_METADATA_KEY_CHARS} characters.", param=name, code="invalid_metadata_filter")
        if pairs.get(key, value) != value:
            raise ApiError(400, f"Invalid metadata filter: {name} is given twice with different values.", param=name,
                           code="invalid_metadata_filter")
        pairs[key] = value
    if len(pairs) > MAX_METADATA_KEYS:
        raise ApiError(400, f"Invalid metadata filter: at most {MAX_METADATA_KEYS} keys, got {len(pairs)}.",
                       param="metadata", code="invalid_metadata_filter")
    return pairs


@router.get("", response_model=JobsPublic)
async def list_jobs(
    request: Request, tenant: CurrentTenant, reads: ReadsDep,
    after: Annotated[str | None, Query(description="A job id: return the jobs created before it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100. Default 20.")] = 20,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
    metadata: Annotated[str | None, Query(description=(
        "OpenAI's metadata filter: `metadata[k]=v` (repeatable) keeps the jobs whose metadata has every such pair "
        "(`metadata[k]=` an empty value); `metadata=null` keeps the jobs without metadata. Not both."))] = None,
) -> JobsPublic:
    """List the tenant's jobs, newest first."""
    pairs = metadata_filter(request.query_params)
    if metadata is not None and (metadata != "null" or pairs):
        raise ApiError(400, f"Invalid metadata {metadata!r}: filter with metadata[key]=value, or metadata=null for "
                       "jobs without metadata (not both).", param="metadata", code="invalid_metadata_filter")
    cursor = None
    if after is not None:
        try:
            cursor = await read_job(reads, tenant.id, after)
        except ApiError:
            raise ApiError(400, f"Invalid after: no such job '{after}'.", param="after", code="invalid_cursor") from None
    rows = await reads.all(jobs_page(tenant.id, cursor, status, limit + 1, metadata=pairs,
                                     without_metadata=metadata == "null"))
    return JobsPublic(data=[job_public(r) for r in rows[:limit]], has_more=len(rows) > limit)


@router.get("/{job_id}", response_model=JobPublic)
async def retrieve_job(job_id: str, tenant: CurrentTenant, reads: ReadsDep) -> Response:
    """Retrieve a job with its status, phase, progress and results."""
    return job_response(await find_job(reads, tenant.id, job_id))


def _request(session: Session, job: Job, action: str, change: Callable[[Session, Job], bool]) -> Job:
    if not change(session, job):
        session.rollback()
        raise invalid_state(tenant_job(session, job.tenant_id, job.id, fresh=True), action)
    session.commit()
    return tenant_job(session, job.tenant_id, job.id, fresh=True)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=error_responses(409))
def cancel_job(job_id: str, session: SessionDep, reads: ReadsDep, tenant: CurrentTenant, settings: SettingsDep,
               store: StoreDep) -> Response:
    """Cancel a job: queued and paused jobs at once, running ones after the current step."""
    job = tenant_job(session, tenant.id, job_id)
    if job.status not in (JobStatus.cancelled, JobStatus.cancelling):
        retention = CheckpointRetention(settings.keep_finished_checkpoints)
        job = _request(session, job, "cancel", partial(request_cancel, retention=retention))
        retention.delete_dropped(store)
    return written_job(reads, job)


@router.post("/{job_id}/pause", response_model=JobPublic, responses=error_responses(409))
def pause_job(job_id: str, session: SessionDep, reads: ReadsDep, tenant: CurrentTenant) -> Response:
    """Pause a job: a running one checkpoints and stops; a queued one is held back."""
    job = tenant_job(session, tenant.id, job_id)
    if not (job.status == JobStatus.paused or (job.status == JobStatus.running and job.pause_requested)):
        job = _request(session, job, "pause", request_pause)
    return written_job(reads, job)


@router.post("/{job_id}/resume", response_model=JobPublic, responses=error_responses(409))
def resume_job(job_id: str, session: SessionDep, reads: ReadsDep, tenant: CurrentTenant, queue: QueueDep) -> Response:
    """Resume a paused job (queued again, it continues from its last checkpoint) or withdraw a pending pause."""
    job = tenant_job(session, tenant.id, job_id)
    if job.status != JobStatus.queued:
        job = _request(session, job, "resume", request_resume)
        if job.status == JobStatus.queued:
            enqueue_or_warn(session, queue, job.id)
    return written_job(reads, job)


@router.post("/{job_id}/merge", response_model=JobPublic, status_code=202, responses=error_responses(409, 503))
def merge_job(job_id: str, session: SessionDep, reads: ReadsDep, tenant: CurrentTenant, queue: QueueDep) -> Response:
    """Ask a worker to merge a succeeded job's adapter into its base model (a `merged_model` artifact)."""
    job = tenant_job(session, tenant.id, job_id)
    if job.status != JobStatus.succeeded:
        raise conflict(f"Only a succeeded job can be merged; job {job.id} is '{job.status}'.", "invalid_state")
    if job.model_deleted_at is not None:
        raise conflict(f"The fine-tuned model of job {job.id} was deleted; there is nothing to merge.",
                       "model_deleted")
    merged = session.scalar(select(Artifact.id).where(Artifact.job_id == job.id,
                                                      Artifact.kind == str(ArtifactKind.merged_model)))
    if merged is not None:
        return written_job(reads, job)
    # the request is recorded before a worker can see the message; it keeps the model from being deleted
    requested = utcnow()
    pending = update(Job).where(Job.id == job.id, Job.model_deleted_at.is_(None))
    if not session.execute(pending.values(merge_requested_at=requested)).rowcount:  # type: ignore[attr-defined]
        raise not_found("fine-tuning job", job_id, param="job_id")  # deleted meanwhile
    session.commit()
    try:
        queue.enqueue_merge(job.id)
    except Exception as exc:
        session.execute(pending.where(Job.merge_requested_at == requested).values(merge_requested_at=None))
        session.commit()
        raise ApiError(503, f"The job queue is unreachable ({type(exc).__name__}); try again shortly.",
                       type="server_error", code="queue_unavailable") from exc
    add_event(session, job.id, EventType.message, "Merged model requested.")
    session.commit()
    return written_job(reads, job, status_code=202)


@router.delete("/{job_id}", response_model=JobDeleted, responses=error_responses(409))
def delete_job(job_id: str, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep,
               store: StoreDep) -> JobDeleted:
    """Delete a finished job with its checkpoints, artifacts (its fine-tuned model too), events and metrics;
    its files stay. A job that has not finished is refused (409): cancel it first."""
    job = tenant_job(session, tenant.id, job_id, lock=True)
    if not job.status.terminal:
        raise conflict(f"Cannot delete job {job.id}: its status is '{job.status}'; only a succeeded, failed or "
                       "cancelled job can be deleted (cancel it first).", "invalid_state")
    refuse_while_merging(job, f"job {job.id}")
    refuse_while_trained_on(session, job, f"job {job.id}")
    keys = delete_job_records(session, job.id)
    session.commit()
    remove_job_storage(store, settings, job.id, keys)
    return JobDeleted(id=job_id)
