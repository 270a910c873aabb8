"""MergeJob: add a ``merged_model`` artifact to a succeeded job after the fact (the ``merge_job`` task).

Fetch the job's adapter archive from the store, merge it into a fresh copy of the model the job trained from
(the registered base model, or the fine-tuned model it continued: :mod:`worker.parents`) (``merge_exported``), save it with its tokenizer, pack and store it, record the artifact and an event.
Idempotent: a job that already has a merged model (full fine-tuning exports one) is left as it is. However
it ends, the run serves the request it started for (``Job.merge_requested_at``, which keeps the model and the
job from being deleted meanwhile).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path

from sparsegrad_core.recipe import merge
from sparsegrad_service.enums import ArtifactKind, EventLevel, EventType, JobStatus
from sparsegrad_service.job_store import JobStore
from sparsegrad_service.live import LiveChannel
from sparsegrad_service.retention import merge_scratch_prefix
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore, make_store, unpack_archive

from .artifacts import store_folder
from .errors import JobError
from .parents import materialize, resolve_job_model

log = logging.getLogger("sparsegrad.worker")


class MergeOutcome(StrEnum):
    merged = "merged"
    exists = "exists"


class MergeJob:
    def __init__(self, settings: Settings, job_id: str, *, store: ArtifactStore | None = None) -> None:
        self.settings, self.job_id = settings, job_id
        self.store: ArtifactStore = store if store is not None else make_store(settings)
        self.job_store = JobStore(settings.sql_url, job_id)

    def _adapter_key(self) -> tuple[str, str]:
        """``(model name, adapter storage key)``; JobError if there is nothing to merge."""
        job = self.job_store.outputs()
        if job is None or job.status != JobStatus.succeeded:
            raise JobError("job_not_mergeable", f"job {self.job_id} has not succeeded; nothing to merge")
        if ArtifactKind.merged_model in job.artifact_keys:
            return job.model, ""
        adapter_key = job.artifact_keys.get(ArtifactKind.adapter)
        if adapter_key is None:
            raise JobError("job_not_mergeable", f"job {self.job_id} has no adapter artifact")
        return job.model, adapter_key

    def run(self) -> MergeOutcome:
        """Merge, or record why not as an ``error`` event the user sees (then re-raise for the log)."""
        requested_at = self.job_store.merge_requested_at()
        try:
            return self._merge()
        except Exception as exc:
            message = exc.message if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
            self.job_store.add_event(EventType.error, f"Merging the model failed: {message}"[:2000],
                                     {"code": getattr(exc, "code", "merge_error")}, level=EventLevel.error)
            LiveChannel(self.settings).notify(self.job_id)
            raise
        finally:
            self.job_store.end_merge_request(requested_at)

    def _merge(self) -> MergeOutcome:
        model, key = self._adapter_key()
        if not key:
            return MergeOutcome.exists
        start = resolve_job_model(self.settings, self.job_store, model)  # a base model, or the model it continued
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=merge_scratch_prefix(self.job_id), dir=self.settings.work_dir) as tmp:
            work = Path(tmp)
            source = materialize(self.store, start, work / "parent")
            archive = self.store.fetch(key, work / "adapter.tar.gz")
            adapter_dir = unpack_archive(archive, work / "adapter")
            archive.unlink()
            merged = work / "merged"
            merge(source, adapter_dir, merged)
            shutil.rmtree(adapter_dir, ignore_errors=True)
            artifact = store_folder(self.job_store, self.store, ArtifactKind.merged_model, merged, work)
        self.job_store.add_event(
            EventType.message, f"Saved merged_model artifact {artifact.filename} ({artifact.bytes:,} bytes).",
            {"artifact_id": artifact.id, "kind": artifact.kind.value, "bytes": artifact.bytes,
             "sha256": artifact.sha256})
        LiveChannel(self.settings).notify(self.job_id)
        log.info("job %s: merged model stored (%s bytes)", self.job_id, artifact.bytes)
        return MergeOutcome.merged
