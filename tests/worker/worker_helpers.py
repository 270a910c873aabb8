"""Shared by the worker tests: a normalized job spec, creating a queued job on an uploaded file, queries of
what a job wrote, and tools to act while a job trains."""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sparsegrad_core.training import trainer as trainer_module
from sparsegrad_service.db import session_scope
from sparsegrad_service.models import (
    Artifact,
    Checkpoint,
    File,
    Job,
    JobEvent,
    MetricPoint,
    Tenant,
    new_id,
    utcnow,
)
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore, file_key

BASE_SPEC: dict[str, Any] = {
    "task": {"type": "classification", "text_column": "text", "text_pair_column": None, "label_column": "label",
             "messages_column": "messages", "has_header": True, "num_labels": 2, "label_names": ["0", "1"]},
    "method": {"type": "sparsegrad", "setting": "paper",
               "sparsegrad": {"density": 0.05, "calibration_steps": 3, "selection": "dynamic"},
               "lora": {"rank": 2, "alpha": None, "dropout": 0.0}, "meprop": {"density": 0.05}},
    "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "sparse_learning_rate": None,
                        "max_seq_length": 32, "max_steps": 20, "gradient_accumulation_steps": 1,
                        "lr_scheduler": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": None,
                        "eval_every": None, "early_stopping_patience": None, "checkpoint_every": 8,
                        "group_by_length": True, "original_share_every": 5, "gradient_checkpointing": False},
    "validation_split": 0.2,
    "merge_model": False,
}


def job_spec(**changes: Any) -> dict[str, Any]:
    """BASE_SPEC with ``section={...}`` merged into that section (or a top-level value replaced)."""
    spec = copy.deepcopy(BASE_SPEC)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def add_file(settings: Settings, tenant_id: str, data: bytes, filename: str = "train.jsonl") -> str:
    file_id = new_id("file")
    stored = LocalArtifactStore(settings.artifact_root).put_bytes(file_key(file_id), data)
    with session_scope(settings.sql_url) as session:
        session.add(File(id=file_id, tenant_id=tenant_id, filename=filename, bytes=stored.bytes,
                         sha256=hashlib.sha256(data).hexdigest(), format=filename.rsplit(".", 1)[-1],
                         num_examples=data.count(b"\n"), task="classification", storage_key=stored.key))
    return file_id


def create_job(settings: Settings, train: bytes, spec: dict[str, Any] | None = None, *,
               validation: bytes | None = None, model: str = "tiny-bert", seed: int = 7,
               suffix: str | None = None) -> str:
    """A tenant, its uploaded file(s) and a queued job on them; returns the job id."""
    with session_scope(settings.sql_url) as session:
        tenant = Tenant(name=new_id("tenant"))
        session.add(tenant)
        session.flush()
        tenant_id = tenant.id
    train_id = add_file(settings, tenant_id, train)
    valid_id = None if validation is None else add_file(settings, tenant_id, validation, "valid.jsonl")
    with session_scope(settings.sql_url) as session:
        job = Job(tenant_id=tenant_id, model=model, training_file_id=train_id, validation_file_id=valid_id,
                  spec=spec or job_spec(), status="queued", seed=seed, suffix=suffix, queued_at=utcnow(),
                  max_attempts=settings.max_attempts)
        session.add(job)
        session.flush()
        return job.id


def job_row(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.sql_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def events(settings: Settings, job_id: str) -> list[JobEvent]:
    with session_scope(settings.sql_url) as session:
        rows = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))
        session.expunge_all()
        return rows


def metric_series(settings: Settings, job_id: str, name: str) -> list[tuple[int, float]]:
    with session_scope(settings.sql_url) as session:
        return [(int(s), float(v)) for s, v in session.execute(
            select(MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.job_id == job_id, MetricPoint.name == name).order_by(MetricPoint.step))]


def checkpoints(settings: Settings, job_id: str) -> list[Checkpoint]:
    with session_scope(settings.sql_url) as session:
        rows = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)))
        session.expunge_all()
        return rows


def artifacts(settings: Settings, job_id: str) -> dict[str, Artifact]:
    with session_scope(settings.sql_url) as session:
        rows = {a.kind: a for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
        session.expunge_all()
        return rows


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slow_training_steps(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every optimizer step take at least ``seconds`` (room to act while a job trains)."""
    original = trainer_module.Trainer._train_step

    def slow(self: Any, micro_batches: list[list[int]]) -> dict[str, float]:
        time.sleep(seconds)
        return original(self, micro_batches)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", slow)


def when_step_reached(settings: Settings, job_id: str, step: int, action: Callable[[], Any],
                      timeout: float = 60.0) -> threading.Thread:
    """Start a thread that runs ``action`` once ``Job.step`` reaches ``step``."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if job_row(settings, job_id).step >= step:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
