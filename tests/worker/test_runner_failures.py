"""Bad input fails the job with a code and a message naming the problem; an exception inside the model
fails only that job, and the same process runs the next one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import BertForSequenceClassification
from worker_helpers import create_job, events, job_row, job_spec

from sparsegrad_service.settings import Settings
from worker.runner import JobRunner, Outcome

SHORT = job_spec(hyperparameters={"max_steps": 4, "checkpoint_every": 2})


def assert_failed(settings: Settings, job_id: str, code: str, param: str | None) -> str:
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.finished_at is not None and job.phase is None
    assert job.error is not None and job.error["code"] == code and job.error["param"] == param
    last = events(settings, job_id)[-1]
    assert (last.type, last.level, last.data) == ("error", "error", {"code": code})
    assert last.message == job.error["message"]
    assert not (settings.work_dir / job_id).exists()
    return str(job.error["message"])


def test_bad_training_file_names_the_line(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(db_url)
    lines = sst2_bytes.splitlines(keepends=True)
    bad = b"".join(lines[:2]) + b'{"text": "no label here"}\n' + b"".join(lines[3:40])
    job_id = create_job(settings, bad, SHORT)
    assert JobRunner(settings, job_id).run() == Outcome.failed
    message = assert_failed(settings, job_id, "invalid_training_file", "training_file")
    assert "train.jsonl:3: field 'label'" in message


def test_bad_validation_file_is_reported_as_such(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(pg_db)
    validation = b'{"text": "fine", "label": 1}\n{"text": "unknown class", "label": 7}\n'
    job_id = create_job(settings, sst2_bytes, SHORT, validation=validation)
    assert JobRunner(settings, job_id).run() == Outcome.failed
    message = assert_failed(settings, job_id, "invalid_validation_file", "validation_file")
    assert "valid.jsonl:2" in message


def test_unknown_model_and_invalid_hyperparameters(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(pg_db)
    job_id = create_job(settings, sst2_bytes, SHORT, model="not-registered")
    assert JobRunner(settings, job_id).run() == Outcome.failed
    assert "not-registered" in assert_failed(settings, job_id, "model_not_available", "model")

    job_id = create_job(settings, sst2_bytes, job_spec(hyperparameters={"batch_size": 0}))
    assert JobRunner(settings, job_id).run() == Outcome.failed
    assert "batch_size" in assert_failed(settings, job_id, "invalid_hyperparameters", "hyperparameters")


def test_gradient_checkpointing_on_a_model_without_it_names_the_field(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BertForSequenceClassification, "supports_gradient_checkpointing", False)
    settings = make_settings(sqlite_db)
    job_id = create_job(settings, sst2_bytes, job_spec(hyperparameters={"gradient_checkpointing": True}))
    assert JobRunner(settings, job_id).run() == Outcome.failed
    message = assert_failed(settings, job_id, "invalid_hyperparameters", "hyperparameters.gradient_checkpointing")
    assert "BertForSequenceClassification does not support gradient checkpointing" in message
    assert "calibrating" not in [e.data["phase"] for e in events(settings, job_id) if e.type == "phase"]


def _exploding_forward(monkeypatch: pytest.MonkeyPatch, explode: Callable[[], None]) -> None:
    """Training forward passes after calibration and the first steps call ``explode``."""
    original = BertForSequenceClassification.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if self.training and calls["n"] > 6:
            explode()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", forward)


def _raise_value_error() -> None:
    raise ValueError("shapes (8, 33) and (32,) do not match")


def _allocate_32_tib() -> None:
    torch.empty(2**45, dtype=torch.uint8)  # the real CPU allocator refuses: more than the machine has


@pytest.mark.parametrize(("explode", "code"), [(_raise_value_error, "training_error"),
                                               (_allocate_32_tib, "out_of_memory")], ids=["exception", "oom"])
def test_a_failure_inside_the_model_fails_the_job_and_the_worker_goes_on(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, monkeypatch: pytest.MonkeyPatch,
    explode: Callable[[], None], code: str,
) -> None:
    settings = make_settings(pg_db)
    first = create_job(settings, sst2_bytes, SHORT)
    with monkeypatch.context() as patch:
        _exploding_forward(patch, explode)
        assert JobRunner(settings, first).run() == Outcome.failed
    message = assert_failed(settings, first, code, "hyperparameters" if code == "out_of_memory" else None)
    if code == "out_of_memory":
        assert message.startswith("The job ran out of memory on cpu. Lower hyperparameters.batch_size"), message
        assert "DefaultCPUAllocator: can't allocate memory: you tried to allocate 35184372088832 bytes" in message
    else:
        assert message == "shapes (8, 33) and (32,) do not match"

    second = create_job(settings, sst2_bytes, SHORT)
    assert JobRunner(settings, second).run() == Outcome.succeeded
    assert job_row(settings, second).status == "succeeded"


def test_cuda_out_of_memory_is_reported_with_advice() -> None:
    from worker.runner import failure
    error = failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "cuda:0 (H100)")
    assert error["code"] == "out_of_memory" and error["param"] == "hyperparameters"
    assert error["message"].endswith("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "ran out of memory on cuda:0 (H100)" in error["message"]


@pytest.mark.parametrize("broken", ["checkpoints", "artifacts"])
def test_artifact_store_write_failure_fails_the_job_and_lists_nothing(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, broken: str
) -> None:
    """The store's target for this job's checkpoints (or final artifacts) is a regular file, so every write
    there fails in the OS; the job fails with a storage error and no artifact row or partial file exists."""
    from sqlalchemy import select

    from sparsegrad_service.db import session_scope
    from sparsegrad_service.models import Artifact

    settings = make_settings(db_url)
    job_id = create_job(settings, sst2_bytes, SHORT)
    blocker = settings.artifact_root / "jobs" / job_id / broken
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")
    assert JobRunner(settings, job_id).run() == Outcome.failed
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.error is not None and job.error["code"] == "storage_error", job.error
    assert "cannot write to the artifact store" in str(job.error["message"]), job.error
    with session_scope(settings.sql_url) as session:
        assert session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all() == []
    leftovers = [p for p in (settings.artifact_root / "jobs" / job_id).rglob("*") if p.is_file() and p != blocker]
    assert leftovers == [] or (broken == "artifacts" and all("checkpoints" in str(p) for p in leftovers)), leftovers
    assert not list(settings.artifact_root.rglob(".tmp-*")), "a temporary file was left behind"
