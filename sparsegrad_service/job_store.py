"""The worker's job store: every SQL read and write a job's run makes, behind one object per job.

:func:`held_by` is the rule that a worker writes only while it still holds the job, written once: the job
row names this worker (``Job.worker_id``) and is ``running`` or ``cancelling``. Every write of a
:class:`WorkerJobStore` (heartbeat, progress and metric points, checkpoint rows, artifact rows, the final
status) is conditioned on it in its own transaction, so nothing lands after the reaper took the job away and
another worker claimed it. :class:`JobStore` is the part that needs no hold: the reads a run starts with,
and the writes of tasks on a finished job (the ``merge_job`` task).

The writes training waits for (progress and metrics, checkpoint rows, the final status) wait out a lost
database connection for up to ``retry_s`` seconds (:func:`~sparsegrad_service.db.retry_while_disconnected`);
after that the error propagates and the reaper takes the job over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, delete, null, select, update
from sqlalchemy.orm import Session

from .db import retry_while_disconnected, session_scope
from .enums import ArtifactKind, EventLevel, EventType, JobStatus
from .job_records import add_event, insert_metrics
from .model_resolution import ModelNotFound, ResolvedModel, resolve_model
from .models import Artifact, Checkpoint, File, Job, MetricPoint, utcnow
from .registry import RegisteredModel
from .retention import CheckpointRetention, drop_checkpoints
from .store import StoredObject
from .transitions import compare_and_set, end_job

T = TypeVar("T")
HELD_STATUSES = (JobStatus.running, JobStatus.cancelling)
Event = tuple[EventType, str, dict[str, Any] | None]
"""``(type, message, data)`` of an event to add."""


def held_by(job_id: str, worker_id: str) -> ColumnElement[bool]:
    """Job ``job_id`` is held by ``worker_id``: its row names the worker and is running or cancelling."""
    return and_(Job.id == job_id, Job.worker_id == worker_id, Job.status.in_(HELD_STATUSES))


class LostJobError(RuntimeError):
    """The job was taken from this worker (its heartbeat went stale and the reaper requeued it)."""


@dataclass(frozen=True)
class FileRef:
    """What the runner needs of a ``File`` row."""

    id: str
    filename: str
    storage_key: str


@dataclass(frozen=True)
class JobSnapshot:
    """What a run needs of the job row, read in the claiming transaction (the run holds no session)."""

    id: str
    tenant_id: str
    model: str
    spec: dict[str, Any]
    seed: int
    suffix: str | None
    attempt: int
    max_attempts: int
    training_file: FileRef
    validation_file: FileRef | None


@dataclass(frozen=True)
class StoredCheckpoint:
    id: str
    step: int
    storage_key: str
    sha256: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class StoredArtifact:
    id: str
    kind: ArtifactKind
    filename: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class JobOutputs:
    """A job's model, status and the storage keys of its artifacts by kind."""

    model: str
    status: JobStatus
    artifact_keys: dict[str, str]


def _file_ref(file: File | None) -> FileRef | None:
    return None if file is None else FileRef(file.id, file.filename, file.storage_key)


