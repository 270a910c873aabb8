"""Job lifecycle rules shared by the API and the workers: events, metrics, live notifications, status
changes (cancel, pause, resume, claim by a worker, finish) and the reaper of jobs whose worker died.

Every status change is a compare-and-set on the job row (``UPDATE … WHERE status IN (…)``), so API
replicas, reapers and workers can race safely: exactly one of them wins each transition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .enums import EventLevel, EventType, JobStatus
from .models import Artifact, Job, JobEvent, MetricPoint, utcnow
from .settings import Settings

log = logging.getLogger("sparsegrad.lifecycle")

CHANNEL_PREFIX = "sparsegrad:job:"


# ------------------------------------------------------------------------------------------- live channel
class LiveChannel:
    """Wakes SSE streams when a job gets new events: Redis pub/sub when configured, else nothing (the
    streams poll SQL)."""

    def __init__(self, settings: Settings) -> None:
        self.redis_url = settings.redis_url
        self._client: Any = None

    def notify(self, job_id: str, payload: dict[str, Any] | None = None) -> None:
        if not self.redis_url:
            return
        try:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self._client.publish(CHANNEL_PREFIX + job_id, json.dumps(payload or {}, default=str))
        except Exception as exc:  # live delivery is best effort; SQL is the record
            log.warning("live notification for %s failed: %s", job_id, exc)
            self._client = None


# ------------------------------------------------------------------------------------- events and metrics
def add_event(
    session: Session, job_id: str, type: EventType | str, message: str, *,
    data: dict[str, Any] | None = None, level: EventLevel | str = EventLevel.info,
) -> JobEvent:
    event = JobEvent(job_id=job_id, type=str(type), message=message, data=data, level=str(level))
    session.add(event)
    session.flush()
    return event


def insert_metrics(session: Session, job_id: str, rows: Iterable[tuple[int, str, float]]) -> int:
    """Append (step, name, value) points; a point that already exists (a step replayed after resuming from
    a checkpoint) is skipped, so the series never has duplicates."""
    values = [{"job_id": job_id, "step": int(s), "name": n, "value": float(v), "created_at": utcnow()}
              for s, n, v in rows if v is not None and v == v]  # drop NaN
    if not values:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(MetricPoint).values(values).on_conflict_do_nothing(
            constraint="uq_job_metrics_job_step_name")
    elif dialect == "sqlite":
        stmt = sqlite.insert(MetricPoint).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - other databases insert one by one
        for v in values:
            exists = session.scalar(select(MetricPoint.id).where(
                MetricPoint.job_id == job_id, MetricPoint.step == v["step"], MetricPoint.name == v["name"]))
            if exists is None:
                session.add(MetricPoint(**v))
        return len(values)
    session.execute(stmt)
    return len(values)


# ------------------------------------------------------------------------------------------ transitions
def _cas(session: Session, job_id: str, from_statuses: Sequence[JobStatus], **values: Any) -> bool:
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_([str(s) for s in from_statuses])).values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def request_cancel(session: Session, job: Job) -> bool:
    """Queued/paused jobs are cancelled at once; running ones get the flag and go to ``cancelling``."""
    now = utcnow()
    if _cas(session, job.id, [JobStatus.queued, JobStatus.paused, JobStatus.validating_files],
            status=str(JobStatus.cancelled), finished_at=now, cancel_requested=True, phase=None):
        add_event(session, job.id, EventType.message, "Job cancelled.")
        return True
    if _cas(session, job.id, [JobStatus.running], status=str(JobStatus.cancelling), cancel_requested=True):
        add_event(session, job.id, EventType.message, "Cancellation requested; stopping after the current step.")
        return True
    return False


def request_pause(session: Session, job: Job) -> bool:
    """Running jobs checkpoint and stop at the next step; queued jobs are held back before they start."""
    if _cas(session, job.id, [JobStatus.running, JobStatus.queued], pause_requested=True):
        add_event(session, job.id, EventType.message, "Pause requested; the job will checkpoint and stop.")
        if _cas(session, job.id, [JobStatus.queued], status=str(JobStatus.paused)):
            add_event(session, job.id, EventType.message, "Job paused before it started.")
        return True
    return False


def request_resume(session: Session, job: Job) -> bool:
    """A paused job goes back to the queue; it resumes from its last checkpoint."""
    if _cas(session, job.id, [JobStatus.paused], status=str(JobStatus.queued), pause_requested=False,
            queued_at=utcnow(), attempts=0):
        add_event(session, job.id, EventType.message, "Job resumed; queued again.")
        return True
    pending = session.execute(update(Job).where(  # a pause not reached yet: withdraw it
        Job.id == job.id, Job.status == str(JobStatus.running), Job.pause_requested.is_(True),
    ).values(pause_requested=False).execution_options(synchronize_session=False))
    if pending.rowcount:  # type: ignore[attr-defined]
        add_event(session, job.id, EventType.message, "Pause withdrawn.")
        return True
    return False


def claim_job(session: Session, job_id: str, worker_id: str) -> Job | None:
    """Atomically move a queued job to ``running`` for this worker (attempts + 1); None if someone else
    has it, it was cancelled or paused, or it is finished."""
    now = utcnow()
    claimed = _cas(session, job_id, [JobStatus.queued], status=str(JobStatus.running), worker_id=worker_id,
                   heartbeat_at=now, attempts=Job.attempts + 1)
    if not claimed:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    if job.started_at is None:
        job.started_at = now
    return job


def heartbeat(session: Session, job_id: str, worker_id: str, **values: Any) -> tuple[bool, bool]:
    """Record that the worker is alive; returns the flags ``(cancel_requested, pause_requested)``.
    Raises :class:`LostJobError` if the job is no longer this worker's (reaped and claimed elsewhere)."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                          Job.status.in_([str(JobStatus.running), str(JobStatus.cancelling)]))
        .values(heartbeat_at=utcnow(), **values).execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).first()
        if row is not None and row.status == JobStatus.cancelled:
            return True, False
        raise LostJobError(f"job {job_id} is no longer held by worker {worker_id}")
    flags = session.execute(select(Job.cancel_requested, Job.pause_requested).where(Job.id == job_id)).one()
    return bool(flags.cancel_requested), bool(flags.pause_requested)


