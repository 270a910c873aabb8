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
from sparsegrad_service.db import retry_while_disconnected, session_scope
from sparsegrad_service.enums import EventLevel, EventType, JobStatus
from sparsegrad_service.models import Job, utcnow
from sparsegrad_service.settings import Settings

from .heartbeat import StopFlags

Event = tuple[EventType, str, dict[str, Any] | None]


class JobJournal:
    """Writes of one attempt at one job. A write that finds the database gone is retried (training waits)
    for up to ``Settings.heartbeat_timeout_s``, after which the reaper would take the job anyway."""

    def __init__(self, settings: Settings, job_id: str, worker_id: str, flags: StopFlags) -> None:
        self.sql_url = settings.sql_url
        self.job_id, self.worker_id, self.flags = job_id, worker_id, flags
        self.live = lifecycle.LiveChannel(settings)
        self.retry_s = settings.heartbeat_timeout_s

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

        def transaction() -> bool:
            with session_scope(self.sql_url) as session:
                if not self._update_job(session, {"heartbeat_at": utcnow(), **(job or {})}):
                    session.rollback()
                    return False
                if metrics:
                    lifecycle.insert_metrics(session, self.job_id, metrics)
                for type_, message, data in events:
                    lifecycle.add_event(session, self.job_id, type_, message, data=data, level=level)
            return True

        if not retry_while_disconnected(transaction, self.retry_s, f"job {self.job_id}"):
            self.flags.set(lost=True)
            return False
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

        def transaction() -> JobStatus | None:
            with session_scope(self.sql_url) as session:
                final = lifecycle.finish_job(session, self.job_id, self.worker_id, status, error=error, **values)
                if final is None:
                    return None
                text, err = (message, error) if final == status else ("Job cancelled.", None)  # a cancel won
                if err is not None:
                    lifecycle.add_event(session, self.job_id, EventType.error, text,
                                        data={"code": err.get("code")}, level=EventLevel.error)
                else:
                    lifecycle.add_event(session, self.job_id, EventType.message, text, data={"status": str(final)})
                return final

        final = retry_while_disconnected(transaction, self.retry_s, f"job {self.job_id}")
        if final is not None:
            self.notify({"status": str(final)})
        return final