class JobStore:
    """SQL of job ``job_id`` that needs no hold on it. ``retry_s``: how long the retried writes wait for a
    lost database connection."""

    def __init__(self, sql_url: str, job_id: str, *, retry_s: float = 60.0) -> None:
        self.sql_url, self.job_id, self.retry_s = sql_url, job_id, retry_s

    def _retried(self, work: Callable[[], T], what: str = "") -> T:
        return retry_while_disconnected(work, self.retry_s, f"job {self.job_id}{what}")

    def _hold(self, session: Session) -> None:
        """Check (and lock) the hold the store's writes need; none here."""

    # ------------------------------------------------------------------------------------------ reads
    def outputs(self) -> JobOutputs | None:
        """The job's model, status and artifact keys; None if there is no such job."""
        with session_scope(self.sql_url) as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return None
            keys = dict(session.execute(select(Artifact.kind, Artifact.storage_key)
                                        .where(Artifact.job_id == self.job_id)).tuples().all())
            return JobOutputs(job.model, job.status, keys)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint ``Job.last_checkpoint_step`` points at, if its row exists."""
        with session_scope(self.sql_url) as session:
            step = session.scalar(select(Job.last_checkpoint_step).where(Job.id == self.job_id))
            if step is None:
                return None
            row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.step == step))
            if row is None or row.storage_key is None or row.sha256 is None:  # a model kept without its resume archive
                return None
            return StoredCheckpoint(row.id, row.step, row.storage_key, row.sha256, dict(row.metrics or {}))

    def resolve_model(self, registry: dict[str, RegisteredModel], name: str | None = None) -> ResolvedModel:
        """What ``name`` (default: the job's ``model``) stands for, for the job's tenant
        (:func:`~sparsegrad_service.model_resolution.resolve_model`; its errors propagate)."""
        with session_scope(self.sql_url) as session:
            job = session.get(Job, self.job_id)
            if job is None:
                raise ModelNotFound(name or "", f"job {self.job_id} does not exist")
            return resolve_model(session, job.tenant_id, name or job.model, registry)

    def metric_points(self) -> list[tuple[int, str, float]]:
        """Every metric point of the job as ``(step, name, value)``, ordered by name, then step."""
        with session_scope(self.sql_url) as session:
            return list(session.execute(
                select(MetricPoint.step, MetricPoint.name, MetricPoint.value)
                .where(MetricPoint.job_id == self.job_id).order_by(MetricPoint.name, MetricPoint.step)
            ).tuples().all())

    # ------------------------------------------------------------------------------------------ writes
    def add_event(self, type_: EventType, message: str, data: dict[str, Any] | None = None,
                  level: EventLevel = EventLevel.info) -> None:
        with session_scope(self.sql_url) as session:
            add_event(session, self.job_id, type_, message, data=data, level=level)

    def record_artifact(self, kind: ArtifactKind, filename: str, stored: StoredObject) -> StoredArtifact:
        """Insert the Artifact row of a stored object, replacing an earlier one of the same kind (for a
        :class:`WorkerJobStore`, only while it holds the job; the row stays locked meanwhile)."""
        with session_scope(self.sql_url) as session:
            self._hold(session)
            session.execute(delete(Artifact).where(Artifact.job_id == self.job_id, Artifact.kind == kind))
            row = Artifact(job_id=self.job_id, kind=kind, filename=filename, bytes=stored.bytes,
                           sha256=stored.sha256, storage_key=stored.key)
            session.add(row)
            session.flush()
            return StoredArtifact(row.id, kind, filename, stored.bytes, stored.sha256)

    def resume_checkpoints(self) -> list[StoredCheckpoint]:
        """The job's checkpoints that hold a resume archive, newest step first."""
        with session_scope(self.sql_url) as session:
            rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == self.job_id,
                                                            Checkpoint.storage_key.is_not(None))
                                   .order_by(Checkpoint.step.desc()))
            return [StoredCheckpoint(r.id, r.step, r.storage_key, r.sha256, dict(r.metrics or {}))
                    for r in rows if r.storage_key is not None and r.sha256 is not None]

    def record_checkpoint_model(self, step: int, kind: ArtifactKind, stored: StoredObject,
                                metrics: dict[str, Any] | None = None) -> str:
        """Record the stored model (``kind``: adapter or whole model) of the checkpoint at ``step``, creating a
        row without a resume archive when there is none at that step; returns the checkpoint id (for a
        :class:`WorkerJobStore`, only while it holds the job)."""
        with session_scope(self.sql_url) as session:
            self._hold(session)
            row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.step == step))
            if row is None:
                row = Checkpoint(job_id=self.job_id, step=step, metrics=metrics)
                session.add(row)
            row.model_kind, row.model_key = str(kind), stored.key
            row.model_bytes, row.model_sha256 = stored.bytes, stored.sha256
            session.flush()
            return row.id

    def delete_artifacts(self) -> None:
        """Remove every Artifact row of the job (a job cancelled while saving lists none)."""
        with session_scope(self.sql_url) as session:
            session.execute(delete(Artifact).where(Artifact.job_id == self.job_id))

    def merge_requested_at(self) -> datetime | None:
        """When a merged model of the job was last asked for (``Job.merge_requested_at``), if it still waits."""
        with session_scope(self.sql_url) as session:
            return session.scalar(select(Job.merge_requested_at).where(Job.id == self.job_id))

    def end_merge_request(self, requested_at: datetime | None) -> None:
        """A merge run that started after the request of ``requested_at`` ended: that request is served,
        unless a newer one came meanwhile (its own run ends it)."""
        if requested_at is None:
            return
        with session_scope(self.sql_url) as session:
            session.execute(update(Job).where(Job.id == self.job_id, Job.merge_requested_at == requested_at)
                            .values(merge_requested_at=None).execution_options(synchronize_session=False))


