"""The reaper: requeues (or fails) jobs whose worker died, and re-sends queued jobs whose message was lost.

Each change is a compare-and-set on the row it read (same status, same attempts), so several reapers (one
per API replica) and a worker that comes back can race safely.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from .enums import EventLevel, EventType, JobStatus
from .job_records import add_event
from .models import Job, utcnow
from .settings import Settings


def reap_stale_jobs(
    engine: Engine, settings: Settings, enqueue: Callable[[str], Any], *, now: datetime | None = None,
    queue_depth: Callable[[], int | None] | None = None,
) -> list[tuple[str, str]]:
    """Requeue running jobs whose heartbeat is older than ``heartbeat_timeout_s`` (their worker died), or
    fail them once they used ``max_attempts`` (a job dying while ``cancelling`` ends ``cancelled``).

    Queued jobs unclaimed for ``resend_after_s`` are re-sent only when ``queue_depth()`` says the broker queue
    is empty (their message was lost, e.g. a broker restart without persistence): busy workers are not a
    reason to send duplicates, and ``queued_at`` (the queue order) is kept. Returns
    ``[(job_id, "requeued" | "failed" | "cancelled" | "resent")]``."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.heartbeat_timeout_s)
    done: list[tuple[str, str]] = []
    with Session(engine) as session:
        stale = session.execute(
            select(Job.id, Job.attempts, Job.max_attempts, Job.status, Job.heartbeat_at).where(
                Job.status.in_([JobStatus.running, JobStatus.cancelling]),
                func.coalesce(Job.heartbeat_at, Job.started_at) < cutoff,
            )
        ).all()
        for row in stale:
            cond = [Job.id == row.id, Job.status == row.status, Job.attempts == row.attempts]
            if row.status == JobStatus.cancelling:
                values: dict[str, Any] = {"status": JobStatus.cancelled, "finished_at": now, "phase": None}
                outcome, message = "cancelled", "The worker stopped responding while cancelling; job cancelled."
            elif row.attempts >= row.max_attempts:
                values = {"status": JobStatus.failed, "finished_at": now, "phase": None, "error": {
                    "code": "worker_lost", "param": None,
                    "message": f"The worker running this job stopped responding {row.attempts} times "
                               f"(no heartbeat for {settings.heartbeat_timeout_s:.0f} s); giving up after "
                               f"{row.max_attempts} attempts."}}
                outcome, message = "failed", values["error"]["message"]
            else:
                values = {"status": JobStatus.queued, "queued_at": now, "worker_id": None, "phase": None}
                outcome = "requeued"
                message = (f"The worker stopped responding (attempt {row.attempts} of {row.max_attempts}); "
                           "requeued, it will resume from its last checkpoint.")
            result = session.execute(update(Job).where(*cond).values(**values)
                                     .execution_options(synchronize_session=False))
            if result.rowcount:  # type: ignore[attr-defined]
                level = EventLevel.error if outcome == "failed" else EventLevel.warn  # requeued, cancelled
                add_event(session, row.id, EventType.error if outcome == "failed" else EventType.message,
                          message, level=level, data={"attempts": row.attempts})
                session.commit()
                if outcome == "requeued":
                    enqueue(row.id)
                done.append((row.id, outcome))
        # queued for a long time with no worker claim although it was sent: re-send (claim is idempotent)
        lost_cutoff = now - timedelta(seconds=settings.resend_after_s)
        waiting = session.scalars(
            select(Job.id).where(Job.status == JobStatus.queued, Job.queued_at < lost_cutoff)
            .order_by(Job.queued_at)
        ).all()
        if waiting and queue_depth is not None and queue_depth() == 0:
            for job_id in waiting:
                enqueue(job_id)
                done.append((job_id, "resent"))
    return done
