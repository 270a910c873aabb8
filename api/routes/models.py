"""Models: the base models workers may load (the deployment's registry; nothing else is accepted) and the
tenant's fine-tuned models (its succeeded jobs' ``fine_tuned_model``, until deleted)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from sparsegrad_service.model_names import job_id_of, parse_model_name
from sparsegrad_service.model_resolution import ModelResolutionError, resolve_model
from sparsegrad_service.models import Job
from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.retention import delete_model_records, delete_objects, unfinished_job_on_model
from sparsegrad_service.schemas import ModelDeleted, ModelObject, ModelsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deletion import refuse_while_merging, refuse_while_trained_on
from ..deps import CurrentTenant, ReadsDep, RegistryDep, SessionDep, StoreDep
from ..errors import ApiError, conflict, model_resolution_error, not_found
from ..queries import fine_tuned_model_statement, fine_tuned_models_statement
from ..serializers import fine_tuned_model_object, root_model

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401, 404))


def model_object(model: RegisteredModel) -> ModelObject:
    return ModelObject(id=model.name, created=model.created, owned_by=model.owned_by,
                       architecture=model.architecture, tasks=list(model.tasks), description=model.description)


@router.get("", response_model=ModelsPublic)
async def list_models(registry: RegistryDep, tenant: CurrentTenant, reads: ReadsDep) -> ModelsPublic:
    """List the base models this deployment can fine-tune, then your fine-tuned models (newest first)."""
    rows = await reads.all(fine_tuned_models_statement(), {"tenant_id": tenant.id})
    return ModelsPublic(data=[*(model_object(m) for _, m in sorted(registry.items())),
                              *(fine_tuned_model_object(r, registry.get(root_model(r))) for r in rows)])


@router.get("/{model:path}", response_model=ModelObject)
async def retrieve_model(model: str, registry: RegistryDep, tenant: CurrentTenant, reads: ReadsDep,
                         session: SessionDep) -> ModelObject:
    """Retrieve a base model, one of your fine-tuned models or one of their kept checkpoints by its name (another
    tenant's is a 404)."""
    base = registry.get(model)
    if base is not None:
        return model_object(base)
    parsed = parse_model_name(model)
    if parsed is not None and parsed.step is not None:
        await run_in_threadpool(_check_checkpoint, session, tenant.id, model, registry)
    fine_tuned = parsed.fine_tuned_model if parsed is not None else model
    row = await reads.first(fine_tuned_model_statement(),
                            {"tenant_id": tenant.id, "job_id": job_id_of(model), "name": fine_tuned})
    if row is None:
        raise not_found("model", model, param="model")
    found = fine_tuned_model_object(row, registry.get(root_model(row)))
    if fine_tuned == model:
        return found
    return found.model_copy(update={"id": model, "parent": fine_tuned,
                                    "description": f"checkpoint at step {parsed.step} of {fine_tuned}"})  # type: ignore[union-attr]


def _check_checkpoint(session: Session, tenant_id: str, name: str, registry: dict[str, RegisteredModel]) -> None:
    """Refuse a checkpoint name that is not one of the tenant's kept checkpoints (404), as inference would."""
    try:
        resolve_model(session, tenant_id, name, registry)
    except ModelResolutionError as exc:
        raise model_resolution_error(exc) from exc


@router.delete("/{model:path}", response_model=ModelDeleted, responses=error_responses(403, 409))
def delete_model(model: str, session: SessionDep, tenant: CurrentTenant, registry: RegistryDep,
                 store: StoreDep) -> ModelDeleted:
    """Delete one of your fine-tuned models: its adapter and merged-model archives go (the job, its metrics and
    events stay). Base models cannot be deleted (403); a model a merge or a job is using is refused (409)."""
    if model in registry:
        raise ApiError(403, f"Model '{model}' is a base model of this deployment and cannot be deleted; only "
                       "fine-tuned models can.", param="model", code="model_not_deletable")
    job = session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.fine_tuned_model == model,
                                           Job.model_deleted_at.is_(None)).with_for_update())
    if job is None:
        raise not_found("model", model, param="model")
    refuse_while_merging(job, f"model {model}")
    refuse_while_trained_on(session, job, f"model {model}")
    user = unfinished_job_on_model(session, model)
    if user is not None:
        raise conflict(f"Cannot delete model {model}: job {user.id} ('{user.status}') fine-tunes it.",
                       "model_in_use")
    keys = delete_model_records(session, job)
    session.commit()
    delete_objects(store, keys)
    return ModelDeleted(id=model)
