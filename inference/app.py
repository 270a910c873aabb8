"""The inference server's ASGI app. Only the API calls it (``Authorization: Bearer <worker token>``), with a
validated OpenAI request and what to load (:class:`~sparsegrad_service.schemas.inference.ServedModel`):

* ``POST /v1/chat/completions`` (:class:`ChatCall`), ``POST /v1/completions`` (:class:`CompletionCall`): JSON, or
  Server-Sent Events with ``stream``;
* ``POST /v1/predict`` (:class:`PredictionCall`): labels, scores and probabilities;
* ``GET /healthz``: the engine's name.

Errors are the API's error body, so the API relays them as they are.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from sparsegrad_service.schemas.inference import (
    ChatCall,
    ChatCompletionCreate,
    CompletionCall,
    CompletionCreate,
    PredictionCall,
    PredictionsPublic,
    ServedModel,
    Usage,
)
from sparsegrad_service.settings import Settings, get_settings

from .backend import Backend, Prompt, Sampling
from .engines import make_backend
from .errors import InferenceError
from .openai_format import Answer, collect, sse

log = logging.getLogger("sparsegrad.inference")


async def worker_token(request: Request) -> None:
    """401 unless the request carries the deployment's worker token (the API's credential here)."""
    expected: str = request.app.state.token
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise InferenceError(401, "The inference server takes requests from the API only (worker token).",
                             code="invalid_worker_token")


def backend_of(request: Request) -> Backend:
    return request.app.state.backend  # type: ignore[no-any-return]


Authorized = Depends(worker_token)
BackendDep = Annotated[Backend, Depends(backend_of)]


async def _answer(backend: Backend, model: ServedModel, request: ChatCompletionCreate | CompletionCreate
                  ) -> JSONResponse | StreamingResponse:
    stream = backend.generate(model, Prompt.of(request), Sampling.of(request))
    try:
        first = await anext(stream)  # loading and the prompt's checks fail here, before any byte is sent
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    answer = Answer(model.name, chat=isinstance(request, ChatCompletionCreate))
    if request.stream:
        return StreamingResponse(sse(answer, first, stream, request.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    text, finished = await collect(first, stream)
    return JSONResponse(answer.whole(text, finished))


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """The server for ``settings`` (default: the environment) with ``backend`` (default: the one the settings
    name, built now: a process serves with one engine)."""
    settings = settings or get_settings()
    engine = backend or make_backend(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.aclose()

    app = FastAPI(title="SparseGrad inference server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.backend, app.state.token = engine, settings.worker_secret()

    @app.exception_handler(InferenceError)
    async def _inference_error(_request: Request, exc: InferenceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        error = InferenceError(400, f"Invalid inference request: {param}: {first.get('msg', 'invalid')}",
                               param=param, code="invalid_value")
        return JSONResponse(error.body(), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("inference failed", exc_info=exc)
        error = InferenceError(500, f"The inference server failed: {type(exc).__name__}: {exc}"[:500],
                               code="internal_error")
        return JSONResponse(error.body(), status_code=500)

    @app.get("/healthz")
    async def healthz(backend: BackendDep) -> dict[str, str]:
        """The server is up; which engine it serves with."""
        return {"status": "ok", "backend": backend.name}

    @app.post("/v1/chat/completions", dependencies=[Authorized])
    async def chat_completions(call: ChatCall, backend: BackendDep) -> Any:
        """A chat completion of ``call.model``."""
        return await _answer(backend, call.model, call.request)

    @app.post("/v1/completions", dependencies=[Authorized])
    async def completions(call: CompletionCall, backend: BackendDep) -> Any:
        """A completion of ``call.model``."""
        return await _answer(backend, call.model, call.request)

    @app.post("/v1/predict", dependencies=[Authorized], response_model=PredictionsPublic)
    async def predict(call: PredictionCall, backend: BackendDep) -> PredictionsPublic:
        """Labels, scores and probabilities of a classification or regression model."""
        result = await backend.predict(call.model, call.request.texts, call.request.text_pairs)
        usage = Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
        return PredictionsPublic(model=call.model.name, data=result.data, usage=usage)

    return app
