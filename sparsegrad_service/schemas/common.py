"""The error body every failing route returns, and the error responses documented on every router."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, naming the field, file line or value at fault.")
    type: str = Field(description="`invalid_request_error` (4xx) or `server_error` (5xx).")
    param: str | None = Field(description="Dotted path of the request field at fault, e.g. `method.sparsegrad.density`.")
    code: str | None = Field(description="Machine-readable code: `invalid_api_key`, `not_found`, `invalid_state`...")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="Dataset problems (`line`, `field`, `message`) or every validation error.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these status codes, all with the error body."""
    text = {400: "Invalid request", 401: "Missing or invalid API key", 403: "Not allowed on this object",
            404: "No such object (or another tenant's)",
            409: "Conflict with the object's state", 413: "Upload too large", 503: "A dependency is unavailable"}
    return {c: {"model": ErrorResponse, "description": text.get(c, "Error")} for c in codes}
