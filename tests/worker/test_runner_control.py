"""Cancel, pause/resume and a job taken away mid-training, with the flags set from another thread."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from sqlalchemy import update
from worker_helpers import (
    artifacts,
    checkpoints,
    create_job,
    events,
    job_row,
    job_spec,
    metric_series,
    slow_training_steps,
    when_step_reached,
)

from sparsegrad_service import transitions
from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Job
from sparsegrad_service.settings import Settings
from worker.runner import JobRunner, Outcome

SPEC = job_spec(hyperparameters={"max_steps": 16, "checkpoint_every": 6})


def request(settings: Settings, job_id: str, what: Callable[..., bool]) -> Callable[[], None]:
    def act() -> None:
        with session_scope(settings.sql_url) as session:
            job = session.get(Job, job_id)
            assert job is not None and what(session, job)

    return act


def test_cancel_mid_training(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(db_url)
    job_id = create_job(settings, sst2_bytes, SPEC)
    slow_training_steps(monkeypatch, 0.1)
    watcher = when_step_reached(settings, job_id, 3, request(settings, job_id, transitions.request_cancel))
    assert JobRunner(settings, job_id).run() == Outcome.cancelled
    watcher.join()

    job = job_row(settings, job_id)
    assert job.status == "cancelled" and job.finished_at is not None and job.phase is None
    assert 3 <= job.step < 16
    assert artifacts(settings, job_id) == {}
    stored = [e.data["step"] for e in events(settings, job_id) if e.type == "checkpoint"]
    assert all(step % 6 == 0 for step in stored)  # periodic ones only: a cancelled job's last state is not stored
    assert checkpoints(settings, job_id) == []  # and once cancelled it keeps none (keep_finished_checkpoints 0)
    assert events(settings, job_id)[-1].message == f"Job cancelled at step {job.step}."
    assert not (settings.work_dir / job_id).exists()


def test_pause_then_resume_continues_exactly(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(pg_db)
    reference = create_job(settings, sst2_bytes, SPEC)
    assert JobRunner(settings, reference).run() == Outcome.succeeded

    job_id = create_job(settings, sst2_bytes, SPEC)
    with monkeypatch.context() as patch:
        slow_training_steps(patch, 0.1)
        watcher = when_step_reached(settings, job_id, 3, request(settings, job_id, transitions.request_pause))
        assert JobRunner(settings, job_id).run() == Outcome.paused
        watcher.join()
    job = job_row(settings, job_id)
    paused_at = job.step
    assert job.status == "paused" and not job.pause_requested and 3 <= paused_at < 16
    assert job.last_checkpoint_step == paused_at
    assert paused_at in [c.step for c in checkpoints(settings, job_id)]
    assert events(settings, job_id)[-1].message.startswith(f"Job paused at step {paused_at}")

    with session_scope(settings.sql_url) as session:
        assert transitions.request_resume(session, session.get(Job, job_id))  # type: ignore[arg-type]
    assert JobRunner(settings, job_id).run() == Outcome.succeeded

    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.step == 16 and job.attempts == 1
    messages = [e.message for e in events(settings, job_id)]
    assert f"Resuming from checkpoint at step {paused_at}." in messages
    assert sum(m.startswith("Phase: calibrating") for m in messages) == 1  # the bases come from the checkpoint
    losses = metric_series(settings, job_id, "loss")
    assert [s for s, _ in losses] == list(range(1, 17))
    expected = metric_series(settings, reference, "loss")
    assert [v for _, v in losses] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(torch.tensor(job.summary["probe"]["logits"]),  # type: ignore[index]
                               torch.tensor(job_row(settings, reference).summary["probe"]["logits"]))  # type: ignore[index]
    assert job.trained_tokens == pytest.approx(job_row(settings, reference).trained_tokens, rel=0.01)


def test_a_job_taken_away_stops_without_writing(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(pg_db)
    job_id = create_job(settings, sst2_bytes, SPEC)
    slow_training_steps(monkeypatch, 0.1)
    seen: list[int] = []

    def take_over() -> None:  # the reaper requeued the job and another worker claimed it
        with session_scope(settings.sql_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(worker_id="elsewhere:1", attempts=2))
        seen.append(len(events(settings, job_id)))

    watcher = when_step_reached(settings, job_id, 3, take_over)
    assert JobRunner(settings, job_id).run() == Outcome.lost
    watcher.join()
    job = job_row(settings, job_id)
    assert job.status == "running" and job.worker_id == "elsewhere:1"
    assert len(events(settings, job_id)) == seen[0]
    assert artifacts(settings, job_id) == {}


def test_a_job_that_is_not_queued_is_skipped(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(pg_db)
    job_id = create_job(settings, sst2_bytes, SPEC)
    with session_scope(settings.sql_url) as session:
        assert transitions.request_cancel(session, session.get(Job, job_id))  # type: ignore[arg-type]
    assert JobRunner(settings, job_id).run() == Outcome.skipped
    assert job_row(settings, job_id).attempts == 0
