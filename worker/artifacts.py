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
from pathlib import Path

from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.job_store import JobStore, StoredArtifact
from sparsegrad_service.store import ArtifactStore, artifact_key, pack_directory


def artifact_filename(job_id: str, kind: ArtifactKind) -> str:
    suffix = {ArtifactKind.adapter: "adapter.tar.gz", ArtifactKind.lora: "lora.tar.gz",
              ArtifactKind.merged_model: "merged.tar.gz",
              ArtifactKind.metrics: "metrics.csv"}[kind]
    return f"{job_id}-{suffix}"


def store_folder(job_store: JobStore, store: ArtifactStore, kind: ArtifactKind, folder: Path,
                 scratch: Path) -> StoredArtifact:
    """Pack ``folder`` (members relative to it), store it under the job's key for ``kind``, record it (for a
    worker's job store, only while the worker holds the job: ``LostJobError`` otherwise)."""
    filename = artifact_filename(job_store.job_id, kind)
    archive = pack_directory(folder, scratch / filename)
    try:
        stored = store.put_file(artifact_key(job_store.job_id, filename), archive)
    finally:
        archive.unlink(missing_ok=True)
    return job_store.record_artifact(kind, filename, stored)


def metrics_csv(job_store: JobStore) -> bytes:
    """Every metric point of the job as ``step,name,value`` (ordered by name, then step)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "name", "value"])
    for step, name, value in job_store.metric_points():
        writer.writerow([step, name, repr(float(value))])
    return out.getvalue().encode()


def store_metrics(job_store: JobStore, store: ArtifactStore) -> StoredArtifact:
    filename = artifact_filename(job_store.job_id, ArtifactKind.metrics)
    stored = store.put_bytes(artifact_key(job_store.job_id, filename), metrics_csv(job_store))
    return job_store.record_artifact(ArtifactKind.metrics, filename, stored)


def discard_artifacts(job_store: JobStore, store: ArtifactStore, stored: list[StoredArtifact]) -> None:
    """Remove the rows and objects of artifacts stored for a job that was cancelled while saving."""
    job_store.delete_artifacts()
    for artifact in stored:
        store.delete(artifact_key(job_store.job_id, artifact.filename))
