"""A finished job's outputs in the artifact store, each recorded in SQL only once fully written.

* ``{job_id}-adapter.tar.gz`` (kind ``adapter``): the SparseGrad or LoRA export folder packed with
  ``pack_directory``; it unpacks to the directory ``load_adapter`` / ``merge_exported`` read
  (``adapter_config.json``, weights, ``training_info.json``).
* ``{job_id}-merged.tar.gz`` (kind ``merged_model``): ``save_pretrained`` + tokenizer, loadable with
  ``AutoModel*.from_pretrained``. Full fine-tuning and MeProp export the whole model, which is stored
  only under this kind; adapters are merged into it when the job asks for ``merge_model`` (or later,
  by the ``merge_job`` task).
* ``{job_id}-metrics.csv`` (kind ``metrics``): ``step,name,value`` rows of every metric point.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from sparsegrad_core.loading import load_base_model
from sparsegrad_core.training import merge_exported, read_training_info
from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import ArtifactKind, JobStatus
from sparsegrad_service.lifecycle import LostJobError
from sparsegrad_service.models import Artifact, Job, MetricPoint
from sparsegrad_service.store import ArtifactStore, artifact_key, pack_directory


@dataclass(frozen=True)
class StoredArtifact:
    id: str
    kind: ArtifactKind
    filename: str
    bytes: int
    sha256: str


def artifact_filename(job_id: str, kind: ArtifactKind) -> str:
    suffix = {ArtifactKind.adapter: "adapter.tar.gz", ArtifactKind.lora: "lora.tar.gz",
              ArtifactKind.merged_model: "merged.tar.gz",
              ArtifactKind.metrics: "metrics.csv"}[kind]
    return f"{job_id}-{suffix}"


def record_artifact(sql_url: str, job_id: str, kind: ArtifactKind, filename: str, key: str, size: int,
                    sha256: str, worker_id: str | None = None) -> StoredArtifact:
    """Insert the Artifact row of a stored object (replacing an earlier one of the same kind). With
    ``worker_id``, only while that worker still holds the running job (the row is locked meanwhile), so a
    worker that lost its job never replaces the artifacts of the attempt that took it over."""
    with session_scope(sql_url) as session:
        if worker_id is not None:
            held = session.execute(
                select(Job.id).where(Job.id == job_id, Job.worker_id == worker_id,
                                     Job.status.in_([str(JobStatus.running), str(JobStatus.cancelling)]))
                .with_for_update()
            ).first()
            if held is None:
                raise LostJobError(f"job {job_id} is no longer held by worker {worker_id}")
        session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.kind == str(kind)))
        row = Artifact(job_id=job_id, kind=str(kind), filename=filename, bytes=size, sha256=sha256,
                       storage_key=key)
        session.add(row)
        session.flush()
        return StoredArtifact(row.id, kind, filename, size, sha256)


def store_folder(sql_url: str, store: ArtifactStore, job_id: str, kind: ArtifactKind, folder: Path,
                 scratch: Path, worker_id: str | None = None) -> StoredArtifact:
    """Pack ``folder`` (members relative to it), store it under the job's key for ``kind``, record it."""
    filename = artifact_filename(job_id, kind)
    archive = pack_directory(folder, scratch / filename)
    try:
        stored = store.put_file(artifact_key(job_id, filename), archive)
    finally:
        archive.unlink(missing_ok=True)
    return record_artifact(sql_url, job_id, kind, filename, stored.key, stored.bytes, stored.sha256, worker_id)


def metrics_csv(sql_url: str, job_id: str) -> bytes:
    """Every metric point of the job as ``step,name,value`` (ordered by name, then step)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "name", "value"])
    with session_scope(sql_url) as session:
        rows = session.execute(
            select(MetricPoint.step, MetricPoint.name, MetricPoint.value)
            .where(MetricPoint.job_id == job_id).order_by(MetricPoint.name, MetricPoint.step)
        )
        for step, name, value in rows:
            writer.writerow([step, name, repr(float(value))])
    return out.getvalue().encode()


def store_metrics(sql_url: str, store: ArtifactStore, job_id: str, worker_id: str | None = None) -> StoredArtifact:
    filename = artifact_filename(job_id, ArtifactKind.metrics)
    stored = store.put_bytes(artifact_key(job_id, filename), metrics_csv(sql_url, job_id))
    return record_artifact(sql_url, job_id, ArtifactKind.metrics, filename, stored.key, stored.bytes, stored.sha256,
                           worker_id)


def write_merged_model(model_source: str, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge an exported adapter into a freshly loaded base model and save it with its tokenizer."""
    info = read_training_info(adapter_dir)
    if not info.get("task"):
        raise ValueError(f"{adapter_dir} has no training_info.json with the task")
    base, tokenizer = load_base_model(model_source, info["task"], num_labels=info.get("num_labels"),
                                      label_names=info.get("label_names"))
    merged = merge_exported(base, adapter_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    merged.save_pretrained(out_dir)  # type: ignore[operator]
    tokenizer.save_pretrained(out_dir)
    return out_dir


def discard_artifacts(sql_url: str, store: ArtifactStore, job_id: str, stored: list[StoredArtifact]) -> None:
    """Remove the rows and objects of artifacts stored for a job that was cancelled while saving."""
    with session_scope(sql_url) as session:
        session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    for artifact in stored:
        store.delete(artifact_key(job_id, artifact.filename))
