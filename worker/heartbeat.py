"""The running job's link to SQL besides its own writes: a heartbeat thread, and the stop flags
(cancel, pause, lost) it and the training loop share.

The heartbeat proves the worker alive (``WorkerJobStore.heartbeat`` every ``heartbeat_interval_s``) and
brings back the cancel/pause flags. If the job was taken away (the reaper requeued it and another
worker claimed it), ``lost`` is set: training stops and writes nothing further.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sparsegrad_service.job_store import LostJobError, WorkerJobStore

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

    def __init__(self, job_store: WorkerJobStore, min_interval_s: float) -> None:
        self.job_store, self.job_id = job_store, job_store.job_id
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
            cancel, pause = self.job_store.stop_flags()
        except LostJobError:
            return self.set(lost=True)
        except Exception as exc:  # a database hiccup must not stop training; the heartbeat retries too
            log.warning("job %s: reading the stop flags failed: %s", self.job_id, exc)
            return flags
        return self.set(cancel=cancel, pause=pause)


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
                cancel, pause = flags.job_store.heartbeat()
                flags.set(cancel=cancel, pause=pause)
            except LostJobError as exc:
                log.warning("%s; stopping without writing anything further", exc)
                flags.set(lost=True)
                return
            except Exception as exc:  # keep beating: the database may come back before the timeout
                log.warning("job %s: heartbeat failed: %s", flags.job_id, exc)

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=max(5.0, 2 * self.interval_s))
