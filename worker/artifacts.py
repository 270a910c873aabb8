"""A finished job's outputs in the artifact store, each recorded in SQL only once fully written.

* ``{job_id}-adapter.tar.gz`` (kind ``adapter``): the SparseGrad or LoRA export folder packed with
  ``pack_directory``; it unpacks to the directory ``load_adapter`` / ``merge_exported`` read
  (``adapter_config.json``, weights, ``training_info.json``).
* ``{job_id}-merged.tar.gz`` (kind ``merged_model``): ``save_pretrained`` + tokenizer, loadable with
  ``AutoModel*.from_pretrained``. Full fine-tuning and MeProp export the whole model, which is stored
  only under this kind; adapters are merged into it when the job asks for ``merge_model`` (or later,
  by the ``merge_job`` task).
* ``{job_id}-metrics.csv`` (kind ``metrics``): OpenAI's result-file columns, one row per step (see
  :func:`metrics_csv`).
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


RESULT_COLUMNS: dict[str, str | None] = {
    "train_loss": "loss", "train_accuracy": None, "valid_loss": "eval_loss", "valid_mean_token_accuracy": None}
"""OpenAI's result-file columns after ``step``, each with the metric it shows (None: not measured here, so empty;
a classification job's ``eval_accuracy`` is per example, not per token, and keeps its own column)."""


def metrics_csv(job_store: JobStore) -> bytes:
    """Every metric point of the job as OpenAI's result file: ``step``, then :data:`RESULT_COLUMNS`, then one
    column per other metric by name (``eval_accuracy``, ``lr``, ``step_time_s``, ...; ``calibration_loss`` is
    per calibration pass); one row per step in order, an empty cell where that step has no such point."""
    rows: dict[int, dict[str, float]] = {}
    for step, name, value in job_store.metric_points():
        rows.setdefault(step, {})[name] = value
    shown = {name for name in RESULT_COLUMNS.values() if name}
    others = sorted({name for values in rows.values() for name in values} - shown)
    columns = [*RESULT_COLUMNS.values(), *others]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *RESULT_COLUMNS, *others])
    for step in sorted(rows):
        values = rows[step]
        writer.writerow([step, *("" if name not in values else repr(float(values[name])) for name in columns)])
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
