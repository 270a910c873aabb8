"""What a model name a tenant uses stands for, and what loading it takes: :func:`resolve_model`.

A name is a base model of the deployment's registry (``minilm-l6``), one of the tenant's fine-tuned models
(``ft:minilm-l6:org-…::ftjob-…``) or one of their checkpoints (``…:ftjob-…:ckpt-step-40``, see
:mod:`~sparsegrad_service.model_names`). A fine-tuned model may itself have been trained from another one
(continued training: the job's ``model`` is that model's name), so a model is a chain of stored weights over a
root base model: load the base, apply each link in order (an adapter is merged into what came before it; a whole
model replaces it), and the last link is the model. Torch-free: the API validates names with it, the worker
and inference load with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from .enums import ArtifactKind, JobStatus
from .job_spec import JobSpec
from .model_names import ModelName, checkpoint_model_name, parse_model_name
from .models import Artifact, Checkpoint, Job
from .registry import RegisteredModel

MAX_LINEAGE = 32
"""How many models deep a chain of continued trainings may go (a guard: a chain is acyclic by construction)."""

WeightsFormat = Literal["adapter", "model"]


# ------------------------------------------------------------------------------------------ errors
class ModelResolutionError(LookupError):
    """A name that does not resolve to a model the tenant can use. ``status`` and ``code`` are what the API
    answers (``param`` is always ``model``); ``message`` says why without naming another tenant's objects."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str, message: str) -> None:
        super().__init__(message)
        self.model, self.message = model, message


class UnknownModel(ModelResolutionError):
    """Neither a base model of the registry nor the name of a fine-tuned model or checkpoint (400, listing the
    base models)."""

    status = 400


class ModelNotFound(ModelResolutionError):
    """A fine-tuned model or checkpoint name that names nothing of this tenant: no such job, no such name, or
    a checkpoint step the job does not keep as a model (404)."""


class ModelOfAnotherTenant(ModelNotFound):
    """The name's job belongs to another tenant; answered exactly like :class:`ModelNotFound`."""


class ModelNotReady(ModelResolutionError):
    """The name's job has not succeeded (yet): it has no model to use (400)."""

    status = 400
    code = "model_not_ready"


class ModelDeleted(ModelResolutionError):
    """The tenant deleted this fine-tuned model (and its checkpoints) (404, its own code)."""

    code = "model_deleted"


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ModelWeights:
    """One stored archive of weights: ``adapter`` unpacks to an export folder (``adapter_config.json``,
    ``training_info.json``: ``sparsegrad_core.recipe.load_base_for`` / ``merge_exported`` read it), ``model``
    to a ``save_pretrained`` folder with its tokenizer (``AutoModel*.from_pretrained``). Check ``sha256``."""

    storage_key: str
    sha256: str
    bytes: int
    format: WeightsFormat
    job_id: str
    step: int | None = None
    """The checkpoint's step; None for the job's final model."""


@dataclass(frozen=True)
class LineageEntry:
    """One model of a chain: its name, the job that made it (None for the base model), the checkpoint step."""

    model: str
    fine_tuning_job_id: str | None = None
    step: int | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """What a model name stands for.

    ``base`` is the root base model (its ``source`` is what ``sparsegrad_core`` loads; ``name`` is the base part
    of every fine-tuned name in the chain). For a fine-tuned model or checkpoint: ``job_id``, ``step`` (checkpoints),
    the job's ``task`` / ``method`` / ``setting``, ``weights`` (the model's own archive) and ``parents`` (the
    archives to apply before it, root first: empty when the model is a whole model or was trained from a base).
    Load: ``source = base.source``; for each of :attr:`chain`: a ``model`` archive replaces ``source``, an
    ``adapter`` merges into it (fingerprint-checked). ``merged``: the job's merged archive (the whole chain in one
    ``model`` folder), when one was made. ``lineage``: root base first, this model last.
    """

    name: str
    kind: Literal["base", "fine_tuned", "checkpoint"]
    base: RegisteredModel
    lineage: tuple[LineageEntry, ...]
    job_id: str | None = None
    step: int | None = None
    task: str | None = None
    method: str | None = None
    setting: str | None = None
    weights: ModelWeights | None = None
    parents: tuple[ModelWeights, ...] = ()
    merged: ModelWeights | None = None
    unservable: str | None = field(default=None)
    """Why the model cannot be loaded now (None: it can): e.g. its base model left the registry."""

    @property
    def servable(self) -> bool:
        return self.unservable is None

    @property
    def chain(self) -> tuple[ModelWeights, ...]:
        """Every archive to apply over ``base``, root first; empty for a base model."""
        return (*self.parents, self.weights) if self.weights is not None else ()


