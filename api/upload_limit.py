"""A hard cap on upload request bodies, enforced while they arrive: a ``Content-Length`` over the cap is
refused at once, and a body that grows past it (chunked uploads) is cut off; both answer 413 in the API's
error shape. The upload route checks the exact cap on the file part itself."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

MULTIPART_ALLOWANCE = 1024 * 1024
"""Bytes allowed beyond the file cap for the multipart envelope and the form fields."""


class _BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Applies to ``POST`` requests on ``paths``; the cap is ``max_bytes`` plus ``MULTIPART_ALLOWANCE``."""

    def __init__(self, app: ASGIApp, paths: frozenset[str], max_bytes: int) -> None:
        self.app = app
        self.paths = paths
        self.max_bytes = max_bytes
        self.limit = max_bytes + MULTIPART_ALLOWANCE

    def _refusal(self) -> ApiError:
        return ApiError(413, f"The upload is larger than the limit of {self.max_bytes:,} bytes.", param="file",
                        code="file_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refusal().response()(scope, receive, send)
            return
        received, exceeded, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's own answer to the cut-off body is replaced by the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refusal().response()(scope, receive, send)
