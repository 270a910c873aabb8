"""What a real (tiny) job tells its watchers: whether it holds out evaluation data and why, and how far
calibration has got."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from worker_helpers import create_job, events, job_row, job_spec, metric_series

from sparsegrad_service.settings import Settings
from worker.runner import JobRunner, Outcome


def test_a_small_training_file_trains_without_evaluation_and_says_so(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tiny_model_dir: Path
) -> None:
    """30 examples at validation_split 0.2 would evaluate on 6: the job trains on all 30, evaluates nothing,
    and an event says why."""
    settings = make_settings(sqlite_db)
    rows = b"".join(sst2_bytes.splitlines(keepends=True)[:30])
    job_id = create_job(settings, rows, job_spec(hyperparameters={"max_steps": 2}))
    assert JobRunner(settings, job_id).run() == Outcome.succeeded

    said = [e for e in events(settings, job_id) if e.type == "message" and e.data and "eval_source" in e.data]
    assert len(said) == 1 and said[0].message.startswith("No evaluation: 30 examples are too few to hold out 0.2")
    assert said[0].data["train_examples"] == 30 and said[0].data["eval_examples"] == 0
    summary = job_row(settings, job_id).summary or {}
    assert summary["eval_source"] == "none" and summary["train_examples"] == 30
    assert metric_series(settings, job_id, "eval_loss") == []
    phases = [e.data["phase"] for e in events(settings, job_id) if e.type == "phase"]
    assert "evaluating" not in phases
