"""Cancel and pause requested in each phase of a job — queued, calibrating, training, evaluating (a periodic
evaluation and the final one), saving, and after the last artifact was stored — end in the right state.

The request is made with the same ``transitions`` call the API makes, at the moment the worker enters the phase
(so the timing is exact, not a race against a sleep), from a separate database session.

Expected:

* cancel → ``cancelled`` in every phase, with no artifact listed and none left in the store, and no
  fine-tuned model name;
* pause while queued, calibrating, training or in a periodic evaluation → ``paused``; resuming finishes the job
  with every training step's loss exactly once;
* pause in the final evaluation or while saving → the job completes (there is nothing left to pause), the pause
  request is cleared, and an event says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from worker_helpers import artifacts, create_job, events, job_row, job_spec, metric_series

from sparsegrad_service import transitions
from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Job
from sparsegrad_service.settings import Settings
from worker import finalize
from worker.callbacks import ServiceCallback
from worker.runner import JobRunner, Outcome

STEPS = 12
SPEC = job_spec(hyperparameters={"max_steps": STEPS, "eval_every": 4, "checkpoint_every": 6})
ACTIONS = {"cancel": transitions.request_cancel, "pause": transitions.request_pause}


def request(settings: Settings, job_id: str, action: str) -> None:
    with session_scope(settings.sql_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and ACTIONS[action](session, job), f"{action} was refused"


def act_on_phase(monkeypatch: pytest.MonkeyPatch, settings: Settings, job_id: str, action: str,
                 when: Callable[[ServiceCallback, str], bool]) -> list[str]:
    """Make ``action`` happen the first time the worker enters a phase for which ``when`` holds."""
    original = ServiceCallback.enter_phase
    done: list[str] = []

    def enter_phase(self: ServiceCallback, name: str) -> None:
        original(self, name)
        if not done and when(self, name):
            done.append(f"{name}@{self.step}")
            request(settings, job_id, action)

    monkeypatch.setattr(ServiceCallback, "enter_phase", enter_phase)
    return done


PHASES: dict[str, Callable[[ServiceCallback, str], bool]] = {
    "calibrating": lambda cb, name: name == "calibrating",
    "training": lambda cb, name: name == "training" and cb.step > 0,  # back to training after step 4's evaluation
    "periodic evaluation": lambda cb, name: name == "evaluating" and 0 < cb.step < cb.total_steps,
    "final evaluation": lambda cb, name: name == "evaluating" and cb.step == cb.total_steps > 0,
    "saving": lambda cb, name: name == "saving",
}


def assert_nothing_kept(settings: Settings, job_id: str) -> None:
    job = job_row(settings, job_id)
    assert job.status == "cancelled" and job.finished_at is not None and job.fine_tuned_model is None, job.status
    assert job.phase is None and not job.pause_requested
    assert artifacts(settings, job_id) == {}
    stored = settings.artifact_root / "jobs" / job_id
    assert not (stored / "artifacts").exists() or not any((stored / "artifacts").iterdir())
    assert not (settings.work_dir / job_id).exists()


def assert_resumes_to_the_end(settings: Settings, job_id: str) -> None:
    with session_scope(settings.sql_url) as session:
        assert transitions.request_resume(session, session.get(Job, job_id))  # type: ignore[arg-type]
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.step == STEPS and not job.pause_requested
    assert [s for s, _ in metric_series(settings, job_id, "loss")] == list(range(1, STEPS + 1))
    assert set(artifacts(settings, job_id)) == {"adapter", "metrics"}


@pytest.fixture()
def settings(pg_db: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(pg_db)


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_queued(settings: Settings, sst2_bytes: bytes, action: str) -> None:
    job_id = create_job(settings, sst2_bytes, SPEC)
    request(settings, job_id, action)
    assert JobRunner(settings, job_id).run() == Outcome.skipped
    assert job_row(settings, job_id).attempts == 0
    if action == "cancel":
        assert_nothing_kept(settings, job_id)
    else:
        assert job_row(settings, job_id).status == "paused"
        assert_resumes_to_the_end(settings, job_id)


@pytest.mark.parametrize("phase", list(PHASES))
def test_cancel(settings: Settings, sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch, phase: str) -> None:
    job_id = create_job(settings, sst2_bytes, SPEC)
    with monkeypatch.context() as patch:
        done = act_on_phase(patch, settings, job_id, "cancel", PHASES[phase])
        assert JobRunner(settings, job_id).run() == Outcome.cancelled
    assert done, f"the job never entered {phase}"
    assert_nothing_kept(settings, job_id)
    last = events(settings, job_id)[-1].message
    assert last.startswith("Job cancelled"), last
    if phase == "calibrating":
        assert job_row(settings, job_id).step == 0 and metric_series(settings, job_id, "loss") == []


@pytest.mark.parametrize("phase", ["calibrating", "training", "periodic evaluation"])
def test_pause_then_resume(settings: Settings, sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch,
                           phase: str) -> None:
    job_id = create_job(settings, sst2_bytes, SPEC)
    with monkeypatch.context() as patch:
        done = act_on_phase(patch, settings, job_id, "pause", PHASES[phase])
        assert JobRunner(settings, job_id).run() == Outcome.paused
    assert done, f"the job never entered {phase}"
    job = job_row(settings, job_id)
    assert job.status == "paused" and not job.pause_requested and job.phase is None
    assert artifacts(settings, job_id) == {}
    if phase == "calibrating":
        assert job.step == 0 and job.last_checkpoint_step is None
    else:
        assert job.step == 4 and job.last_checkpoint_step == 4
    assert_resumes_to_the_end(settings, job_id)


@pytest.mark.parametrize("phase", ["final evaluation", "saving"])
def test_a_pause_after_training_lets_the_job_complete(
    settings: Settings, sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    job_id = create_job(settings, sst2_bytes, SPEC)
    with monkeypatch.context() as patch:
        done = act_on_phase(patch, settings, job_id, "pause", PHASES[phase])
        assert JobRunner(settings, job_id).run() == Outcome.succeeded
    assert done
    job = job_row(settings, job_id)
    assert job.status == "succeeded" and not job.pause_requested and job.fine_tuned_model is not None
    assert set(artifacts(settings, job_id)) == {"adapter", "metrics"}
    messages = [e.message for e in events(settings, job_id)]
    assert "Training had finished when the pause arrived; completing the job instead." in messages


def test_a_cancel_after_the_last_artifact_still_wins(
    settings: Settings, sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands between storing the metrics CSV (the last artifact) and marking the job succeeded."""
    job_id = create_job(settings, sst2_bytes, SPEC)
    original = finalize.store_metrics

    def store_then_cancel(*args: Any, **kwargs: Any) -> Any:
        stored = original(*args, **kwargs)
        assert set(artifacts(settings, job_id)) == {"adapter", "metrics"}
        request(settings, job_id, "cancel")
        return stored

    monkeypatch.setattr(finalize, "store_metrics", store_then_cancel)
    assert JobRunner(settings, job_id).run() == Outcome.cancelled
    assert_nothing_kept(settings, job_id)
