"""Rows of the read statements (``queries``) as the public JSON objects of the API (``FileObject``, ``JobPublic``,
events, checkpoints...). A row has the ORM attribute names, so an ORM object serializes the same way."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.job_spec import JobSpec, ModelRef
from sparsegrad_service.model_names import checkpoint_model_name
from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.schemas import (
    ArtifactPublic,
    CheckpointPublic,
    FileObject,
    JobError,
    JobEventPublic,
    JobPublic,
    MetricPointPublic,
    ModelObject,
)
from sparsegrad_service.schemas.insight import INSIGHT_KEYS, JobInsight, MethodInsight
from sparsegrad_service.schemas.jobs import PublicHyperparameters

from .timestamps import unix, unix_required

EVENT_ID_PREFIX = "ftevent-"


def file_object(row: Any) -> FileObject:
    """An upload, or a result file (no format recorded: its name's extension, ``csv`` or ``tar.gz``)."""
    return FileObject(
        id=row.id, bytes=row.bytes, filename=row.filename, created_at=unix_required(row.created_at),
        purpose=row.purpose, status=row.status, num_examples=row.num_examples,
        format=row.format or row.filename.partition(".")[2],
        task=row.task, label_names=row.label_names,
    )


def public_method(spec: JobSpec) -> dict[str, Any]:
    """``{"type": T, T: {its parameters}, "setting": ...}`` (OpenAI's shape) from the spec's method."""
    params = spec.method.model_dump(mode="json", exclude={"type", "setting"})
    kind = spec.method.type.value
    return {"type": kind, kind: params, "setting": spec.method.setting.value}


@dataclass(frozen=True)
class _PublicSpec:
    spec: JobSpec
    method: dict[str, Any]
    hyperparameters: PublicHyperparameters


_PUBLIC_SPECS: dict[str, _PublicSpec] = {}
_PUBLIC_SPECS_MAX = 10_000
_PUBLIC_SPECS_LOCK = threading.Lock()


def _public_spec(job_id: str, stored: dict[str, Any] | None) -> _PublicSpec:
    """The job's spec, read and shaped once per job: a spec never changes after the job is created, and reading
    it (pydantic) on every GET cost about a tenth of the GET-job route's throughput."""
    hit = _PUBLIC_SPECS.get(job_id)
    if hit is None:
        spec = JobSpec.from_stored(stored)
        hit = _PublicSpec(spec, public_method(spec), PublicHyperparameters.of(spec.hyperparameters, spec.method))
        with _PUBLIC_SPECS_LOCK:
            if len(_PUBLIC_SPECS) >= _PUBLIC_SPECS_MAX:
                _PUBLIC_SPECS.clear()
            _PUBLIC_SPECS[job_id] = hit
    return hit


def _job_error(error: dict[str, Any] | None) -> JobError | None:
    if not error:
        return None
    return JobError(code=error.get("code"), message=str(error.get("message") or error.get("code") or "failed"),
                    param=error.get("param"))


def job_public(job: Any) -> JobPublic:
    """``job``: a row of ``queries.job_statement`` (the job's columns, ``queue_position`` and ``result_files``)."""
    public = _public_spec(job.id, job.spec)
    spec = public.spec
    return JobPublic(
        id=job.id, status=job.status, model=job.model, lineage=spec.lineage or [ModelRef(model=job.model)],
        created_at=unix_required(job.created_at),
        started_at=unix(job.started_at), finished_at=unix(job.finished_at), error=_job_error(job.error),
        method=public.method, hyperparameters=public.hyperparameters, requested=spec.requested,
        training_file=job.training_file_id, validation_file=job.validation_file_id,
        trained_tokens=job.trained_tokens, result_files=job.result_files, fine_tuned_model=job.fine_tuned_model,
        estimated_finish=unix(job.estimated_finish), metadata=job.metadata_, seed=job.seed, suffix=job.suffix,
        organization_id=job.tenant_id, phase=job.phase, progress=float(job.progress or 0.0),
        queue_position=job.queue_position, task=spec.task, attempts=job.attempts,
        step=job.step, total_steps=job.total_steps, summary=job.summary,
        pause_requested=bool(job.pause_requested), validation_split=spec.validation_split,
        merge_model=spec.merge_model, integrations=spec.integrations,
    )


def job_insight(row: Any) -> JobInsight:
    """``row``: a row of ``queries.job_insight_statement``."""
    summary = row.summary if isinstance(row.summary, dict) else {}
    insight = MethodInsight.model_validate({key: summary.get(key) for key in INSIGHT_KEYS})
    return JobInsight(fine_tuning_job_id=row.id, method=_public_spec(row.id, row.spec).spec.method.type.value,
                      **dict(insight))


def root_model(row: Any) -> str:
    """The root base model of a job (``row``: its ``id``, ``model`` and ``spec``): ``model``, unless the job
    continued training a fine-tuned model (then the first model of its lineage)."""
    lineage = _public_spec(row.id, row.spec).spec.lineage
    return lineage[0].model if lineage else str(row.model)


def fine_tuned_model_object(row: Any, base: RegisteredModel | None) -> ModelObject:
    """``row``: a row of ``queries.fine_tuned_models``; ``base``: its root base model (:func:`root_model`), if
    still registered."""
    spec = _public_spec(row.id, row.spec).spec
    method = f"{spec.method.type.value} ({spec.method.setting.value} setting)"
    return ModelObject(
        id=row.fine_tuned_model, created=unix_required(row.finished_at or row.created_at), owned_by=row.tenant_id,
        architecture=base.architecture if base is not None else "unknown", tasks=[spec.task.type.value],
        description=f"{row.model} fine-tuned for {spec.task.type.value} with {method} by job {row.id}",
        parent=row.model, fine_tuning_job_id=row.id)


def event_object(row: Any) -> JobEventPublic:
    return JobEventPublic(id=f"{EVENT_ID_PREFIX}{row.seq}", created_at=unix_required(row.created_at),
                          level=row.level, message=row.message, type=row.type, data=row.data)


def metric_point(row: Any) -> MetricPointPublic:
    return MetricPointPublic(step=row.step, name=row.name, value=row.value, created_at=unix_required(row.created_at))


def checkpoint_object(row: Any) -> CheckpointPublic:
    """``row``: a row of ``queries.checkpoints_page`` (the checkpoint's columns and its job's ``fine_tuned_model``)."""
    is_model = row.model_key is not None and row.fine_tuned_model is not None
    return CheckpointPublic(
        id=row.id, created_at=unix_required(row.created_at),
        fine_tuned_model_checkpoint=checkpoint_model_name(row.fine_tuned_model, row.step) if is_model else None,
        fine_tuning_job_id=row.job_id, metrics={**(row.metrics or {}), "step": row.step}, step_number=row.step,
        resumable=row.storage_key is not None,
        format=("adapter" if row.model_kind == ArtifactKind.adapter else "model") if is_model else None,
        bytes=row.model_bytes if is_model else None, sha256=row.model_sha256 if is_model else None,
    )


def artifact_object(row: Any) -> ArtifactPublic:
    return ArtifactPublic(id=row.id, kind=row.kind, filename=row.filename, bytes=row.bytes, sha256=row.sha256,
                          created_at=unix_required(row.created_at), fine_tuning_job_id=row.job_id)
