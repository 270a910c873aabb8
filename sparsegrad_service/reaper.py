"""The reaper: requeues (or fails) jobs whose worker died, and re-sends queued jobs whose message was lost.

Each change is a compare-and-set on the row it read (same status, same attempts), so several reapers (one
per API replica) and a worker that comes back can race safely. A job the reaper ends keeps
``Settings.keep_finished_checkpoints`` checkpoints, like every job that ends.
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
from .retention import CheckpointRetention
from .settings import Settings
from .store import ArtifactStore
from .transitions import end_job


def reap_stale_jobs(
    engine: Engine, settings: Settings, enqueue: Callable[[str], Any], *, now: datetime | None = None,
    queue_depth: Callable[[], int | None] | None = None, store: ArtifactStore | None = None,
    enqueue_merge: Callable[[str], Any] | None = None,
) -> list[tuple[str, str]]:
    """Requeue running jobs whose heartbeat is older than ``heartbeat_timeout_s`` (their worker died), or
    fail them once they used ``max_attempts`` (a job dying while ``cancelling`` ends ``cancelled``).

    Queued jobs unclaimed for ``resend_after_s`` are re-sent only when ``queue_depth()`` says the broker queue
    is empty (their message was lost, e.g. a broker restart without persistence): busy workers are not a
    reason to send duplicates, and ``queued_at`` (the queue order) is kept. Merge requests waiting that long
    are re-sent through ``enqueue_merge`` on the same condition (a lost message would otherwise keep the job and
    its model undeletable); the request is renewed, so only the re-sent merge ends it. A job failed or cancelled
    here loses its checkpoints beyond the retention, from ``store`` too (without a store, it keeps them all).
    Returns ``[(job_id, "requeued" | "failed" | "cancelled" | "resent" | "merge resent")]``."""
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
            cond = [Job.status == row.status, Job.attempts == row.attempts]
            retention = CheckpointRetention(settings.keep_finished_checkpoints) if store is not None else None
            if row.status == JobStatus.cancelling:
                outcome, message = "cancelled", "The worker stopped responding while cancelling; job cancelled."
                changed = end_job(session, row.id, JobStatus.cancelled, retention, *cond, finished_at=now)
            elif row.attempts >= row.max_attempts:
                error: dict[str, Any] = {
                    "code": "worker_lost", "param": None,
                    "message": f"The worker running this job stopped responding {row.attempts} times "
                               f"(no heartbeat for {settings.heartbeat_timeout_s:.0f} s); giving up after "
                               f"{row.max_attempts} attempts."}
                outcome, message = "failed", error["message"]
                changed = end_job(session, row.id, JobStatus.failed, retention, *cond, error=error, finished_at=now)
            else:
                outcome = "requeued"
                message = (f"The worker stopped responding (attempt {row.attempts} of {row.max_attempts}); "
                           "requeued, it will resume from its last checkpoint.")
                changed = bool(session.execute(update(Job).where(Job.id == row.id, *cond).values(
                    status=JobStatus.queued, queued_at=now, worker_id=None, phase=None,
                ).execution_options(synchronize_session=False)).rowcount)  # type: ignore[attr-defined]
            if changed:
                level = EventLevel.error if outcome == "failed" else EventLevel.warn  # requeued, cancelled
                add_event(session, row.id, EventType.error if outcome == "failed" else EventType.message,
                          message, level=level, data={"attempts": row.attempts})
                session.commit()
                if outcome == "requeued":
                    enqueue(row.id)
                if retention is not None and store is not None:
                    retention.delete_dropped(store)
                done.append((row.id, outcome))
        # queued for a long time with no worker claim although it was sent: re-send (claim is idempotent)
        lost_cutoff = now - timedelta(seconds=settings.resend_after_s)
        waiting = session.scalars(
            select(Job.id).where(Job.status == JobStatus.queued, Job.queued_at < lost_cutoff)
            .order_by(Job.queued_at)
        ).all()
        merges = [] if enqueue_merge is None else session.execute(
            select(Job.id, Job.merge_requested_at).where(Job.merge_requested_at < lost_cutoff)
            .order_by(Job.merge_requested_at)
        ).all()
        if (waiting or merges) and queue_depth is not None and queue_depth() == 0:
            for job_id in waiting:
                enqueue(job_id)
                done.append((job_id, "resent"))
            for merge in merges:
                renewed = update(Job).where(Job.id == merge.id, Job.merge_requested_at == merge.merge_requested_at)
                if not session.execute(renewed.values(merge_requested_at=now)).rowcount:  # type: ignore[attr-defined]
                    continue  # the merge ended meanwhile
                add_event(session, merge.id, EventType.message, "The merge request waited with an empty queue "
                          "(its message was lost); sent again.", level=EventLevel.warn)
                session.commit()
                assert enqueue_merge is not None
                enqueue_merge(merge.id)
                done.append((merge.id, "merge resent"))
    return done
