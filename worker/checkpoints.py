"""Checkpoints in the artifact store: upload the trainer's checkpoint, restore it on resume, and keep the newest
of a completed run as models (:func:`store_checkpoint_models`).

One stored checkpoint is one ``.tar.gz`` (``store.checkpoint_key(job_id, step)``) of the trainer's checkpoint
bundle (``sparsegrad_core.training.bundle_checkpoint``: the step's tensors, optimizer moments, RNG states and data
position, and the calibrated bases). Unpacked into a fresh run folder it is exactly what
``prepare_for_training(resume_from=...)`` and ``Trainer.train(resume_from=...)`` read, so a resumed attempt
neither recalibrates nor replays anything differently.

Checkpoints are gzip archives with ``pack_directory``'s layout but stored without compression: trained
float tensors and optimizer moments barely compress (about 7 %), and deflating them costs seconds per
hundred megabytes on every checkpoint of a running job.

A completed run's newest ``keep`` checkpoints, its final step first, become models: the trained state of each
step exported in the method's format (``export_trained``: the adapter, or the whole model) and packed like the
job's own adapter artifact (``{job}/checkpoints/step-{step}-model.tar.gz``), so every loader of a fine-tuned
model reads them. When the job ends its resume archives leave the store (see
:mod:`sparsegrad_service.retention`): a finished job cannot resume, and a model is much smaller.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from sparsegrad_core.methods import PreparedModel
from sparsegrad_core.training import bundle_checkpoint, bundled_checkpoint
from sparsegrad_core.training.checkpoint import load_checkpoint, restore_trainable_state, trainable_state
from sparsegrad_core.training.export import export_trained, read_training_info
from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.job_store import StoredCheckpoint, WorkerJobStore
from sparsegrad_service.store import (
    ArtifactStore,
    StoreError,
    checkpoint_key,
    file_digest,
    job_prefix,
    pack_directory,
    unpack_archive,
)

KEEP_STORED = 2
"""Stored checkpoints kept per job (older ones are deleted from the store and SQL)."""


def pack_checkpoint(checkpoint_dir: Path, staging: Path) -> Path:
    """One archive of the bundle of a trainer checkpoint (``bundle_checkpoint``); returns the archive path."""
    shutil.rmtree(staging, ignore_errors=True)
    tree = bundle_checkpoint(checkpoint_dir, staging / "tree")
    archive = pack_directory(tree, staging / "checkpoint.tar.gz", compresslevel=0)
    shutil.rmtree(tree, ignore_errors=True)
    return archive


def upload_checkpoint(
    job_store: WorkerJobStore, store: ArtifactStore, step: int, checkpoint_dir: Path, staging: Path,
    metrics: dict[str, Any], keep: int = KEEP_STORED,
) -> StoredCheckpoint | None:
    """Pack and store the checkpoint of ``step``, record it (replacing a row of the same step), point
    ``Job.last_checkpoint_step`` at it and prune older stored checkpoints beyond the newest ``keep``.
    Returns None (recording nothing) if the job is no longer held by this worker. The SQL part waits out
    a lost database connection for up to the job store's ``retry_s`` seconds."""
    archive = pack_checkpoint(checkpoint_dir, staging)
    try:
        stored = store.put_file(checkpoint_key(job_store.job_id, step), archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    recorded = job_store.record_checkpoint(step, stored, metrics, keep=keep)
    if recorded is None:
        return None
    result, old_keys = recorded
    for key in old_keys:
        with contextlib.suppress(StoreError, OSError):  # an orphan object costs disk, never correctness
            store.delete(key)
    return result


def restore_checkpoint(store: ArtifactStore, checkpoint: StoredCheckpoint, run_dir: Path) -> Path:
    """Fetch and unpack a stored checkpoint into ``run_dir``; returns the step folder to resume from.
    Raises StoreError if the object is missing or does not match its recorded sha256."""
    archive = store.fetch(checkpoint.storage_key, run_dir / ".restore" / "checkpoint.tar.gz")
    _, sha256 = file_digest(archive)
    if sha256 != checkpoint.sha256:
        raise StoreError(f"checkpoint {checkpoint.storage_key} does not match its recorded sha256")
    unpack_archive(archive, run_dir)
    shutil.rmtree(archive.parent, ignore_errors=True)
    try:
        return bundled_checkpoint(run_dir, checkpoint.step)
    except FileNotFoundError as exc:
        raise StoreError(f"checkpoint {checkpoint.storage_key} holds {exc}") from exc


def checkpoint_model_key(job_id: str, step: int) -> str:
    """Where the model of job ``job_id``'s checkpoint at ``step`` is stored."""
    return f"{job_prefix(job_id)}/checkpoints/step-{step:08d}-model.tar.gz"


def _store_model(job_store: WorkerJobStore, store: ArtifactStore, step: int, kind: ArtifactKind, folder: Path,
                 scratch: Path, metrics: dict[str, Any] | None = None) -> int:
    archive = pack_directory(folder, scratch / f"step-{step}-model.tar.gz")
    try:
        stored = store.put_file(checkpoint_model_key(job_store.job_id, step), archive)
    finally:
        archive.unlink(missing_ok=True)
    job_store.record_checkpoint_model(step, kind, stored, metrics)
    return step


def store_checkpoint_models(
    job_store: WorkerJobStore, store: ArtifactStore, prepared: PreparedModel, tokenizer: PreTrainedTokenizerBase,
    export_dir: Path, final_step: int, keep: int, scratch: Path, final_metrics: dict[str, Any] | None = None,
) -> list[int]:
    """Store the newest ``keep`` checkpoints of a completed run as models: the final step (the run's export,
    ``export_dir``) and the newest stored resume checkpoints before it, each restored into ``prepared`` and
    exported as the run exported its result (``training_info.json`` says which step). ``prepared`` ends in
    its final state again. Returns the steps stored, newest first; raises ``LostJobError`` once the job is not
    this worker's."""
    if keep <= 0:
        return []
    kind = ArtifactKind.adapter if prepared.method.exports_adapter else ArtifactKind.merged_model
    steps = [_store_model(job_store, store, final_step, kind, export_dir, scratch, final_metrics)]
    older = [c for c in job_store.resume_checkpoints() if c.step < final_step][: keep - 1]
    if not older:
        return steps
    info = {k: v for k, v in read_training_info(export_dir).items() if k != "method"}
    final_state = trainable_state(prepared.model)
    try:
        for checkpoint in older:
            work = scratch / f"checkpoint-{checkpoint.step}"
            load_checkpoint(restore_checkpoint(store, checkpoint, work / "run"), prepared.model, None,
                            restore_rng=False)
            export = export_trained(prepared, tokenizer, work / "export", {**info, "checkpoint_step": checkpoint.step})
            steps.append(_store_model(job_store, store, checkpoint.step, kind, export, scratch))
            shutil.rmtree(work, ignore_errors=True)
    finally:
        restore_trainable_state(prepared.model, final_state)
    return steps