class WorkerJobStore(JobStore):
    """SQL of one attempt at job ``job_id`` by worker ``worker_id``: claim, heartbeat, progress, checkpoints,
    artifacts and the final status, each write only while :func:`held_by` holds."""

    def __init__(self, sql_url: str, job_id: str, worker_id: str, *, retry_s: float = 60.0) -> None:
        super().__init__(sql_url, job_id, retry_s=retry_s)
        self.worker_id = worker_id

    def _held(self) -> ColumnElement[bool]:
        return held_by(self.job_id, self.worker_id)

    def _hold(self, session: Session) -> None:
        if session.execute(select(Job.id).where(self._held()).with_for_update()).first() is None:
            raise LostJobError(f"job {self.job_id} is no longer held by worker {self.worker_id}")

    def _update_held(self, session: Session, **values: Any) -> bool:
        result = session.execute(update(Job).where(self._held()).values(**values)
                                 .execution_options(synchronize_session=False))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _flags(self, session: Session) -> tuple[bool, bool]:
        row = session.execute(select(self._held().label("held"), Job.status, Job.cancel_requested,
                                     Job.pause_requested).where(Job.id == self.job_id)).first()
        if row is not None and row.status == JobStatus.cancelled:
            return True, False
        if row is None or not row.held:
            raise LostJobError(f"job {self.job_id} is no longer held by worker {self.worker_id}")
        return bool(row.cancel_requested), bool(row.pause_requested)

    # ------------------------------------------------------------------------------------------ claim
    def claim(self, device: str) -> JobSnapshot | None:
        """Move the queued job to ``running`` for this worker (attempts + 1) and announce the attempt; None
        when it is not claimable (taken, cancelled, paused or finished)."""
        now = utcnow()
        with session_scope(self.sql_url) as session:
            if not compare_and_set(session, self.job_id, [JobStatus.queued], status=JobStatus.running,
                                   worker_id=self.worker_id, heartbeat_at=now, attempts=Job.attempts + 1):
                return None
            job = session.get(Job, self.job_id, populate_existing=True)
            assert job is not None
            if job.started_at is None:
                job.started_at = now
            training = _file_ref(session.get(File, job.training_file_id))
            if training is None:
                raise LookupError(f"job {self.job_id}: training file {job.training_file_id} does not exist")
            validation = _file_ref(session.get(File, job.validation_file_id)) if job.validation_file_id else None
            add_event(
                session, self.job_id, EventType.message,
                f"Attempt {job.attempts} of {job.max_attempts} started on worker {self.worker_id} (device {device}).",
                data={"attempt": job.attempts, "max_attempts": job.max_attempts, "worker_id": self.worker_id,
                      "device": device},
            )
            return JobSnapshot(
                id=job.id, tenant_id=job.tenant_id, model=job.model, spec=dict(job.spec or {}), seed=int(job.seed),
                suffix=job.suffix,
                attempt=int(job.attempts), max_attempts=int(job.max_attempts),
                training_file=training, validation_file=validation,
            )

    # ------------------------------------------------------------------------------------------ liveness
    def heartbeat(self) -> tuple[bool, bool]:
        """Record that the worker is alive; returns the flags ``(cancel_requested, pause_requested)``.
        Raises :class:`LostJobError` if the job is no longer this worker's (reaped and claimed elsewhere)."""
        with session_scope(self.sql_url) as session:
            self._update_held(session, heartbeat_at=utcnow())
            return self._flags(session)

    def stop_flags(self) -> tuple[bool, bool]:
        """The flags ``(cancel_requested, pause_requested)``, read only; :class:`LostJobError` as above."""
        with session_scope(self.sql_url) as session:
            return self._flags(session)

    # ------------------------------------------------------------------------------------------ progress
    def write(self, *, events: Iterable[Event] = (), metrics: Iterable[tuple[int, str, float]] = (),
              job: dict[str, Any] | None = None, level: EventLevel = EventLevel.info) -> bool:
        """Add events and metric points and update the job row (its heartbeat too), in one transaction.
        Returns False (and writes nothing) when the job is no longer this worker's."""
        events, metrics = list(events), list(metrics)

        def transaction() -> bool:
            with session_scope(self.sql_url) as session:
                if not self._update_held(session, heartbeat_at=utcnow(), **(job or {})):
                    session.rollback()
                    return False
                if metrics:
                    insert_metrics(session, self.job_id, metrics)
                for type_, message, data in events:
                    add_event(session, self.job_id, type_, message, data=data, level=level)
            return True

        return self._retried(transaction)

    def record_checkpoint(self, step: int, stored: StoredObject, metrics: dict[str, Any],
                          keep: int) -> tuple[StoredCheckpoint, list[str]] | None:
        """Record the stored checkpoint of ``step`` (replacing a row of the same step), point
        ``Job.last_checkpoint_step`` at it and drop the rows beyond the newest ``keep``; returns it and the
        storage keys of the dropped ones, or None (recording nothing) when the job is no longer held."""

        def transaction() -> tuple[StoredCheckpoint, list[str]] | None:
            with session_scope(self.sql_url) as session:
                if not self._update_held(session, last_checkpoint_step=step):
                    return None
                row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == self.job_id,
                                                              Checkpoint.step == step))
                if row is None:
                    row = Checkpoint(job_id=self.job_id, step=step)
                    session.add(row)
                row.storage_key, row.bytes, row.sha256, row.metrics = stored.key, stored.bytes, stored.sha256, metrics
                session.flush()
                old_keys = [key for key in drop_checkpoints(session, self.job_id, keep) if key != stored.key]
                return StoredCheckpoint(row.id, step, stored.key, stored.sha256, metrics), old_keys

        return self._retried(transaction, f" checkpoint {step}")

    # ------------------------------------------------------------------------------------------ finish
    def finish(self, status: JobStatus, message: str, *, error: dict[str, Any] | None = None,
               retention: CheckpointRetention | None = None, **values: Any) -> JobStatus | None:
        """Move the job to ``status`` (terminal or ``paused``) with a closing event; returns the status it
        got, or None when the job is not this worker's any more. A job that ends keeps ``retention``'s
        checkpoints (see :func:`~sparsegrad_service.transitions.end_job`).

        ``succeeded`` and ``paused`` are reached only from ``running``: a cancel that arrived meanwhile (the
        job is ``cancelling``) wins, and the job ends ``cancelled`` with the event "Job cancelled."; the
        artifact rows its run recorded are deleted in the same transaction, so a cancelled job never lists
        any (the worker removes their objects)."""

        def transaction() -> JobStatus | None:
            with session_scope(self.sql_url) as session:
                final = self._finish(session, status, error, values, retention)
                if final is None:
                    return None
                if final != status:  # a cancel won
                    add_event(session, self.job_id, EventType.message, "Job cancelled.", data={"status": final.value})
                elif error is not None:
                    add_event(session, self.job_id, EventType.error, message, data={"code": error.get("code")},
                              level=EventLevel.error)
                else:
                    add_event(session, self.job_id, EventType.message, message, data={"status": final.value})
                return final

        return self._retried(transaction)

    def _finish(self, session: Session, status: JobStatus, error: dict[str, Any] | None,
                values: dict[str, Any], retention: CheckpointRetention | None) -> JobStatus | None:
        cancel_wins = status in (JobStatus.succeeded, JobStatus.paused)
        only_running = [Job.status == JobStatus.running] if cancel_wins else []
        changes: dict[str, Any] = {"error": null() if error is None else error, **values}
        if status.terminal:
            changed = end_job(session, self.job_id, status, retention, self._held(), *only_running, **changes)
        else:  # paused: a pause that arrived too late to matter is void
            paused = {"phase": None, "pause_requested": False, "estimated_finish": None, **changes}
            changed = bool(session.execute(update(Job).where(self._held(), *only_running).values(
                status=status, **paused).execution_options(synchronize_session=False)).rowcount)  # type: ignore[attr-defined]
        if changed:
            return status
        if cancel_wins and end_job(session, self.job_id, JobStatus.cancelled, retention, self._held(),
                                   Job.status == JobStatus.cancelling, error=null()):
            session.execute(delete(Artifact).where(Artifact.job_id == self.job_id))
            return JobStatus.cancelled
        return None
