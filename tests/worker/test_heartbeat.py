"""The heartbeat thread keeps the job alive, brings back the stop flags, and notices a lost job."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import update
from support.endpoints import wait_for
from worker_helpers import create_job, job_row

from sparsegrad_service import transitions
from sparsegrad_service.db import session_scope
from sparsegrad_service.job_store import WorkerJobStore
from sparsegrad_service.models import Job
from sparsegrad_service.settings import Settings
from worker.heartbeat import HeartbeatThread, StopFlags


def test_heartbeat_flags_and_loss(pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes) -> None:
    settings = make_settings(pg_db)
    job_id = create_job(settings, sst2_bytes)
    job_store = WorkerJobStore(settings.sql_url, job_id, "me:1")
    assert job_store.claim("cpu") is not None
    first_beat = job_row(settings, job_id).heartbeat_at
    flags = StopFlags(job_store, min_interval_s=60.0)
    thread = HeartbeatThread(flags, interval_s=0.05)
    thread.start()
    try:
        wait_for(lambda: job_row(settings, job_id).heartbeat_at != first_beat, 10, "a heartbeat", every=0.02)
        with session_scope(settings.sql_url) as session:
            assert transitions.request_pause(session, session.get(Job, job_id))  # type: ignore[arg-type]
        wait_for(lambda: flags.current.pause, 10, "the pause flag", every=0.02)
        assert flags.refresh().stop and not flags.current.cancel  # served from the heartbeat's cache
        with session_scope(settings.sql_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(worker_id="other:2"))
        wait_for(lambda: flags.current.lost, 10, "the lost job noticed", every=0.02)
        wait_for(lambda: not thread.is_alive(), 10, "the heartbeat thread to stop", every=0.02)
    finally:
        thread.stop()


def test_stop_flags_read_sql_at_most_every_interval(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(pg_db)
    job_id = create_job(settings, sst2_bytes)
    job_store = WorkerJobStore(settings.sql_url, job_id, "me:1")
    assert job_store.claim("cpu") is not None
    flags = StopFlags(job_store, min_interval_s=0.3)
    with session_scope(settings.sql_url) as session:
        assert transitions.request_cancel(session, session.get(Job, job_id))  # type: ignore[arg-type]
    assert not flags.refresh().cancel  # cached
    time.sleep(0.35)
    assert flags.refresh().cancel and job_row(settings, job_id).status == "cancelling"
