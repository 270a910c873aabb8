"""Per-run state of one attempt at a job, and how an attempt can end."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sparsegrad_service.job_store import JobSnapshot, WorkerJobStore

from .device import DeviceInfo
from .heartbeat import HeartbeatThread, StopFlags
from .journal import JobJournal


def default_worker_id() -> str:
    """``hostname:pid``: who holds a claimed job."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Outcome(StrEnum):
    skipped = "skipped"
    """Not claimable: another worker has it, or it was cancelled, paused or finished meanwhile."""
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"
    lost = "lost"
    """Taken away from this worker while it ran (its heartbeat went stale); nothing more was written."""
    interrupted = "interrupted"
    """The database stayed unreachable; the job is left running for the reaper to requeue."""


@dataclass
class Attempt:
    """One claimed attempt: the job snapshot, where it runs, and its links to SQL."""

    job: JobSnapshot
    job_store: WorkerJobStore
    device: DeviceInfo
    run_dir: Path
    flags: StopFlags
    journal: JobJournal
    heartbeat: HeartbeatThread
    resumed_step: int | None = None

    @property
    def worker_id(self) -> str:
        return self.job_store.worker_id
