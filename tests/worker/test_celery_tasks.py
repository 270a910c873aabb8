"""The Celery side: task names and policy, the thin run task, and the merge task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from worker_helpers import artifacts, create_job, events, job_row, job_spec, sha256_of

from sparsegrad_core.loading import load_tokenizer
from sparsegrad_service.queue import MERGE_JOB_TASK, RUN_JOB_TASK
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import unpack_archive
from worker import tasks
from worker.celery_app import app
from worker.errors import JobError
from worker.merge import MergeJob, MergeOutcome
from worker.probe import probe_logits


def test_tasks_are_registered_with_the_job_policy() -> None:
    app.loader.import_default_modules()
    for name in (RUN_JOB_TASK, MERGE_JOB_TASK):
        task = app.tasks[name]
        assert isinstance(task, tasks.JobTask) and task.name == name
        assert task.acks_late and task.max_retries == 0 and not task.autoretry_for
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1


def test_run_task_then_merge_task(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(pg_db)
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    job_id = create_job(settings, sst2_bytes, job_spec(hyperparameters={"max_steps": 6, "checkpoint_every": 3}))
    with pytest.raises(JobError, match="has not succeeded"):
        tasks.merge_job.run(job_id)
    assert tasks.run_job.run(job_id) == "succeeded"
    assert tasks.run_job.run(job_id) == "skipped"  # a duplicate delivery changes nothing
    assert set(artifacts(settings, job_id)) == {"adapter", "metrics"}

    assert tasks.merge_job.run(job_id) == MergeOutcome.merged
    merged = artifacts(settings, job_id)["merged_model"]
    archive = settings.artifact_root / merged.storage_key
    assert sha256_of(archive) == merged.sha256 and merged.filename == f"{job_id}-merged.tar.gz"
    assert events(settings, job_id)[-1].message.startswith("Saved merged_model artifact")
    model = AutoModelForSequenceClassification.from_pretrained(unpack_archive(archive, tmp_path / "merged"))
    probe = job_row(settings, job_id).summary["probe"]  # type: ignore[index]
    logits = probe_logits(model, load_tokenizer(tmp_path / "merged"), probe["texts"], None, probe["max_seq_length"])
    torch.testing.assert_close(torch.tensor(logits), torch.tensor(probe["logits"]), atol=1e-5, rtol=1e-4)
    assert MergeJob(settings, job_id).run() == MergeOutcome.exists
