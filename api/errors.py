"""One error shape for every failure, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

Routes raise :class:`ApiError`; the handlers installed by :func:`install_error_handlers` also turn request
validation errors (400, naming the field and the bad value), unknown routes (404), wrong methods (405),
database outages (503) and unexpected exceptions (500) into that shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparsegrad_service.model_resolution import ModelResolutionError

log = logging.getLogger("sparsegrad.api")

_MAX_SHOWN = 80
_NOT_A_FILE = "Expected UploadFile"
"""How FastAPI's check of a ``File()`` parameter begins when the part came without a filename."""


class ApiError(Exception):
    """An error answered to the client as ``{"error": {...}}`` with ``status_code``."""

    def __init__(
        self, status_code: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.details = details
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers or None)


def not_found(what: str, object_id: str, param: str | None = None) -> ApiError:
    """404 for a missing object, and equally for another tenant's object."""
    return ApiError(404, f"No {what} found with id '{object_id}'.", param=param, code="not_found")


def model_resolution_error(exc: ModelResolutionError) -> ApiError:
    """The API's answer to a model name that did not resolve: its status and code, naming ``model``."""
    return ApiError(exc.status, exc.message, param="model", code=exc.code)


def conflict(message: str, code: str) -> ApiError:
    """409; ``x-should-retry: false`` stops SDK clients (which retry 409 by default) from retrying."""
    return ApiError(409, message, code=code, headers={"x-should-retry": "false"})


# ------------------------------------------------------------------------------------ validation errors
def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _param(loc: Sequence[Any]) -> str | None:
    """``("body", "method", "sparsegrad", "density")`` → ``method.sparsegrad.density``."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else [
        str(p) for p in loc]
    return ".".join(parts) or None


def describe_validation_error(
    error: Mapping[str, Any], required_body: Sequence[str] = (),
) -> tuple[str, str | None, str]:
    """``(message, param, code)`` for one pydantic error of a request; ``required_body`` names the required
    fields of the route's JSON body (the message for an empty body lists them)."""
    kind = str(error.get("type", ""))
    param = _param(error.get("loc", ()))
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"The request body is not valid JSON ({reason}).", None, "invalid_json"
    if kind == "missing" and param is None:  # the body itself: nothing was sent
        if not required_body:
            return "The request body is empty: send a JSON object.", None, "missing_required_parameter"
        names = ", ".join(f"'{name}'" for name in required_body)
        return (f"Missing required parameters: {names} (the request body is empty: send a JSON object).",
                required_body[0], "missing_required_parameter")
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: '{param}'.", param, "unknown_parameter"
    if param is None:
        return f"Invalid request body: {msg}.", None, "invalid_request_body"
    if kind == "finite_number":
        return f"Invalid value for '{param}': must be a finite number (got {_shown(error.get('input'))}).", param, \
            "invalid_value"
    if msg.startswith(_NOT_A_FILE):  # a File() parameter sent as a plain field: its text is the file's contents
        return (f"Invalid value for '{param}': expected a file part with a filename (got a plain form field, "
                "whose contents are not shown).", param, "invalid_value")
    return f"Invalid value for '{param}': {msg} (got {_shown(error.get('input'))}).", param, "invalid_value"


def validation_api_error(exc: RequestValidationError, required_body: Sequence[str] = ()) -> ApiError:
    errors = list(exc.errors())
    described = [describe_validation_error(e, required_body) for e in errors] or [
        ("Invalid request.", None, "invalid_value")]
    message, param, code = described[0]
    if len(described) > 1:
        message += f" ({len(described) - 1} more: " + "; ".join(m for m, _, _ in described[1:4]) + ")"
    details = [{"param": p, "message": m} for m, p, _ in described]
    return ApiError(400, message, param=param, code=code, details=details)


def required_body_fields(request: Request) -> list[str]:
    """The required fields of the matched route's body model, in declaration order (none without one)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
    return [info.alias or name for name, info in fields.items() if info.is_required()]


# -------------------------------------------------------------------------------------------- handlers
async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_api_error(exc, required_body_fields(request)).response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        error = ApiError(404, f"Invalid URL ({where}).", code="unknown_url")
    elif exc.status_code == 405:
        error = ApiError(405, f"Method not allowed ({where}).", code="method_not_allowed")
    else:
        error = ApiError(exc.status_code, str(exc.detail),
                         type="server_error" if exc.status_code >= 500 else "invalid_request_error")
    error.headers.update(exc.headers or {})
    return error.response()


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return ApiError(503, "The database is unavailable; try again shortly.", type="server_error",
                    code="database_unavailable").response()


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return ApiError(500, "The server had an error while processing your request.", type="server_error",
                    code="internal_error").response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _database_unavailable)  # every pooled connection busy
    app.add_exception_handler(Exception, _unexpected)
