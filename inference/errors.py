"""The inference server's errors, in the API's error shape (``{"error": {"message", "type", "param", "code"}}``),
so the API relays them unchanged."""

from __future__ import annotations

from typing import Any


class InferenceError(Exception):
    """A request the server answers with ``status_code`` and OpenAI's error body."""

    def __init__(self, status_code: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.param, self.code = status_code, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status_code >= 500 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def busy(max_pending: int) -> InferenceError:
    """503 for a request over the server's bound of waiting and running requests."""
    return InferenceError(503, f"The inference server is busy ({max_pending} requests waiting or running); retry "
                          "shortly.", code="inference_busy", headers={"Retry-After": "2"})
