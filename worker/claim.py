"""Claim a queued job for this worker and take a snapshot of what the run needs from SQL.

The snapshot is read in the claiming transaction; afterwards the run holds no session while it trains.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from sparsegrad_service import lifecycle
from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import EventType
from sparsegrad_service.models import File

from .data import FileRef


@dataclass(frozen=True)
class JobSnapshot:
    id: str
    model: str
    spec: dict[str, Any]
    seed: int
    suffix: str | None
    attempt: int
    max_attempts: int
    training_file: FileRef
    validation_file: FileRef | None


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _file_ref(file: File | None) -> FileRef | None:
    return None if file is None else FileRef(file.id, file.filename, file.storage_key)


def claim(sql_url: str, job_id: str, worker_id: str, device: str) -> JobSnapshot | None:
    """Move the job to ``running`` for ``worker_id`` (attempts + 1) and announce the attempt; None when
    it is not claimable (taken, cancelled, paused or finished)."""
    with session_scope(sql_url) as session:
        job = lifecycle.claim_job(session, job_id, worker_id)
        if job is None:
            return None
        training = _file_ref(session.get(File, job.training_file_id))
        if training is None:
            raise LookupError(f"job {job_id}: training file {job.training_file_id} does not exist")
        validation = _file_ref(session.get(File, job.validation_file_id)) if job.validation_file_id else None
        lifecycle.add_event(
            session, job_id, EventType.message,
            f"Attempt {job.attempts} of {job.max_attempts} started on worker {worker_id} (device {device}).",
            data={"attempt": job.attempts, "max_attempts": job.max_attempts, "worker_id": worker_id,
                  "device": device},
        )
        return JobSnapshot(
            id=job.id, model=job.model, spec=dict(job.spec or {}), seed=int(job.seed), suffix=job.suffix,
            attempt=int(job.attempts), max_attempts=int(job.max_attempts),
            training_file=training, validation_file=validation,
        )
