"""What storage a job keeps, and what deleting a file, a job or a fine-tuned model removes.

The rows are the truth: each function here changes rows in the caller's transaction and returns the storage
keys of the objects those rows described; the caller deletes the objects (:func:`delete_objects`) once the
transaction committed, so a rolled-back change never loses bytes that rows still point at. A process that
dies in between leaves orphan objects, never rows without objects; a job's orphans go with the job's store
folder when the job is deleted.

* A job that succeeded keeps its newest ``Settings.keep_finished_checkpoints`` checkpoints that are models
  (the worker stored them as adapters, or whole models, before finishing it), without their resume archives:
  a finished job cannot resume. A job that failed or was cancelled has no model and keeps none.
  :func:`~sparsegrad_service.transitions.end_job`, the one terminal transition, drops the rest through a
  :class:`CheckpointRetention`.
* A file, a job or a model is *in use* while something that has not finished may still read it: a job not
  in a terminal status (it may start, resume or still read its files), or a merge request not yet done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import QueryableAttribute, Session

from .enums import TERMINAL_STATUSES, ArtifactKind, JobStatus
from .models import Artifact, Checkpoint, File, Job, JobEvent, MetricPoint, utcnow
from .store import ArtifactStore, LocalArtifactStore, StoreError

log = logging.getLogger("sparsegrad.retention")

MODEL_ARTIFACT_KINDS = (ArtifactKind.adapter, ArtifactKind.lora, ArtifactKind.merged_model)
"""The artifacts that are the fine-tuned model (deleted with it); the metrics file is the job's."""


def drop_checkpoints(session: Session, job_id: str, keep: int) -> list[str]:
    """Delete the job's checkpoint rows beyond the newest ``keep`` and point ``Job.last_checkpoint_step`` at
    the newest one left (None when none is); returns the dropped rows' storage keys."""
    old = session.execute(select(Checkpoint.id, *CHECKPOINT_KEYS).where(Checkpoint.job_id == job_id)
                          .order_by(Checkpoint.step.desc()).offset(keep)).all()
    if not old:
        return []
    session.execute(delete(Checkpoint).where(Checkpoint.id.in_([row.id for row in old])))
    newest = select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job_id).scalar_subquery()
    session.execute(update(Job).where(Job.id == job_id).values(last_checkpoint_step=newest)
                    .execution_options(synchronize_session=False))
    return _present([key for row in old for key in row[1:]])


CHECKPOINT_KEYS = (Checkpoint.storage_key, Checkpoint.model_key)
"""The objects a checkpoint row may describe: its resume archive and its model archive."""


def _present(keys: Iterable[str | None]) -> list[str]:
    return [key for key in keys if key is not None]


def checkpoint_keys(session: Session, job_id: str) -> list[str]:
    """The storage keys of every object job ``job_id``'s checkpoint rows describe."""
    return _present(key for row in session.execute(select(*CHECKPOINT_KEYS).where(Checkpoint.job_id == job_id))
                    for key in row)


def keep_checkpoint_models(session: Session, job_id: str, keep: int) -> list[str]:
    """What a succeeded job keeps: its newest ``keep`` checkpoints that are models, without their resume
    archives; every other checkpoint row goes. Returns the storage keys of what was dropped."""
    kept = list(session.scalars(select(Checkpoint.id).where(Checkpoint.job_id == job_id,
                                                            Checkpoint.model_key.is_not(None))
                                .order_by(Checkpoint.step.desc()).limit(keep))) if keep > 0 else []
    dropped = _present(key for row in session.execute(
        select(*CHECKPOINT_KEYS).where(Checkpoint.job_id == job_id, Checkpoint.id.not_in(kept))) for key in row)
    dropped += _present(session.scalars(select(Checkpoint.storage_key).where(Checkpoint.id.in_(kept))
                                        .order_by(Checkpoint.step.desc())))
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.id.not_in(kept)))
    session.execute(update(Checkpoint).where(Checkpoint.id.in_(kept)).values(storage_key=None, bytes=None, sha256=None)
                    .execution_options(synchronize_session=False))
    session.execute(update(Job).where(Job.id == job_id).values(last_checkpoint_step=None)
                    .execution_options(synchronize_session=False))
    return dropped


@dataclass
class CheckpointRetention:
    """How many checkpoints a job keeps as models once it succeeded (``Settings.keep_finished_checkpoints``;
    a job that ended otherwise keeps none), and the storage keys of the checkpoints and resume archives a
    terminal transition dropped, to delete once it committed."""

    keep: int
    dropped: list[str] = field(default_factory=list)

    def apply(self, session: Session, job_id: str, status: JobStatus) -> None:
        if status == JobStatus.succeeded:
            self.dropped.extend(keep_checkpoint_models(session, job_id, self.keep))
        else:
            self.dropped.extend(drop_checkpoints(session, job_id, 0))

    def delete_dropped(self, store: ArtifactStore) -> None:
        delete_objects(store, self.dropped)
        self.dropped.clear()


