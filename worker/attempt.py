"""Per-run state of one attempt at a job, and how an attempt can end."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .claim import JobSnapshot
from .device import DeviceInfo
from .heartbeat import HeartbeatThread, StopFlags
from .journal import JobJournal


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
    worker_id: str
    device: DeviceInfo
    run_dir: Path
    flags: StopFlags
    journal: JobJournal
    heartbeat: HeartbeatThread
    resumed_step: int | None = None
