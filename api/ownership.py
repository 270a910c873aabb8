"""Tenant-scoped lookups of files, jobs and artifacts: another tenant's object is answered exactly like a
missing one (404), never 403 and never the object. ``read_*`` go through the read path (``Reads``);
``tenant_*`` load the ORM object a write changes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sparsegrad_service.models import File, Job

from .errors import not_found
from .queries import artifact_statement, file_statement, job_cursor, result_file_statement
from .reads import Reads


async def read_file(reads: Reads, tenant_id: str, file_id: str) -> Any:
    """The tenant's upload, or the result file of one of its jobs, by id (``queries.uploaded_files`` columns)."""
    params = {"file_id": file_id, "tenant_id": tenant_id}
    row = await reads.first(file_statement(), params) or await reads.first(result_file_statement(), params)
    if row is None:
        raise not_found("file", file_id, param="file_id")
    return row


async def read_job(reads: Reads, tenant_id: str, job_id: str) -> Any:
    """The job's ``id`` and ``created_at`` (``queries.job_cursor``)."""
    row = await reads.first(job_cursor(), {"job_id": job_id, "tenant_id": tenant_id})
    if row is None:
        raise not_found("fine-tuning job", job_id, param="job_id")
    return row


async def read_artifact(reads: Reads, tenant_id: str, artifact_id: str) -> Any:
    row = await reads.first(artifact_statement(), {"artifact_id": artifact_id, "tenant_id": tenant_id})
    if row is None:
        raise not_found("artifact", artifact_id, param="artifact_id")
    return row


def tenant_file(session: Session, tenant_id: str, file_id: str, *, lock: bool = False) -> File:
    """The tenant's live file; ``lock`` holds its row until commit (PostgreSQL: a job that is being created
    on it finishes first, and one created later finds it deleted)."""
    query = select(File).where(File.id == file_id, File.tenant_id == tenant_id, File.deleted_at.is_(None))
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise not_found("file", file_id, param="file_id")
    return row


def tenant_job(session: Session, tenant_id: str, job_id: str, *, fresh: bool = False, lock: bool = False) -> Job:
    """The tenant's job; ``fresh`` re-reads it even if the session has it already, ``lock`` holds its row
    until commit."""
    query = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
    if fresh:
        query = query.execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise not_found("fine-tuning job", job_id, param="job_id")
    return row
