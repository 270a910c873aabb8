"""Create a fine-tuning job from a request: resolve the model it starts from (a base model, or one of the tenant's
fine-tuned models or checkpoints) and the tenant's files, settle the task
(the training file's, or the request's re-validated against the stored bytes), honour ``Idempotency-Key``,
insert the queued job with its first event, then enqueue it. A broker outage leaves the job queued (with a
warning event) for the reaper to send again."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sparsegrad_contract.defaults import SEED
from sparsegrad_data import TaskType
from sparsegrad_service.enums import EventLevel, EventType, JobStatus
from sparsegrad_service.integrations import missing_setting, not_configured_message
from sparsegrad_service.job_records import add_event
from sparsegrad_service.job_spec import ModelRef
from sparsegrad_service.model_resolution import ModelResolutionError, ResolvedModel, resolve_model
from sparsegrad_service.models import File, Job, utcnow
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.schemas import JobCreate, TaskIn
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore

from .datasets import column_mapping, mapping_from_dict, validate_dataset
from .errors import ApiError, conflict, model_resolution_error
from .job_spec import resolve_spec

log = logging.getLogger("sparsegrad.api.jobs")

MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool
    """False when an ``Idempotency-Key`` replay returned the job created earlier."""


def request_hash(body: JobCreate) -> str:
    """SHA-256 of the request as sent (fields given, canonical JSON)."""
    canonical = json.dumps(body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_job(
    session: Session, tenant_id: str, body: JobCreate, idempotency_key: str | None, *, settings: Settings,
    registry: dict[str, RegisteredModel], store: LocalArtifactStore, queue: JobQueue,
) -> Submission:
    digest = request_hash(body)
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, f"The Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY} characters.",
                           param="Idempotency-Key", code="invalid_idempotency_key")
        existing = _by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is not None:
            return Submission(_replay(existing, digest, idempotency_key), created=False)

    start = start_model(session, tenant_id, registry, body.model)
    model = start.base
    _check_integrations(settings, body)
    train = _tenant_file(session, tenant_id, body.training_file, "training_file")
    valid = _tenant_file(session, tenant_id, body.validation_file, "validation_file") if body.validation_file else None
    spec = resolve_spec(body, resolve_task(settings, store, body.task, train, valid, model), settings.checkpoint_every)
    if start.kind != "base":
        spec = spec.model_copy(update={"lineage": [ModelRef(**asdict(entry)) for entry in start.lineage]})
    now = utcnow()
    job = Job(
        tenant_id=tenant_id, model=start.name, training_file_id=train.id,
        validation_file_id=valid.id if valid else None, spec=spec.stored(), status=JobStatus.queued,
        seed=SEED if body.seed is None else body.seed, suffix=body.suffix, metadata_=body.metadata,
        idempotency_key=idempotency_key, request_hash=digest, created_at=now, queued_at=now,
        max_attempts=settings.max_attempts, progress=0.0, step=0, attempts=0,
    )
    session.add(job)
    try:
        session.flush()
        # read again with the job written: a file deleted meanwhile is refused like a missing one (deleting a
        # file a job uses is refused, and waits for this transaction)
        _tenant_file(session, tenant_id, train.id, "training_file")
        if valid is not None:
            _tenant_file(session, tenant_id, valid.id, "validation_file")
        add_event(session, job.id, EventType.message, "Job created", data={
            "model": start.name, "method": spec.method.type.value, "task": spec.task.type.value})
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = _by_idempotency_key(session, tenant_id, idempotency_key) if idempotency_key else None
        if winner is None:
            raise
        return Submission(_replay(winner, digest, idempotency_key or ""), created=False)
    enqueue_or_warn(session, queue, job.id)
    return Submission(job, created=True)


def enqueue_or_warn(session: Session, queue: JobQueue, job_id: str) -> None:
    """Send the job to the workers; if the broker is down, record a warning (the reaper resends it)."""
    try:
        queue.enqueue(job_id)
    except Exception as exc:
        log.warning("could not enqueue %s: %s", job_id, exc)
        add_event(session, job_id, EventType.message,
                  f"The job queue is unreachable ({type(exc).__name__}); the job stays queued and will be sent "
                  "to the workers again automatically.", level=EventLevel.warn)
        session.commit()


def _by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def _replay(job: Job, digest: str, key: str) -> Job:
    if job.request_hash != digest:
        raise conflict(f"Idempotency-Key '{key}' was already used with a different request body "
                       f"(job {job.id}); use a new key for a different job.", "idempotency_key_reused")
    return job


def start_model(session: Session, tenant_id: str, registry: dict[str, RegisteredModel], name: str) -> ResolvedModel:
    """The model a new job starts from: a base model, or (continued training) one of the tenant's fine-tuned
    models or checkpoints that can be loaded. Refusals name ``model``: 400 for a name that is not a model or a
    job that has not succeeded, 404 for another tenant's, a missing or a deleted one."""
    try:
        start = resolve_model(session, tenant_id, name, registry)
    except ModelResolutionError as exc:
        raise model_resolution_error(exc) from exc
    if not start.servable:
        raise ApiError(400, f"Model '{name}' cannot be fine-tuned: {start.unservable}.", param="model",
                       code="model_not_available")
    return start


