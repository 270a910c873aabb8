"""Races between users and workers end in the state the user asked for: a cancel that arrives while the
worker pauses or saves wins; resume without a pending pause is refused; the reaper re-sends lost queue
messages only when the broker queue is empty and keeps the queue order; a claimed job whose attempt
cannot be set up fails instead of hanging in ``running``; a failed merge is reported as an event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update
from worker_helpers import create_job, events, job_row, job_spec

from sparsegrad_service.db import get_engine, session_scope
from sparsegrad_service.enums import JobStatus
from sparsegrad_service.job_store import LostJobError, WorkerJobStore
from sparsegrad_service.models import Job, utcnow
from sparsegrad_service.reaper import reap_stale_jobs
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import StoredObject
from sparsegrad_service.transitions import request_resume
from worker.merge import MergeJob
from worker.runner import JobRunner, Outcome


def _set(settings: Settings, job_id: str, **values: object) -> None:
    with session_scope(settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


@pytest.mark.parametrize("target", [JobStatus.succeeded, JobStatus.paused])
def test_a_cancel_that_arrives_while_finishing_wins(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, target: JobStatus
) -> None:
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000])
    _set(settings, job_id, status="cancelling", worker_id="w1", cancel_requested=True, pause_requested=True)
    assert WorkerJobStore(settings.sql_url, job_id, "w1").finish(target, "done") == JobStatus.cancelled
    job = job_row(settings, job_id)
    assert job.status == "cancelled" and job.finished_at is not None and not job.pause_requested
    assert WorkerJobStore(settings.sql_url, job_id, "w2").finish(JobStatus.failed, "no") is None  # not w2's


def test_resume_is_refused_for_a_running_job_without_a_pending_pause(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000])
    _set(settings, job_id, status="running", worker_id="w1")
    with session_scope(settings.sql_url) as session:
        assert not request_resume(session, job_row(settings, job_id))
    _set(settings, job_id, pause_requested=True)
    with session_scope(settings.sql_url) as session:
        assert request_resume(session, job_row(settings, job_id))
    assert not job_row(settings, job_id).pause_requested


def test_the_reaper_resends_lost_messages_only_when_the_queue_is_empty(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000])
    queued_at = job_row(settings, job_id).queued_at
    engine, later = get_engine(settings.sql_url), utcnow() + timedelta(hours=2)
    sent: list[str] = []
    assert reap_stale_jobs(engine, settings, sent.append, now=later, queue_depth=lambda: 1) == []
    assert reap_stale_jobs(engine, settings, sent.append, now=later, queue_depth=lambda: 0) == [
        (job_id, "resent")]
    assert sent == [job_id] and job_row(settings, job_id).queued_at == queued_at  # queue order kept


def test_a_job_dying_while_cancelling_is_reaped_as_cancelled(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000])
    _set(settings, job_id, status="cancelling", worker_id="w1", heartbeat_at=utcnow(), attempts=1)
    later = utcnow() + timedelta(hours=1)
    assert reap_stale_jobs(get_engine(settings.sql_url), settings, lambda _: None, now=later) == [
        (job_id, "cancelled")]
    assert job_row(settings, job_id).status == "cancelled"
    assert events(settings, job_id)[-1].level == "warn"


def test_a_claimed_job_whose_attempt_cannot_be_set_up_fails(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000], job_spec(hyperparameters={"max_steps": 2}))

    def broken(self: JobRunner, job: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(JobRunner, "_fresh_run_dir", broken)
    assert JobRunner(settings, job_id).run() == Outcome.failed
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.error is not None and job.error["code"] == "worker_setup_error"
    assert "No space left on device" in job.error["message"]


def test_a_failed_merge_is_reported_as_an_error_event(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000])  # queued: nothing to merge
    with pytest.raises(Exception, match="has not succeeded"):
        MergeJob(settings, job_id).run()
    last = events(settings, job_id)[-1]
    assert last.type == "error" and last.message.startswith("Merging the model failed")
    assert last.data == {"code": "job_not_mergeable"}


def test_a_worker_that_lost_its_job_cannot_replace_its_artifacts(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    from sparsegrad_service.enums import ArtifactKind

    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes[:4000])
    _set(settings, job_id, status="running", worker_id="new-worker")
    stored = StoredObject("k", 1, "0" * 64)
    with pytest.raises(LostJobError):
        WorkerJobStore(settings.sql_url, job_id, "old-worker").record_artifact(ArtifactKind.adapter, "a.tar.gz", stored)
    WorkerJobStore(settings.sql_url, job_id, "new-worker").record_artifact(ArtifactKind.adapter, "a.tar.gz", stored)
