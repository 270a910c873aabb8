"""Base models workers may load (the deployment's registry; nothing else is accepted)."""

from __future__ import annotations

from fastapi import APIRouter

from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.schemas import ModelObject, ModelsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, RegistryDep, StartedAtDep
from ..errors import not_found

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
