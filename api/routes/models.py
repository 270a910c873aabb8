"""Base models workers may load (the deployment's registry; nothing else is accepted)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from sparsegrad_service.models import Job
from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.retention import delete_model_records, delete_objects, unfinished_job_on_model
from sparsegrad_service.schemas import ModelDeleted, ModelObject, ModelsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deletion import refuse_while_merging
from ..deps import CurrentTenant, RegistryDep, SessionDep, StartedAtDep, StoreDep
from ..errors import ApiError, conflict, not_found

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401, 404))


def model_object(model: RegisteredModel, created: int) -> ModelObject:
    return ModelObject(id=model.name, created=created, owned_by=model.owned_by, architecture=model.architecture,
                       tasks=list(model.tasks), description=model.description)


@router.get("", response_model=ModelsPublic)
async def list_models(registry: RegistryDep, started_at: StartedAtDep, _tenant: CurrentTenant) -> ModelsPublic:
    """List the base models this deployment can fine-tune."""
    return ModelsPublic(data=[model_object(m, started_at) for _, m in sorted(registry.items())])


@router.get("/{model_id}", response_model=ModelObject)
async def retrieve_model(model_id: str, registry: RegistryDep, started_at: StartedAtDep,
                         _tenant: CurrentTenant) -> ModelObject:
    """Retrieve one base model."""
    model = registry.get(model_id)
    if model is None:
        raise not_found("model", model_id, param="model_id")
    return model_object(model, started_at)


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
    user = unfinished_job_on_model(session, model)
    if user is not None:
        raise conflict(f"Cannot delete model {model}: job {user.id} ('{user.status}') fine-tunes it.",
                       "model_in_use")
    keys = delete_model_records(session, job)
    session.commit()
    delete_objects(store, keys)
    return ModelDeleted(id=model)