def delete_objects(store: ArtifactStore, keys: Iterable[str]) -> None:
    """Delete objects whose rows are gone; one that cannot be deleted is logged (an orphan object costs disk,
    never correctness)."""
    for key in keys:
        try:
            store.delete(key)
        except (StoreError, OSError, ValueError) as exc:
            log.warning("could not delete %s from the artifact store: %s", key, exc)


def sweep_deleted_files(session: Session, store: LocalArtifactStore) -> int:
    """Delete the bytes deleted files left in ``store`` (their process died between committing the deletion and
    deleting the bytes); returns how many there were. Reads every deleted file's key: run it once per process
    start, not per request."""
    keys = session.scalars(select(File.storage_key).where(File.deleted_at.is_not(None))).all()
    left = [key for key in keys if store.exists(key)]
    delete_objects(store, left)
    return len(left)


def _unfinished_job_on_file(file_id: QueryableAttribute[str] | str) -> ColumnElement[bool]:
    return and_(or_(Job.training_file_id == file_id, Job.validation_file_id == file_id),
                Job.status.not_in(TERMINAL_STATUSES))


def unfinished_job_using_file(session: Session, file_id: str) -> Job | None:
    """The oldest job that has not finished and trains or validates on file ``file_id``."""
    return session.scalar(select(Job).where(_unfinished_job_on_file(file_id)).order_by(Job.created_at, Job.id)
                          .limit(1))


def mark_file_deleted(session: Session, file_id: str) -> str | None:
    """Mark file ``file_id`` deleted unless a job that has not finished uses it, in one statement (so a job
    created on it meanwhile is seen); returns its storage key, or None when it was not marked."""
    result = session.execute(
        update(File).where(File.id == file_id, File.deleted_at.is_(None),
                           ~exists().where(_unfinished_job_on_file(File.id)))
        .values(deleted_at=utcnow()).returning(File.storage_key).execution_options(synchronize_session=False))
    return result.scalar()


def unfinished_job_on_model(session: Session, model: str) -> Job | None:
    """The oldest job that has not finished and fine-tunes model ``model``."""
    return session.scalar(select(Job).where(Job.model == model, Job.status.not_in(TERMINAL_STATUSES))
                          .order_by(Job.created_at, Job.id).limit(1))


def job_built_on(session: Session, job: Job) -> Job | None:
    """The oldest job that starts from job ``job``'s fine-tuned model or one of its checkpoints (continued
    training) and still needs it: it has not finished, or it succeeded and its model (stored as an adapter over
    that model, or built from it) is not deleted."""
    if job.fine_tuned_model is None:
        return None
    name = job.fine_tuned_model
    needs = or_(Job.status.not_in(TERMINAL_STATUSES),
                and_(Job.status == JobStatus.succeeded, Job.model_deleted_at.is_(None)))
    return session.scalar(select(Job).where(
        Job.tenant_id == job.tenant_id, Job.id != job.id, needs,
        or_(Job.model == name, Job.model.startswith(f"{name}:ckpt-step-", autoescape=True)),
    ).order_by(Job.created_at, Job.id).limit(1))


def merge_scratch_prefix(job_id: str) -> str:
    """Name prefix of the work folders a merge of job ``job_id`` unpacks and saves in."""
    return f"merge-{job_id}-"


def job_scratch(work_dir: Path, job_id: str) -> list[Path]:
    """The folders under a worker's ``work_dir`` that belong to job ``job_id``: its runs (``<job_id>/``, whose
    ``attempt-<n>`` folders the runner deletes) and merges (:func:`merge_scratch_prefix`)."""
    run = work_dir / job_id
    return ([run] if run.exists() else []) + sorted(work_dir.glob(f"{merge_scratch_prefix(job_id)}*"))


def delete_job_records(session: Session, job_id: str) -> list[str]:
    """Delete the job row and everything recorded under it (artifacts, checkpoints, events, metric points);
    returns the storage keys of its artifacts and checkpoints."""
    keys = list(session.scalars(select(Artifact.storage_key).where(Artifact.job_id == job_id)))
    keys += checkpoint_keys(session, job_id)
    for table in (Artifact, Checkpoint, JobEvent, MetricPoint):
        session.execute(delete(table).where(table.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))
    return keys


def delete_model_records(session: Session, job: Job) -> list[str]:
    """Delete the artifact rows that make up job ``job``'s fine-tuned model and its checkpoints (the model at
    earlier steps) and mark the model deleted; returns their storage keys. The job, its metrics file and its
    history stay."""
    kinds = [str(kind) for kind in MODEL_ARTIFACT_KINDS]
    keys = list(session.scalars(select(Artifact.storage_key).where(Artifact.job_id == job.id,
                                                                   Artifact.kind.in_(kinds))))
    keys += drop_checkpoints(session, job.id, 0)
    session.execute(delete(Artifact).where(Artifact.job_id == job.id, Artifact.kind.in_(kinds)))
    job.model_deleted_at = utcnow()
    return keys

