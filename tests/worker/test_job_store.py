"""The worker's job store: every write lands only while the worker holds the job (its id on the row, status
running or cancelling), and ``Job.status`` is a :class:`JobStatus` stored as the same plain string."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text, update
from worker_helpers import artifacts, checkpoints, create_job, events, job_row

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import ArtifactKind, EventType, JobStatus
from sparsegrad_service.job_store import LostJobError, WorkerJobStore
from sparsegrad_service.models import Job
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import StoredObject

STORED = StoredObject("k", 1, "0" * 64)


def _set(settings: Settings, job_id: str, **values: object) -> None:
    with session_scope(settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


@pytest.mark.parametrize("row", [
    {"status": JobStatus.running, "worker_id": "other"},  # reaped and claimed by another worker
    {"status": JobStatus.queued, "worker_id": "w1"},  # reaped, not claimed yet (the reaper clears worker_id too)
    {"status": JobStatus.paused, "worker_id": "w1"},
    {"status": JobStatus.failed, "worker_id": "w1"},
])
def test_no_write_lands_once_the_job_is_not_held(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, row: dict[str, object]
) -> None:
    settings = make_settings(db_url)
    job_id = create_job(settings, sst2_bytes[:4000])
    _set(settings, job_id, **row)
    before = job_row(settings, job_id)
    store = WorkerJobStore(settings.sql_url, job_id, "w1")
    with pytest.raises(LostJobError):
        store.heartbeat()
    with pytest.raises(LostJobError):
        store.stop_flags()
    assert not store.write(events=[(EventType.message, "late", None)], metrics=[(1, "loss", 0.5)], job={"step": 1})
    assert store.record_checkpoint(1, STORED, {}, keep=2) is None
    with pytest.raises(LostJobError):
        store.record_artifact(ArtifactKind.adapter, "a.tar.gz", STORED)
    assert store.finish(JobStatus.succeeded, "done") is None
    assert store.finish(JobStatus.failed, "failed", error={"code": "x", "message": "x", "param": None}) is None
    after = job_row(settings, job_id)
    assert (after.status, after.step, after.last_checkpoint_step) == (before.status, before.step, None)
    assert after.heartbeat_at == before.heartbeat_at
    assert not checkpoints(settings, job_id) and not artifacts(settings, job_id)
    assert "late" not in [e.message for e in events(settings, job_id)]


def test_the_holder_writes_and_finishes(db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes) -> None:
    settings = make_settings(db_url)
    job_id = create_job(settings, sst2_bytes[:4000])
    store = WorkerJobStore(settings.sql_url, job_id, "w1")
    snapshot = store.claim("cpu")
    assert snapshot is not None and snapshot.attempt == 1
    assert WorkerJobStore(settings.sql_url, job_id, "w2").claim("cpu") is None  # claimed once
    assert store.heartbeat() == (False, False)
    assert store.write(events=[(EventType.message, "hello", None)], metrics=[(1, "loss", 0.5)], job={"step": 1})
    recorded = store.record_checkpoint(1, STORED, {"step": 1}, keep=2)
    assert recorded is not None and store.latest_checkpoint() == recorded[0]
    store.record_artifact(ArtifactKind.adapter, "a.tar.gz", STORED)
    assert store.finish(JobStatus.succeeded, "done") == JobStatus.succeeded
    job = job_row(settings, job_id)
    assert job.status is JobStatus.succeeded and job.step == 1 and job.last_checkpoint_step == 1
    assert set(artifacts(settings, job_id)) == {"adapter"}
    assert [e.message for e in events(settings, job_id)][-2:] == ["hello", "done"]


def test_a_cancelled_job_reads_as_a_cancel(db_url: str, make_settings: Callable[..., Settings],
                                           sst2_bytes: bytes) -> None:
    settings = make_settings(db_url)
    job_id = create_job(settings, sst2_bytes[:4000])
    _set(settings, job_id, status=JobStatus.cancelled, worker_id="w1", pause_requested=True)
    store = WorkerJobStore(settings.sql_url, job_id, "w1")
    assert store.heartbeat() == (True, False)
    assert store.stop_flags() == (True, False)


def test_job_status_is_the_enum_stored_as_its_string(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(db_url)
    job_id = create_job(settings, sst2_bytes[:4000])
    assert job_row(settings, job_id).status is JobStatus.queued
    _set(settings, job_id, status=JobStatus.cancelling)
    with session_scope(settings.sql_url) as session:
        raw = session.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()
    assert type(raw) is str and raw == "cancelling"
    assert job_row(settings, job_id).status is JobStatus.cancelling
