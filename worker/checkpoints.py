"""Resumable checkpoints in the artifact store: upload the trainer's checkpoint, restore it on resume.

One stored checkpoint is one ``.tar.gz`` (``store.checkpoint_key(job_id, step)``) of the trainer's checkpoint
bundle (``sparsegrad_core.training.bundle_checkpoint``: the step's tensors, optimizer moments, RNG states and data
position, and the calibrated bases). Unpacked into a fresh run folder it is exactly what
``prepare_for_training(resume_from=...)`` and ``Trainer.train(resume_from=...)`` read, so a resumed attempt
neither recalibrates nor replays anything differently.

Checkpoints are gzip archives with ``pack_directory``'s layout but stored without compression: trained
float tensors and optimizer moments barely compress (about 7 %), and deflating them costs seconds per
hundred megabytes on every checkpoint of a running job.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from sparsegrad_core.training import bundle_checkpoint, bundled_checkpoint
from sparsegrad_service.job_store import StoredCheckpoint, WorkerJobStore
from sparsegrad_service.store import (
    ArtifactStore,
    StoreError,
    checkpoint_key,
    file_digest,
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
    metrics: dict[str, Any],
) -> StoredCheckpoint | None:
    """Pack and store the checkpoint of ``step``, record it (replacing a row of the same step), point
    ``Job.last_checkpoint_step`` at it and prune older stored checkpoints beyond :data:`KEEP_STORED`.
    Returns None (recording nothing) if the job is no longer held by this worker. The SQL part waits out
    a lost database connection for up to the job store's ``retry_s`` seconds."""
    archive = pack_checkpoint(checkpoint_dir, staging)
    try:
        stored = store.put_file(checkpoint_key(job_store.job_id, step), archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    recorded = job_store.record_checkpoint(step, stored, metrics, keep=KEEP_STORED)
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