class LostJobError(RuntimeError):
    """The job was taken from this worker (its heartbeat went stale and the reaper requeued it)."""


def finish_job(
    session: Session, job_id: str, worker_id: str | None, status: JobStatus, *,
    error: dict[str, Any] | None = None, **values: Any,
) -> JobStatus | None:
    """Move a job held by ``worker_id`` to ``status`` (terminal or ``paused``); returns the status it got,
    or None when the job is not this worker's any more.

    ``succeeded`` and ``paused`` are reached only from ``running``: a cancel that arrived meanwhile (the job
    is ``cancelling``) wins, and the job ends ``cancelled``; the artifact rows its run recorded are deleted
    in the same transaction, so a cancelled job never lists any (the worker removes their objects)."""
    now = utcnow()
    extra: dict[str, Any] = {"phase": None, **values}
    if status.terminal:
        extra["finished_at"] = now
        extra["estimated_finish"] = None
    if status == JobStatus.paused or status.terminal:
        extra["pause_requested"] = False  # a pause that arrived too late to matter is void
        extra["estimated_finish"] = None
    cancel_wins = status in (JobStatus.succeeded, JobStatus.paused)
    sources = [JobStatus.running] if cancel_wins else [JobStatus.running, JobStatus.cancelling]
    where = [Job.id == job_id, Job.status.in_([str(s) for s in sources])]
    if worker_id is not None:
        where.append(Job.worker_id == worker_id)
    result = session.execute(update(Job).where(*where).values(status=str(status), error=null() if error is None else error, **extra)
                             .execution_options(synchronize_session=False))
    if result.rowcount:  # type: ignore[attr-defined]
        return status
    if cancel_wins:
        where = [Job.id == job_id, Job.status == str(JobStatus.cancelling)]
        if worker_id is not None:
            where.append(Job.worker_id == worker_id)
        result = session.execute(update(Job).where(*where).values(
            status=str(JobStatus.cancelled), finished_at=now, estimated_finish=None, phase=None,
            pause_requested=False, error=null()).execution_options(synchronize_session=False))
        if result.rowcount:  # type: ignore[attr-defined]
            session.execute(delete(Artifact).where(Artifact.job_id == job_id))
            return JobStatus.cancelled
    return None


# ------------------------------------------------------------------------------------------------ reaper
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
                Job.status.in_([str(JobStatus.running), str(JobStatus.cancelling)]),
                func.coalesce(Job.heartbeat_at, Job.started_at) < cutoff,
            )
        ).all()
        for row in stale:
            cond = [Job.id == row.id, Job.status == row.status, Job.attempts == row.attempts]
            if row.status == JobStatus.cancelling:
                values: dict[str, Any] = {"status": str(JobStatus.cancelled), "finished_at": now, "phase": None}
                outcome, message = "cancelled", "The worker stopped responding while cancelling; job cancelled."
            elif row.attempts >= row.max_attempts:
                values = {"status": str(JobStatus.failed), "finished_at": now, "phase": None, "error": {
                    "code": "worker_lost", "param": None,
                    "message": f"The worker running this job stopped responding {row.attempts} times "
                               f"(no heartbeat for {settings.heartbeat_timeout_s:.0f} s); giving up after "
                               f"{row.max_attempts} attempts."}}
                outcome, message = "failed", values["error"]["message"]
            else:
                values = {"status": str(JobStatus.queued), "queued_at": now, "worker_id": None, "phase": None}
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
            select(Job.id).where(Job.status == str(JobStatus.queued), Job.queued_at < lost_cutoff)
            .order_by(Job.queued_at)
        ).all()
        if waiting and queue_depth is not None and queue_depth() == 0:
            for job_id in waiting:
                enqueue(job_id)
                done.append((job_id, "resent"))
    return done