def _check_integrations(settings: Settings, body: JobCreate) -> None:
    for entry in body.integrations or []:
        if (setting := missing_setting(settings, entry.type)) is not None:
            raise ApiError(400, not_configured_message(entry.type, setting), param="integrations",
                           code="integration_not_configured")


def _tenant_file(session: Session, tenant_id: str, file_id: str, param: str) -> File:
    row = session.scalar(select(File).where(File.id == file_id, File.tenant_id == tenant_id,
                                            File.deleted_at.is_(None)))
    if row is None:
        raise ApiError(400, f"Invalid {param}: no such file '{file_id}'.", param=param, code="file_not_found")
    return row


def _stored_bytes(store: LocalArtifactStore, row: File) -> bytes:
    try:
        return store.path(row.storage_key).read_bytes()
    except (OSError, ValueError) as exc:
        raise ApiError(500, f"The stored contents of file '{row.id}' cannot be read.", type="server_error",
                       code="file_unreadable") from exc


def _check_model_task(model: RegisteredModel, task: TaskType) -> None:
    if task.value not in model.tasks:
        raise ApiError(400, f"Model '{model.name}' is an {model.architecture} model and cannot be trained for "
                       f"{task.value} (its tasks: {', '.join(model.tasks)}); causal_lm needs a decoder model.",
                       param="task.type", code="unsupported_task")


def resolve_task(
    settings: Settings, store: LocalArtifactStore, task: TaskIn | None, train: File, valid: File | None,
    model: RegisteredModel,
) -> dict[str, Any]:
    """The contract's ``task`` object: the training file's task and mapping when the request has none,
    else the request's, checked against the stored bytes; the validation file is checked too."""
    if task is None and train.task is not None:
        mapping = mapping_from_dict(train.mapping)
        task_type, label_names = TaskType(train.task), train.label_names
        num_labels = len(label_names) if label_names else None
    else:
        task = task or TaskIn()
        mapping = column_mapping(text=task.text_column, text_pair=task.text_pair_column, label=task.label_column,
                                 messages=task.messages_column, prompt=task.prompt_column,
                                 completion=task.completion_column, has_header=task.has_header, param_prefix="task.",
                                 fallback_param="task")
        dataset = validate_dataset(
            _stored_bytes(store, train), train.filename, settings, task=task.type, mapping=mapping,
            param="training_file", num_labels=task.num_labels, label_names=task.label_names, min_classes=2)
        task_type, label_names, num_labels = dataset.task, dataset.label_names, dataset.num_labels
    _check_model_task(model, task_type)
    if task_type is TaskType.CLASSIFICATION and (num_labels or 0) < 2:
        raise ApiError(400, f"The training file {train.filename} has a single class ({', '.join(label_names or [])}); "
                       "a classifier needs at least 2.", param="training_file", code="too_few_classes")
    if valid is not None:
        classification = task_type is TaskType.CLASSIFICATION
        validate_dataset(_stored_bytes(store, valid), valid.filename, settings, task=task_type, mapping=mapping,
                         param="validation_file", label_names=label_names if classification else None,
                         min_classes=1)
    return {
        "type": task_type.value, "text_column": mapping.text, "text_pair_column": mapping.text_pair,
        "label_column": mapping.label, "messages_column": mapping.messages, "prompt_column": mapping.prompt,
        "completion_column": mapping.completion, "has_header": mapping.has_header,
        "num_labels": num_labels, "label_names": label_names,
    }
