"""Everything a running job writes to SQL, each write in its own short transaction.

Every write first updates the job row on condition that this worker still holds the job
(``Job.worker_id``, status running or cancelling), so nothing lands after the job was taken away; once
the job is lost (see :mod:`worker.heartbeat`) nothing is even tried. After each write that adds
events or metrics, live listeners are woken (:class:`~sparsegrad_service.lifecycle.LiveChannel`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from sparsegrad_service import lifecycle
from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import EventLevel, EventType, JobStatus
from sparsegrad_service.models import Job, utcnow
from sparsegrad_service.settings import Settings

from .heartbeat import StopFlags

Event = tuple[EventType, str, dict[str, Any] | None]


class JobJournal:
    """Writes of one attempt at one job."""

    def __init__(self, settings: Settings, job_id: str, worker_id: str, flags: StopFlags) -> None:
        self.sql_url = settings.sql_url
        self.job_id, self.worker_id, self.flags = job_id, worker_id, flags
        self.live = lifecycle.LiveChannel(settings)

    @property
    def lost(self) -> bool:
        return self.flags.current.lost

    def write(
        self,
        *,
        events: Iterable[Event] = (),
        metrics: Iterable[tuple[int, str, float]] = (),
        job: dict[str, Any] | None = None,
        level: EventLevel = EventLevel.info,
    ) -> bool:
        """Add events and metric points and update the job row (its heartbeat too), in one transaction.
        Returns False (and writes nothing) when the job is no longer this worker's."""
        if self.lost:
            return False
        events, metrics = list(events), list(metrics)
        with session_scope(self.sql_url) as session:
            if not self._update_job(session, {"heartbeat_at": utcnow(), **(job or {})}):
                self.flags.set(lost=True)
                session.rollback()
                return False
            if metrics:
                lifecycle.insert_metrics(session, self.job_id, metrics)
            for type_, message, data in events:
                lifecycle.add_event(session, self.job_id, type_, message, data=data, level=level)
        if events or metrics:
            self.notify()
        return True

    def event(self, type_: EventType, message: str, data: dict[str, Any] | None = None,
              level: EventLevel = EventLevel.info) -> bool:
        return self.write(events=[(type_, message, data)], level=level)

    def update(self, **values: Any) -> bool:
        return self.write(job=values)

    def notify(self, payload: dict[str, Any] | None = None) -> None:
        self.live.notify(self.job_id, payload)

    def _update_job(self, session: Session, values: dict[str, Any]) -> bool:
        result = session.execute(
            update(Job).where(
                Job.id == self.job_id, Job.worker_id == self.worker_id,
                Job.status.in_([str(JobStatus.running), str(JobStatus.cancelling)]),
            ).values(**values).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def finish(self, status: JobStatus, message: str, *, error: dict[str, Any] | None = None,
               **values: Any) -> JobStatus | None:
        """Move the job to ``status`` (terminal or paused) with a closing event. Returns the status it got
        (``cancelled`` when a cancel arrived meanwhile), or None if the job was lost."""
        if self.lost:
            return None
        with session_scope(self.sql_url) as session:
            final = lifecycle.finish_job(session, self.job_id, self.worker_id, status, error=error, **values)
            if final is None:
                return None
            if final != status:  # a cancel arrived while pausing or saving: it wins
                status, message, error = final, "Job cancelled.", None
            if error is not None:
                lifecycle.add_event(session, self.job_id, EventType.error, message,
                                    data={"code": error.get("code")}, level=EventLevel.error)
            else:
                lifecycle.add_event(session, self.job_id, EventType.message, message,
                                    data={"status": str(status)})
        self.notify({"status": str(status)})
        return status
