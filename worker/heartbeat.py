"""The running job's link to SQL besides its own writes: a heartbeat thread, and the stop flags
(cancel, pause, lost) it and the training loop share.

The heartbeat proves the worker alive (``lifecycle.heartbeat`` every ``heartbeat_interval_s``) and
brings back the cancel/pause flags. If the job was taken away (the reaper requeued it and another
worker claimed it), ``lost`` is set: training stops and writes nothing further.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from sparsegrad_service import lifecycle
from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import JobStatus
from sparsegrad_service.models import Job

log = logging.getLogger("sparsegrad.worker")


@dataclass(frozen=True)
class Flags:
    cancel: bool = False
    pause: bool = False
    lost: bool = False

    @property
    def stop(self) -> bool:
        return self.cancel or self.pause or self.lost


class StopFlags:
    """The latest flags, shared between the heartbeat thread and the training loop (thread-safe).

    :meth:`refresh` reads them from SQL at most every ``min_interval_s``; in between the cached value
    (also refreshed by every heartbeat) is served.
    """

    def __init__(self, sql_url: str, job_id: str, worker_id: str, min_interval_s: float) -> None:
        self.sql_url, self.job_id, self.worker_id = sql_url, job_id, worker_id
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._flags = Flags()
        self._checked_at = time.monotonic()

    @property
    def current(self) -> Flags:
        with self._lock:
            return self._flags

    def set(self, *, cancel: bool | None = None, pause: bool | None = None, lost: bool | None = None) -> Flags:
        with self._lock:
            old = self._flags
            self._flags = Flags(
                cancel=old.cancel if cancel is None else cancel,
                pause=old.pause if pause is None else pause,
                lost=old.lost or bool(lost),  # a lost job stays lost
            )
            self._checked_at = time.monotonic()
            return self._flags

    def refresh(self) -> Flags:
        """The flags, read from SQL if the cached ones are older than ``min_interval_s``."""
        with self._lock:
            flags, fresh = self._flags, time.monotonic() - self._checked_at < self.min_interval_s
        if fresh or flags.lost:
            return flags
        try:
            with session_scope(self.sql_url) as session:
                row = session.execute(
                    select(Job.status, Job.worker_id, Job.cancel_requested, Job.pause_requested)
                    .where(Job.id == self.job_id)
                ).first()
        except Exception as exc:  # a database hiccup must not stop training; the heartbeat retries too
            log.warning("job %s: reading the stop flags failed: %s", self.job_id, exc)
            return flags
        if row is None:
            return self.set(lost=True)
        if row.status == JobStatus.cancelled:
            return self.set(cancel=True)
        if row.worker_id != self.worker_id or row.status not in (JobStatus.running, JobStatus.cancelling):
            return self.set(lost=True)
        return self.set(cancel=bool(row.cancel_requested), pause=bool(row.pause_requested))


class HeartbeatThread(threading.Thread):
    """Writes ``Job.heartbeat_at`` every ``interval_s`` until stopped; keeps ``flags`` current."""

    def __init__(self, flags: StopFlags, interval_s: float) -> None:
        super().__init__(name=f"heartbeat-{flags.job_id}", daemon=True)
        self.flags = flags
        self.interval_s = interval_s
        self._stopped = threading.Event()

    def run(self) -> None:
        flags = self.flags
        while not self._stopped.wait(self.interval_s):
            try:
                with session_scope(flags.sql_url) as session:
                    cancel, pause = lifecycle.heartbeat(session, flags.job_id, flags.worker_id)
                flags.set(cancel=cancel, pause=pause)
            except lifecycle.LostJobError as exc:
                log.warning("%s; stopping without writing anything further", exc)
                flags.set(lost=True)
                return
            except Exception as exc:  # keep beating: the database may come back before the timeout
                log.warning("job %s: heartbeat failed: %s", flags.job_id, exc)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=max(5.0, 2 * self.interval_s))
