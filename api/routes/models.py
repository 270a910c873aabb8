"""Base models workers may load (the deployment's registry; nothing else is accepted)."""

from __future__ import annotations

from fastapi import APIRouter

from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.schemas import ModelObject, ModelsPublic
from sparsegrad_service.schemas.common import error_responses

from ..context import ServiceContext
from ..deps import ContextDep, CurrentTenant
from ..errors import not_found

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401, 404))


def model_object(context: ServiceContext, model: RegisteredModel) -> ModelObject:
    return ModelObject(id=model.name, created=context.started_at, owned_by=model.owned_by,
                       architecture=model.architecture, tasks=list(model.tasks), description=model.description)


@router.get("", response_model=ModelsPublic)
def list_models(context: ContextDep, _tenant: CurrentTenant) -> ModelsPublic:
    """List the base models this deployment can fine-tune."""
    return ModelsPublic(data=[model_object(context, m) for _, m in sorted(context.registry.items())])


@router.get("/{model_id}", response_model=ModelObject)
def retrieve_model(model_id: str, context: ContextDep, _tenant: CurrentTenant) -> ModelObject:
    """Retrieve one base model."""
    model = context.registry.get(model_id)
    if model is None:
        raise not_found("model", model_id, param="model_id")
    return model_object(context, model)
