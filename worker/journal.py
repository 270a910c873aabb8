"""What a running job writes to SQL, through its :class:`~sparsegrad_service.job_store.WorkerJobStore`.

Each write is one short transaction of the store, conditioned on this worker still holding the job; once
the job is lost (see :mod:`worker.heartbeat`) nothing is even tried. After each write that adds events or
metrics, live listeners are woken (:class:`~sparsegrad_service.live.LiveChannel`). When the job ends, the
checkpoints beyond ``keep_checkpoints`` leave SQL and the artifact store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sparsegrad_service.enums import EventLevel, EventType, JobStatus
from sparsegrad_service.job_store import Event, WorkerJobStore
from sparsegrad_service.live import LiveChannel
from sparsegrad_service.retention import CheckpointRetention
from sparsegrad_service.store import ArtifactStore

from .heartbeat import StopFlags

__all__ = ["Event", "JobJournal"]


class JobJournal:
    """Writes of one attempt at one job. A write that finds the database gone is retried (training waits)
    for up to the store's ``retry_s`` (``Settings.heartbeat_timeout_s``), after which the reaper would take
    the job anyway."""

    def __init__(self, job_store: WorkerJobStore, flags: StopFlags, live: LiveChannel, *,
                 store: ArtifactStore | None = None, keep_checkpoints: int = 0) -> None:
        """``store``: where the checkpoints a finished job drops are deleted (None: it keeps them all)."""
        self.job_store, self.flags, self.live = job_store, flags, live
        self.store, self.keep_checkpoints = store, keep_checkpoints
        self.job_id = job_store.job_id
        self.finish_listeners: list[Callable[[JobStatus, dict[str, Any]], None]] = []
        """Called with the status the job got and the finishing values (``fine_tuned_model``, ...) once it ends
        (e.g. :class:`worker.integrations.JobTracking` closes its runs)."""

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
        if not self.job_store.write(events=events, metrics=metrics, job=job, level=level):
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

    def finish(self, status: JobStatus, message: str, *, error: dict[str, Any] | None = None,
               **values: Any) -> JobStatus | None:
        """Move the job to ``status`` (terminal or paused) with a closing event. Returns the status it got
        (``cancelled`` when a cancel arrived meanwhile), or None if the job was lost."""
        if self.lost:
            return None
        final = finish_job(self.job_store, status, message, self.store, self.keep_checkpoints, live=self.live,
                           error=error, **values)
        if final is not None:
            for listener in self.finish_listeners:
                listener(final, values)
        return final


def finish_job(job_store: WorkerJobStore, status: JobStatus, message: str, store: ArtifactStore | None,
               keep_checkpoints: int, *, live: LiveChannel | None = None, error: dict[str, Any] | None = None,
               **values: Any) -> JobStatus | None:
    """``job_store.finish``, then the dropped checkpoints leave ``store`` and live listeners are woken."""
    retention = CheckpointRetention(keep_checkpoints) if store is not None else None
    final = job_store.finish(status, message, error=error, retention=retention, **values)
    if retention is not None and store is not None:
        retention.delete_dropped(store)
    if final is not None and live is not None:
        live.notify(job_store.job_id, {"status": final.value})
    return final