# ------------------------------------------------------------------------------------------ resolving
def resolve_model(session: Session, tenant_id: str, name: str,
                  registry: dict[str, RegisteredModel]) -> ResolvedModel:
    """Resolve ``name`` for tenant ``tenant_id``: a base model of ``registry``, one of the tenant's fine-tuned
    models, or a checkpoint of one that is kept as a model.

    Raises :class:`UnknownModel` (neither kind of name), :class:`ModelNotFound` (no such fine-tuned model or
    checkpoint), :class:`ModelOfAnotherTenant` (its job is another tenant's: answer it as not found),
    :class:`ModelNotReady` (its job has not succeeded) or :class:`ModelDeleted`. A fine-tuned model whose chain
    cannot be loaded now (base model no longer registered, a parent's weights gone) resolves with
    ``unservable`` saying why. Reads only; the caller's session is left as it was.
    """
    return _resolve(session, tenant_id, name, registry, depth=0)


def _resolve(session: Session, tenant_id: str, name: str, registry: dict[str, RegisteredModel],
             depth: int) -> ResolvedModel:
    registered = registry.get(name)
    if registered is not None:
        return ResolvedModel(name, "base", registered, (LineageEntry(name),))
    parsed = parse_model_name(name)
    if parsed is None:
        raise UnknownModel(name, f"Model '{name}' is not available; available models: {', '.join(sorted(registry))}"
                                 ", or one of your fine-tuned models or their checkpoints.")
    if depth >= MAX_LINEAGE:
        raise ModelNotFound(name, f"Model '{name}' descends from more than {MAX_LINEAGE} fine-tuned models.")
    job = _job_of(session, tenant_id, name, parsed)
    spec = JobSpec.from_stored(job.spec)
    if parsed.step is None:
        weights, merged = _final_weights(session, job)
    else:
        weights, merged = _checkpoint_weights(session, job, name, parsed.step), None
    parent = _parent(session, tenant_id, job, registry, depth)
    lineage = (*parent.lineage, LineageEntry(name, job.id, parsed.step))
    parents = () if weights is None or weights.format == "model" else parent.chain
    unservable = parent.unservable
    if weights is None:
        unservable = f"the stored weights of model '{name}' are missing"
    elif parent.base.name not in registry:
        unservable = f"its base model '{parent.base.name}' is no longer served by this deployment"
    return ResolvedModel(
        name, "fine_tuned" if parsed.step is None else "checkpoint", parent.base, lineage, job_id=job.id,
        step=parsed.step, task=spec.task.type.value, method=spec.method.type.value,
        setting=spec.method.setting.value, weights=weights, parents=parents, merged=merged, unservable=unservable)


def _missing(name: str) -> ModelNotFound:
    return ModelNotFound(name, f"The model '{name}' does not exist or you do not have access to it.")


def _job_of(session: Session, tenant_id: str, name: str, parsed: ModelName) -> Job:
    """The succeeded, undeleted job of the fine-tuned model (or checkpoint) ``name``."""
    job = session.get(Job, parsed.job_id)
    if job is None:
        raise _missing(name)
    if job.tenant_id != tenant_id:
        foreign = _missing(name)
        raise ModelOfAnotherTenant(name, foreign.message)
    if job.status != JobStatus.succeeded:
        raise ModelNotReady(name, f"Model '{name}' is not ready: its job {job.id} is '{job.status}', and a job "
                                  "has a model (and checkpoints usable as models) only once it succeeded.")
    if job.model_deleted_at is not None:
        raise ModelDeleted(name, f"Model '{name}' was deleted (the fine-tuned model of job {job.id}, with its "
                                 "checkpoints).")
    if job.fine_tuned_model != parsed.fine_tuned_model:
        raise _missing(name)
    return job


