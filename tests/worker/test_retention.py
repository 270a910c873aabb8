"""A job that ends keeps no resume checkpoint whichever way it ends: the worker finishing it (succeeded, failed, or
cancelled when a cancel wins), or the reaper (failed after its last attempt, or cancelled while cancelling). A
succeeded job keeps its newest ``keep_finished_checkpoints`` checkpoint models. The dropped checkpoints leave SQL
and the artifact store; a paused job, and a running one, keep theirs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update
from worker_helpers import checkpoints, create_job, job_row

from sparsegrad_service.db import get_engine, session_scope
from sparsegrad_service.enums import ArtifactKind, JobStatus
from sparsegrad_service.job_store import WorkerJobStore
from sparsegrad_service.live import LiveChannel
from sparsegrad_service.models import Job, utcnow
from sparsegrad_service.reaper import reap_stale_jobs
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore, checkpoint_key
from worker.heartbeat import StopFlags
from worker.journal import JobJournal

STEPS = (10, 20, 30)


def running_with_checkpoints(settings: Settings, sst2_bytes: bytes, **values: object) -> tuple[str, list[str]]:
    """A job running on worker ``w1`` that stored checkpoints at :data:`STEPS` (while running it keeps two)."""
    job_id = create_job(settings, sst2_bytes[:4000])
    with session_scope(settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            {"status": "running", "worker_id": "w1", "heartbeat_at": utcnow(), "attempts": 1, **values}))
    store = LocalArtifactStore(settings.artifact_root)
    job_store = WorkerJobStore(settings.sql_url, job_id, "w1")
    keys = []
    for step in STEPS:
        stored = store.put_bytes(checkpoint_key(job_id, step), bytes(1000 + step))
        recorded = job_store.record_checkpoint(step, stored, {}, keep=2)
        assert recorded is not None
        for old in recorded[1]:
            store.delete(old)
        keys.append(stored.key)
    assert [c.step for c in checkpoints(settings, job_id)] == [20, 30]
    return job_id, keys


def kept(settings: Settings, job_id: str, keys: list[str]) -> tuple[list[int], list[bool]]:
    store = LocalArtifactStore(settings.artifact_root)
    return [c.step for c in checkpoints(settings, job_id)], [store.exists(key) for key in keys]


def journal(settings: Settings, job_id: str) -> JobJournal:
    job_store = WorkerJobStore(settings.sql_url, job_id, "w1")
    return JobJournal(job_store, StopFlags(job_store, 0.0), LiveChannel(settings),
                      store=LocalArtifactStore(settings.artifact_root),
                      keep_checkpoints=settings.keep_finished_checkpoints)


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
def test_a_job_the_worker_finishes_drops_its_checkpoints(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, status: JobStatus,
) -> None:
    settings = make_settings(db_url)
    job_id, keys = running_with_checkpoints(settings, sst2_bytes)
    error = {"code": "training_error", "message": "boom", "param": None} if status == JobStatus.failed else None
    assert journal(settings, job_id).finish(status, "the end", error=error) == status
    assert kept(settings, job_id, keys) == ([], [False, False, False])
    assert job_row(settings, job_id).last_checkpoint_step is None
    assert not (settings.artifact_root / "jobs").exists()  # no empty folders left behind


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed])
def test_a_succeeded_job_keeps_the_newest_checkpoint_models_it_is_allowed(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, status: JobStatus,
) -> None:
    settings = make_settings(sqlite_db, keep_finished_checkpoints=2)
    job_id, keys = running_with_checkpoints(settings, sst2_bytes)
    store = LocalArtifactStore(settings.artifact_root)
    job_store = WorkerJobStore(settings.sql_url, job_id, "w1")
    models = []
    for step in (20, 30, 40):  # the worker stores models of the newest steps (the final one has no resume archive)
        stored = store.put_bytes(f"jobs/{job_id}/checkpoints/model-{step}", bytes(step))
        job_store.record_checkpoint_model(step, ArtifactKind.adapter, stored)
        models.append(stored.key)
    error = {"code": "training_error", "message": "boom", "param": None} if status == JobStatus.failed else None
    assert journal(settings, job_id).finish(status, "the end", error=error) == status
    if status == JobStatus.succeeded:  # the newest two models, without their resume archives
        assert kept(settings, job_id, keys + models) == ([30, 40], [False, False, False, False, True, True])
        assert all(c.storage_key is None and c.bytes is None for c in checkpoints(settings, job_id))
    else:  # a failed job has no model: nothing stays
        assert kept(settings, job_id, keys + models) == ([], [False] * 6)
    assert job_row(settings, job_id).last_checkpoint_step is None


def test_a_cancel_that_wins_the_finish_drops_the_checkpoints_and_a_pause_keeps_them(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes,
) -> None:
    settings = make_settings(sqlite_db)
    paused, paused_keys = running_with_checkpoints(settings, sst2_bytes)
    assert journal(settings, paused).finish(JobStatus.paused, "paused") == JobStatus.paused
    assert kept(settings, paused, paused_keys) == ([20, 30], [False, True, True])  # it resumes from them

    job_id, keys = running_with_checkpoints(settings, sst2_bytes)
    with session_scope(settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelling", cancel_requested=True))
    assert journal(settings, job_id).finish(JobStatus.succeeded, "done") == JobStatus.cancelled
    assert kept(settings, job_id, keys) == ([], [False, False, False])


@pytest.mark.parametrize("status", ["running", "cancelling"])
def test_a_job_the_reaper_ends_drops_its_checkpoints(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, status: str,
) -> None:
    settings = make_settings(db_url, max_attempts=1)
    job_id, keys = running_with_checkpoints(settings, sst2_bytes, status=status)
    later = utcnow() + timedelta(hours=1)
    store = LocalArtifactStore(settings.artifact_root)
    outcome = "failed" if status == "running" else "cancelled"
    assert reap_stale_jobs(get_engine(settings.sql_url), settings, lambda _: None, now=later, store=store) == [
        (job_id, outcome)]
    assert job_row(settings, job_id).status == outcome
    assert kept(settings, job_id, keys) == ([], [False, False, False])


def test_a_job_the_reaper_requeues_keeps_its_checkpoints(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes,
) -> None:
    settings = make_settings(sqlite_db, max_attempts=3)
    job_id, keys = running_with_checkpoints(settings, sst2_bytes)
    later = utcnow() + timedelta(hours=1)
    store = LocalArtifactStore(settings.artifact_root)
    assert reap_stale_jobs(get_engine(settings.sql_url), settings, lambda _: None, now=later, store=store) == [
        (job_id, "requeued")]
    assert kept(settings, job_id, keys) == ([20, 30], [False, True, True])
