"""Status changes users ask for (cancel, pause, resume), and the compare-and-set every status change is.

Every status change is a compare-and-set on the job row (``UPDATE … WHERE status IN (…)``), so API
replicas, reapers and workers can race safely: exactly one of them wins each transition. The worker's own
transitions (claim, finish) are in :mod:`sparsegrad_service.job_store`, the reaper's in
:mod:`sparsegrad_service.reaper`. Every one of them that ends a job goes through :func:`end_job`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from .enums import EventType, JobStatus
from .job_records import add_event
from .models import Job, utcnow
from .retention import CheckpointRetention
from .webhooks import record_job_event


def compare_and_set(session: Session, job_id: str, from_statuses: Sequence[JobStatus], **values: Any) -> bool:
    """Update job ``job_id`` with ``values`` if its status is one of ``from_statuses``; whether it was."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(from_statuses)).values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def end_job(session: Session, job_id: str, status: JobStatus, retention: CheckpointRetention | None,
            *where: ColumnElement[bool], **values: Any) -> bool:
    """The one way a job reaches a terminal status (the worker's finish, a cancel, the reaper): update job
    ``job_id`` to ``status`` (finished now, no phase, estimate or pending pause) with ``values`` if ``where``
    holds, and in the same transaction drop the checkpoints it does not keep (a succeeded job keeps its newest
    ``retention.keep`` checkpoint models, a job that ended otherwise none; their keys collect in
    ``retention.dropped``, for the caller to delete once committed; ``None`` keeps them all), and write
    the job's webhook event to the outbox (:func:`~sparsegrad_service.webhooks.record_job_event`). Returns
    whether the job changed."""
    assert status.terminal, status
    ended = {"finished_at": utcnow(), "phase": None, "estimated_finish": None, "pause_requested": False, **values}
    result = session.execute(update(Job).where(Job.id == job_id, *where).values(status=status, **ended)
                             .execution_options(synchronize_session=False))
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    if retention is not None:
        retention.apply(session, job_id, status)
    record_job_event(session, job_id, status, ended["finished_at"])
    return True


def request_cancel(session: Session, job: Job, retention: CheckpointRetention | None = None) -> bool:
    """Queued/paused jobs are cancelled at once (keeping ``retention``'s checkpoints); running ones get the
    flag and go to ``cancelling``."""
    if end_job(session, job.id, JobStatus.cancelled, retention,
               Job.status.in_([JobStatus.queued, JobStatus.paused, JobStatus.validating_files]),
               cancel_requested=True):
        add_event(session, job.id, EventType.message, "Job cancelled.")
        return True
    if compare_and_set(session, job.id, [JobStatus.running], status=JobStatus.cancelling, cancel_requested=True):
        add_event(session, job.id, EventType.message, "Cancellation requested; stopping after the current step.")
        return True
    return False


def request_pause(session: Session, job: Job) -> bool:
    """Running jobs checkpoint and stop at the next step; queued jobs are held back before they start."""
    if compare_and_set(session, job.id, [JobStatus.running, JobStatus.queued], pause_requested=True):
        add_event(session, job.id, EventType.message, "Pause requested; the job will checkpoint and stop.")
        if compare_and_set(session, job.id, [JobStatus.queued], status=JobStatus.paused):
            add_event(session, job.id, EventType.message, "Job paused before it started.")
        return True
    return False


def request_resume(session: Session, job: Job) -> bool:
    """A paused job goes back to the queue; it resumes from its last checkpoint."""
    if compare_and_set(session, job.id, [JobStatus.paused], status=JobStatus.queued, pause_requested=False,
                       queued_at=utcnow(), attempts=0):
        add_event(session, job.id, EventType.message, "Job resumed; queued again.")
        return True
    pending = session.execute(update(Job).where(  # a pause not reached yet: withdraw it
        Job.id == job.id, Job.status == JobStatus.running, Job.pause_requested.is_(True),
    ).values(pause_requested=False).execution_options(synchronize_session=False))
    if pending.rowcount:  # type: ignore[attr-defined]
        add_event(session, job.id, EventType.message, "Pause withdrawn.")
        return True
    return False