def _parent(session: Session, tenant_id: str, job: Job, registry: dict[str, RegisteredModel],
            depth: int) -> ResolvedModel:
    """What job ``job`` was trained from. A base model that left the registry still names the root, and a
    fine-tuned parent that does not resolve any more (deleting a model others were trained from is refused)
    still shows in the lineage; either makes the model unservable."""
    if job.model in registry or parse_model_name(job.model) is None:
        base = registry.get(job.model) or RegisteredModel(job.model, job.model, "unknown")
        return ResolvedModel(job.model, "base", base, (LineageEntry(job.model),))
    try:
        return _resolve(session, tenant_id, job.model, registry, depth + 1)
    except ModelResolutionError as exc:
        lineage = tuple(model_lineage(session, tenant_id, job.model, registry))
        root = lineage[0].model
        base = registry.get(root) or RegisteredModel(root, root, "unknown")
        return ResolvedModel(job.model, "fine_tuned", base, lineage,
                             unservable=f"the model it was trained from cannot be loaded: {exc.message}")


def _weights(key: str | None, sha256: str | None, size: int | None, kind: str | None, job_id: str,
             step: int | None = None) -> ModelWeights | None:
    if key is None or sha256 is None or kind is None:
        return None
    return ModelWeights(key, sha256, int(size or 0), "adapter" if kind == ArtifactKind.adapter else "model",
                        job_id, step)


def _final_weights(session: Session, job: Job) -> tuple[ModelWeights | None, ModelWeights | None]:
    """``(the model's own archive, the merged archive)``: the adapter when the job exported one, else the whole
    model it exported (full fine-tuning, MeProp)."""
    kinds = (ArtifactKind.adapter, ArtifactKind.merged_model)
    rows = {row.kind: row for row in session.scalars(select(Artifact).where(
        Artifact.job_id == job.id, Artifact.kind.in_([str(k) for k in kinds])))}
    merged_row = rows.get(ArtifactKind.merged_model)
    merged = None if merged_row is None else _weights(merged_row.storage_key, merged_row.sha256, merged_row.bytes,
                                                      merged_row.kind, job.id)
    own = rows.get(ArtifactKind.adapter)
    if own is None:
        return merged, merged
    return _weights(own.storage_key, own.sha256, own.bytes, own.kind, job.id), merged


def _checkpoint_weights(session: Session, job: Job, name: str, step: int) -> ModelWeights:
    row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == step))
    weights = None if row is None else _weights(row.model_key, row.model_sha256, row.model_bytes, row.model_kind,
                                                job.id, step)
    if weights is None:
        raise _missing(name)
    return weights


# ------------------------------------------------------------------------------------------ lineage
def model_lineage(session: Session, tenant_id: str, name: str,
                  registry: dict[str, RegisteredModel]) -> list[LineageEntry]:
    """The chain a job trained on model ``name`` starts from, root base first, ``name`` last, as stored: it never
    raises (a parent deleted since still shows by name; a name that leads nowhere ends the walk)."""
    chain = [LineageEntry(name)]
    current = name
    for _ in range(MAX_LINEAGE):
        parsed = parse_model_name(current) if current not in registry else None
        if parsed is None:
            break
        job = session.get(Job, parsed.job_id)
        if job is None or job.tenant_id != tenant_id:
            break
        chain[0] = LineageEntry(current, job.id, parsed.step)
        current = job.model
        chain.insert(0, LineageEntry(current))
    return chain


def checkpoint_name(job: Job, step: int) -> str | None:
    """The model name of job ``job``'s checkpoint at ``step``; None while the job has no fine-tuned model."""
    return None if job.fine_tuned_model is None else checkpoint_model_name(job.fine_tuned_model, step)
