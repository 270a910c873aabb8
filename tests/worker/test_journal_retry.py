"""A job's writes wait out a database that drops its connections (a restart, a failover) instead of failing
the job; past the retry window the error propagates (the reaper takes over)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from worker_helpers import create_job, events, job_row, metric_series

from sparsegrad_service import db as db_module
from sparsegrad_service import job_store as job_store_module
from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import EventType, JobStatus
from sparsegrad_service.job_store import WorkerJobStore
from sparsegrad_service.live import LiveChannel
from sparsegrad_service.models import Job
from sparsegrad_service.settings import Settings
from worker.heartbeat import StopFlags
from worker.journal import JobJournal


def flaky_sessions(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """The next ``failures`` transactions of the job store lose their connection; returns the try counter."""
    tries = [0]
    real = job_store_module.session_scope

    @contextmanager
    def scope(url: str) -> Iterator[Any]:
        tries[0] += 1
        if tries[0] <= failures:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        with real(url) as session:
            yield session

    monkeypatch.setattr(job_store_module, "session_scope", scope)
    monkeypatch.setattr(db_module, "RETRY_FIRST_S", 0.01)
    return tries


def running_journal(settings: Settings, sst2_bytes: bytes) -> JobJournal:
    job_id = create_job(settings, sst2_bytes[:4000])
    with session_scope(settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", worker_id="w1"))
    job_store = WorkerJobStore(settings.sql_url, job_id, "w1", retry_s=settings.heartbeat_timeout_s)
    return JobJournal(job_store, StopFlags(job_store, 0.0), LiveChannel(settings))


def test_writes_and_the_final_status_wait_for_the_database(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(sqlite_db, heartbeat_timeout_s=10)
    journal = running_journal(settings, sst2_bytes)
    tries = flaky_sessions(monkeypatch, failures=3)
    assert journal.write(events=[(EventType.message, "hello", None)], metrics=[(1, "loss", 0.5)], job={"step": 1})
    assert tries[0] == 4
    tries[0] = -2  # two more failures
    assert journal.finish(JobStatus.succeeded, "done") == JobStatus.succeeded
    job = job_row(settings, journal.job_id)
    assert job.status == "succeeded" and job.step == 1
    assert [e.message for e in events(settings, journal.job_id)] == ["hello", "done"]
    assert metric_series(settings, journal.job_id, "loss") == [(1, 0.5)]


def test_past_the_retry_window_the_error_propagates(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(sqlite_db, heartbeat_timeout_s=0.2)
    journal = running_journal(settings, sst2_bytes)
    flaky_sessions(monkeypatch, failures=1000)
    with pytest.raises(OperationalError):
        journal.write(job={"step": 1})
    assert job_row(settings, journal.job_id).status == "running" and not journal.lost


def test_a_database_away_longer_than_the_wait_leaves_the_job_to_the_reaper(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint record cannot reach the database within the wait: the attempt ends without a verdict
    (no ``failed``), the job stays running with its heartbeat going stale, and the reaper requeues it."""
    from worker_helpers import job_spec

    from worker.runner import JobRunner, Outcome

    settings = make_settings(sqlite_db, heartbeat_timeout_s=0.3)
    job_id = create_job(settings, sst2_bytes, job_spec(hyperparameters={"max_steps": 6, "checkpoint_every": 3}))

    @contextmanager
    def unreachable(url: str) -> Iterator[Any]:
        raise OperationalError("UPDATE jobs", {}, Exception("the database system is shutting down"))
        yield  # pragma: no cover

    record_checkpoint = WorkerJobStore.record_checkpoint

    def record_unreachable(self: WorkerJobStore, *args: Any, **kwargs: Any) -> Any:
        with monkeypatch.context() as patch:  # the database goes away while the checkpoint is recorded
            patch.setattr(job_store_module, "session_scope", unreachable)
            return record_checkpoint(self, *args, **kwargs)

    monkeypatch.setattr(WorkerJobStore, "record_checkpoint", record_unreachable)
    monkeypatch.setattr(db_module, "RETRY_FIRST_S", 0.05)
    assert JobRunner(settings, job_id).run() == Outcome.interrupted
    job = job_row(settings, job_id)
    assert job.status == "running" and job.error is None and job.finished_at is None
