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


def test_calibration_progress_is_in_the_events(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tiny_model_dir: Path
) -> None:
    """Block selection calibrates in two passes over 3 batches: the events report pass i of 6 with the time left,
    from the first pass to the last, before training starts."""
    settings = make_settings(sqlite_db)
    spec = job_spec(method={"sparsegrad": {"density": 0.05, "calibration_steps": 3, "selection": "block"}},
                    hyperparameters={"max_steps": 2})
    job_id = create_job(settings, sst2_bytes, spec)
    assert JobRunner(settings, job_id).run() == Outcome.succeeded

    evs = events(settings, job_id)
    calibration = [e for e in evs if e.type == "metrics" and (e.data or {}).get("phase") == "calibrating"]
    assert calibration, [e.message for e in evs]
    first, last = calibration[0].data, calibration[-1].data
    assert (first["step"], first["total"]) == (1, 6) and (last["step"], last["total"]) == (6, 6)
    assert first["eta_seconds"] > 0 and last["eta_seconds"] == 0 and first["calibration_loss"] > 0
    assert calibration[0].message.startswith("Calibration pass 1/6: loss=") and "left" in calibration[0].message
    assert calibration[-1].message.startswith("Calibration pass 6/6")
    order = [e.seq for e in evs]
    training = next(e.seq for e in evs if e.type == "phase" and e.data["phase"] == "training")
    assert all(order.index(e.seq) < order.index(training) for e in calibration)
    assert [s for s, _ in metric_series(settings, job_id, "calibration_loss")] == list(range(1, 7))
