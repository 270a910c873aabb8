"""The API's side of the inference server (``Settings.inference_url``): one HTTP client that forwards a validated
request with the worker token and relays the answer as it comes, JSON or Server-Sent Events.

The inference server answers errors in the API's error body, relayed with their status. The API says what went
wrong itself when the server cannot be reached or none is configured (503 ``inference_unavailable``), when it
refuses the API's token (503: the two disagree on ``SPARSEGRAD_WORKER_TOKEN``) or answers something that is not
an error body (502). A stream that breaks after it started ends with one ``data: {"error": ...}`` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import Depends
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from sparsegrad_service.settings import Settings

from .deps import app_state
from .errors import ApiError

log = logging.getLogger("sparsegrad.api")

RELAYED_HEADERS = ("retry-after",)
TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=30.0)
"""A read waits up to 10 minutes: the first token may come after the model loads."""


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, type="server_error", code="inference_unavailable")


class InferenceProxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.inference_url
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())

    def _http(self) -> httpx.AsyncClient:
        """The client of the running event loop (a client's connections belong to the loop that opened them)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            assert self.url is not None
            client = self._clients[loop] = httpx.AsyncClient(
                base_url=self.url.rstrip("/"), timeout=TIMEOUT,
                headers={"Authorization": f"Bearer {self.settings.worker_secret()}"})
        return client

    async def forward(self, path: str, call: BaseModel, *, stream: bool) -> Response:
        """POST ``call`` to the inference server's ``path``; its answer, streamed when ``stream``."""
        if not self.url:
            raise unavailable("No inference server is configured for this API: set SPARSEGRAD_INFERENCE_URL "
                              "(`sparsegrad up` starts one; `sparsegrad inference` runs one).")
        client = self._http()
        request = client.build_request("POST", path, content=call.model_dump_json(),
                                       headers={"Content-Type": "application/json"})
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise unavailable(f"The inference server at {self.url} cannot be reached ({type(exc).__name__}: "
                              f"{exc}); is it running? (`sparsegrad inference`)") from exc
        headers = {k: response.headers[k] for k in RELAYED_HEADERS if k in response.headers}
        if response.status_code == 200 and stream:
            headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            return StreamingResponse(self._relay(response), media_type="text/event-stream", headers=headers)
        try:
            body = await response.aread()
        except httpx.TransportError as exc:
            raise unavailable(f"The inference server at {self.url} closed the connection: {exc}") from exc
        finally:
            await response.aclose()
        self._check(response.status_code, body)
        return Response(body, status_code=response.status_code, media_type="application/json", headers=headers)

    def _check(self, status: int, body: bytes) -> None:
        """Raise for an answer that is not the server's own: a refused token, or a body without the error shape."""
        if status == 401:
            raise unavailable("The inference server refused the API's credential: SPARSEGRAD_WORKER_TOKEN must be "
                              "the same for the API and the inference server.")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or (status != 200 and "error" not in parsed):
            raise ApiError(502, f"The inference server answered {status} with an unexpected body: "
                           f"{body[:200].decode(errors='replace')}", type="server_error", code="bad_gateway")

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            log.warning("inference stream broke: %s", exc)
            error = unavailable(f"The inference server's stream broke: {exc}")
            yield f"data: {json.dumps(error.body())}\n\n".encode()
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the running loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


InferenceDep = Annotated[InferenceProxy, Depends(app_state("inference"))]
"""The inference server's client (built once by ``main.create_app``)."""
