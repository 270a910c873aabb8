"""Inference with base and fine-tuned models, in OpenAI's shapes: chat completions and completions (decoders,
Server-Sent Events with ``stream``), and predictions (classification and regression models).

Each route authenticates the tenant, resolves ``model`` among its names
(:func:`~sparsegrad_service.model_resolution.resolve_model`: a base model, one of its fine-tuned models or their
checkpoints; another tenant's is a 404, one whose job has not succeeded a 400), checks the model fits the route,
and forwards the request with what to load to the inference server (:mod:`api.inference_proxy`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from sparsegrad_service.keys import Principal
from sparsegrad_service.model_resolution import (
    ModelResolutionError,
    ModelWeights,
    ResolvedModel,
    resolve_model,
)
from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.schemas.inference import (
    ChatCall,
    ChatCompletionCreate,
    ChatCompletionPublic,
    CompletionCall,
    CompletionCreate,
    CompletionPublic,
    PredictionCall,
    PredictionCreate,
    PredictionsPublic,
    ServedModel,
    StoredWeights,
)

from ..deps import CurrentTenant, RegistryDep, SessionDep
from ..errors import ApiError, model_resolution_error
from ..inference_proxy import InferenceDep

router = APIRouter(tags=["inference"], responses=error_responses(400, 401, 404, 409, 503))

Route = Literal["generate", "predict"]
GENERATION_ROUTES = "POST /v1/chat/completions or POST /v1/completions"
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "JSON, or with `stream: true` Server-Sent Events (`data: {chunk}`, last `data: [DONE]`)."}}


def _wrong_route(message: str) -> ApiError:
    return ApiError(400, message, param="model", code="wrong_model_type")


def _check_route(resolved: ResolvedModel, route: Route) -> str:
    """The task ``resolved`` is served for; 400 when it is not what ``route`` does."""
    name = resolved.name
    if resolved.kind == "base":
        if route == "predict":
            raise _wrong_route(f"Model '{name}' is a base model: it has no trained classification head. Predict "
                               "takes one of your fine-tuned classification or regression models.")
        if resolved.base.architecture != "decoder":
            raise _wrong_route(f"Model '{name}' is an encoder: it does not generate text. Fine-tune it for "
                               "classification or regression and use POST /v1/predict.")
        return "causal_lm"
    task = resolved.task or "causal_lm"
    if route == "generate" and task != "causal_lm":
        raise _wrong_route(f"Model '{name}' is a {task} model: use POST /v1/predict.")
    if route == "predict" and task == "causal_lm":
        raise _wrong_route(f"Model '{name}' generates text: use {GENERATION_ROUTES}.")
    return task


def _weights(weights: ModelWeights) -> StoredWeights:
    return StoredWeights(key=weights.storage_key, sha256=weights.sha256, format=weights.format)


def _served(session: Session, tenant: Principal, name: str, registry: dict[str, RegisteredModel],
            route: Route) -> ServedModel:
    try:
        resolved = resolve_model(session, tenant.id, name, registry)
    except ModelResolutionError as exc:
        raise model_resolution_error(exc) from exc
    task = _check_route(resolved, route)
    if not resolved.servable:
        raise ApiError(409, f"Model '{name}' cannot be served: {resolved.unservable}.", param="model",
                       code="model_not_servable")
    return ServedModel(name=name, base=resolved.base.name, task=task,  # type: ignore[arg-type]
                       chain=[_weights(w) for w in resolved.chain],
                       merged=None if resolved.merged is None else _weights(resolved.merged))


async def served_model(session: Session, tenant: Principal, name: str, registry: dict[str, RegisteredModel],
                       route: Route) -> ServedModel:
    """What the inference server loads for the tenant's model ``name`` (resolved off the event loop)."""
    return await run_in_threadpool(_served, session, tenant, name, registry, route)


@router.post("/chat/completions", response_model=ChatCompletionPublic, responses=STREAM_DOC)
async def create_chat_completion(body: ChatCompletionCreate, session: SessionDep, tenant: CurrentTenant,
                                 registry: RegistryDep, inference: InferenceDep) -> Response:
    """Answer a chat with a base or fine-tuned decoder model (OpenAI's chat completion; `stream` for SSE)."""
    served = await served_model(session, tenant, body.model, registry, "generate")
    return await inference.forward("/v1/chat/completions", ChatCall(model=served, request=body), stream=bool(body.stream))


@router.post("/completions", response_model=CompletionPublic, responses=STREAM_DOC)
async def create_completion(body: CompletionCreate, session: SessionDep, tenant: CurrentTenant,
                            registry: RegistryDep, inference: InferenceDep) -> Response:
    """Continue a prompt with a base or fine-tuned decoder model (OpenAI's completion; `stream` for SSE)."""
    served = await served_model(session, tenant, body.model, registry, "generate")
    return await inference.forward("/v1/completions", CompletionCall(model=served, request=body),
                                   stream=bool(body.stream))


@router.post("/predict", response_model=PredictionsPublic)
async def create_prediction(body: PredictionCreate, session: SessionDep, tenant: CurrentTenant,
                            registry: RegistryDep, inference: InferenceDep) -> Response:
    """Classify texts (or text pairs) with a fine-tuned classification or regression model: labels, scores."""
    served = await served_model(session, tenant, body.model, registry, "predict")
    return await inference.forward("/v1/predict", PredictionCall(model=served, request=body), stream=False)
