"""ORM rows as the public JSON objects of the API (``FileObject``, ``JobPublic``, events, checkpoints...)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Row, Select, and_, bindparam, case, func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, aliased

from sparsegrad_service.enums import JobStatus
from sparsegrad_service.job_spec import JobSpec
from sparsegrad_service.models import Artifact, Checkpoint, File, Job, JobEvent, MetricPoint
from sparsegrad_service.schemas import (
    ArtifactPublic,
    CheckpointPublic,
    FileObject,
    JobError,
    JobEventPublic,
    JobPublic,
    MetricPointPublic,
)
from sparsegrad_service.schemas.jobs import PublicHyperparameters

from .timestamps import unix, unix_required

EVENT_ID_PREFIX = "ftevent-"


def file_object(row: File) -> FileObject:
    return FileObject(
        id=row.id, bytes=row.bytes, filename=row.filename, created_at=unix_required(row.created_at),
        purpose=row.purpose, status=row.status, num_examples=row.num_examples, format=row.format,
        task=row.task, label_names=row.label_names,
    )


def public_method(spec: JobSpec) -> dict[str, Any]:
    """``{"type": T, T: {its parameters}, "setting": ...}`` (OpenAI's shape) from the spec's method."""
    params = spec.method.model_dump(mode="json", exclude={"type", "setting"})
    kind = spec.method.type.value
    return {"type": kind, kind: params, "setting": spec.method.setting.value}


@dataclass(frozen=True)
class _PublicSpec:
    spec: JobSpec
    method: dict[str, Any]
    hyperparameters: PublicHyperparameters


_PUBLIC_SPECS: dict[str, _PublicSpec] = {}
_PUBLIC_SPECS_MAX = 10_000
_PUBLIC_SPECS_LOCK = threading.Lock()


def _public_spec(job_id: str, stored: dict[str, Any] | None) -> _PublicSpec:
    """The job's spec, read and shaped once per job: a spec never changes after the job is created, and reading
    it (pydantic) on every GET cost about a tenth of the GET-job route's throughput."""
    hit = _PUBLIC_SPECS.get(job_id)
    if hit is None:
        spec = JobSpec.from_stored(stored)
        hit = _PublicSpec(spec, public_method(spec), PublicHyperparameters(**dict(spec.hyperparameters)))
        with _PUBLIC_SPECS_LOCK:
            if len(_PUBLIC_SPECS) >= _PUBLIC_SPECS_MAX:
                _PUBLIC_SPECS.clear()
            _PUBLIC_SPECS[job_id] = hit
    return hit


def _job_error(error: dict[str, Any] | None) -> JobError | None:
    if not error:
        return None
    return JobError(code=error.get("code"), message=str(error.get("message") or error.get("code") or "failed"),
                    param=error.get("param"))


@functools.cache
def queue_position_column() -> Any:
    """1 + the number of jobs queued before this one, for a queued job (else NULL): a subquery of the
    statement that loads the job, so retrieving a job stays a single round trip. Built once, so the
    statement's compiled form is cached."""
    ahead = aliased(Job, name="jobs_ahead")
    count = (select(func.count(ahead.id))
             .where(ahead.status == JobStatus.queued, ahead.queued_at < Job.queued_at)
             .scalar_subquery())
    return case((and_(Job.status == JobStatus.queued, Job.queued_at.is_not(None)), count + 1), else_=None)


@functools.cache
def job_row_statement() -> Select[Any]:
    """One tenant's job by id: its columns under their attribute names and ``queue_position``, with bound
    parameters ``job_id`` and ``tenant_id``. Built once, so no statement is constructed and no cache key
    computed per request."""
    columns = [getattr(Job, attr.key).label(attr.key) for attr in sa_inspect(Job).column_attrs]
    return select(*columns, queue_position_column().label("queue_position")).where(
        Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


def _queue_position(session: Session, job: Job) -> int | None:
    if job.status != JobStatus.queued or job.queued_at is None:
        return None
    ahead = session.scalar(select(func.count(Job.id)).where(
        Job.status == JobStatus.queued, Job.queued_at < job.queued_at))
    return 1 + int(ahead or 0)


@functools.cache
def artifact_ids_statement() -> Any:
    return (select(Artifact.job_id, Artifact.id).where(Artifact.job_id.in_(bindparam("job_ids", expanding=True)))
            .order_by(Artifact.created_at, Artifact.id))


def job_objects(session: Session, jobs: Sequence[Job], positions: dict[str, int | None] | None = None
                ) -> list[JobPublic]:
    """Public objects of ``jobs``: one query for all their artifacts, and one per queued job whose position
    is not in ``positions``."""
    results: dict[str, list[str]] = {job.id: [] for job in jobs}
    if jobs:
        rows = session.execute(artifact_ids_statement(), {"job_ids": list(results)}).all()
        for job_id, artifact_id in rows:
            results[job_id].append(artifact_id)
    positions = positions or {}
    return [job_public(job, results[job.id],
                        positions[job.id] if job.id in positions else _queue_position(session, job))
            for job in jobs]


def job_object(session: Session, job: Job, position: int | Literal[False] | None = False) -> JobPublic:
    """``position``: the queue position when already loaded with the job (``queue_position_column``)."""
    return job_objects(session, [job], None if position is False else {job.id: position})[0]


def job_public(job: Job | Row[Any], result_files: list[str], queue_position: int | None) -> JobPublic:
    """``job``: the ORM object, or a row (or named tuple) of its columns under their attribute names."""
    public = _public_spec(job.id, job.spec)
    spec = public.spec
    return JobPublic(
        id=job.id, status=job.status, model=job.model, created_at=unix_required(job.created_at),
        started_at=unix(job.started_at), finished_at=unix(job.finished_at), error=_job_error(job.error),
        method=public.method, hyperparameters=public.hyperparameters, requested=spec.requested,
        training_file=job.training_file_id, validation_file=job.validation_file_id,
        trained_tokens=job.trained_tokens, result_files=result_files, fine_tuned_model=job.fine_tuned_model,
        estimated_finish=unix(job.estimated_finish), metadata=job.metadata_, seed=job.seed, suffix=job.suffix,
        organization_id=job.tenant_id, phase=job.phase, progress=float(job.progress or 0.0),
        queue_position=queue_position, task=spec.task, attempts=job.attempts,
        step=job.step, total_steps=job.total_steps, summary=job.summary,
        pause_requested=bool(job.pause_requested), validation_split=spec.validation_split,
        merge_model=spec.merge_model,
    )


def event_object(row: JobEvent) -> JobEventPublic:
    return JobEventPublic(id=f"{EVENT_ID_PREFIX}{row.seq}", created_at=unix_required(row.created_at),
                          level=row.level, message=row.message, type=row.type, data=row.data)


def metric_point(row: MetricPoint) -> MetricPointPublic:
    return MetricPointPublic(step=row.step, name=row.name, value=row.value, created_at=unix_required(row.created_at))


def checkpoint_object(row: Checkpoint) -> CheckpointPublic:
    return CheckpointPublic(
        id=row.id, created_at=unix_required(row.created_at),
        fine_tuned_model_checkpoint=f"{row.job_id}:ckpt-step-{row.step}", fine_tuning_job_id=row.job_id,
        metrics={**(row.metrics or {}), "step": row.step}, step_number=row.step,
    )


def artifact_object(row: Artifact) -> ArtifactPublic:
    return ArtifactPublic(id=row.id, kind=row.kind, filename=row.filename, bytes=row.bytes, sha256=row.sha256,
                          created_at=unix_required(row.created_at), fine_tuning_job_id=row.job_id)
