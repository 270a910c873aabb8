"""Status changes users ask for (cancel, pause, resume), and the compare-and-set every status change is.

Every status change is a compare-and-set on the job row (``UPDATE … WHERE status IN (…)``), so API
replicas, reapers and workers can race safely: exactly one of them wins each transition. The worker's own
transitions (claim, finish) are in :mod:`sparsegrad_service.job_store`, the reaper's in
:mod:`sparsegrad_service.reaper`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from .enums import EventType, JobStatus
from .job_records import add_event
from .models import Job, utcnow


def compare_and_set(session: Session, job_id: str, from_statuses: Sequence[JobStatus], **values: Any) -> bool:
    """Update job ``job_id`` with ``values`` if its status is one of ``from_statuses``; whether it was."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(from_statuses)).values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def request_cancel(session: Session, job: Job) -> bool:
    """Queued/paused jobs are cancelled at once; running ones get the flag and go to ``cancelling``."""
    now = utcnow()
    if compare_and_set(session, job.id, [JobStatus.queued, JobStatus.paused, JobStatus.validating_files],
                       status=JobStatus.cancelled, finished_at=now, cancel_requested=True, phase=None):
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
