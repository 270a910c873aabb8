"""The artifact store over HTTP, for workers on machines without the API's disk: stream objects from,
into and out of the API's local store. Authenticated with the worker token, not an API key; hidden from
the public OpenAPI document."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import anyio
import anyio.from_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sparsegrad_service.store import LocalArtifactStore, StoreError

from ..deps import SettingsDep, StoreDep
from ..errors import ApiError

MAX_OBJECT_BYTES = 20 * 1024**3
"""Largest object a worker may upload (a merged model archive of a few billion parameters)."""

worker_bearer = HTTPBearer(auto_error=False, scheme_name="WorkerToken")


def require_worker(
    request: Request, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(worker_bearer)],
) -> None:
    """401 unless the request carries the worker token (read once, on first use: in development it is a file
    created under ``data_dir``)."""
    expected: str | None = getattr(request.app.state, "worker_token", None)
    if expected is None:
        expected = request.app.state.worker_token = settings.worker_secret()
    token = credentials.credentials if credentials is not None else ""
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "A valid worker token is required ('Authorization: Bearer <worker token>').",
                       code="invalid_worker_token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/internal/store", tags=["internal"], include_in_schema=False,
                   dependencies=[Depends(require_worker)])


def _object_path(store: LocalArtifactStore, key: str) -> Path:
    try:
        return store.path(key)
    except ValueError as exc:
        raise ApiError(400, f"Invalid store key '{key}'.", param="key", code="invalid_key") from exc


@router.get("/{key:path}")
def read_object(key: str, store: StoreDep) -> FileResponse:
    """Stream an object."""
    path = _object_path(store, key)
    if not path.is_file():
        raise ApiError(404, f"No object '{key}' in the store.", param="key", code="not_found")
    return FileResponse(path, media_type="application/octet-stream")


@router.put("/{key:path}")
async def write_object(key: str, request: Request, store: StoreDep) -> dict[str, object]:
    """Store the request body as the object (atomically); answers its size and sha256."""
    _object_path(store, key)
    body = request.stream()

    async def next_chunk() -> bytes | None:
        try:
            return await body.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        size = 0
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            size += len(chunk)
            if size > MAX_OBJECT_BYTES:
                raise ApiError(413, f"Objects are limited to {MAX_OBJECT_BYTES:,} bytes.", param="key",
                               code="object_too_large")
            if chunk:
                yield chunk

    try:
        stored = await anyio.to_thread.run_sync(lambda: store.write_stream(key, chunks()))
    except StoreError as exc:
        raise ApiError(503, str(exc), type="server_error", code="storage_unavailable") from exc
    return {"key": stored.key, "bytes": stored.bytes, "sha256": stored.sha256}


@router.delete("/{key:path}")
def delete_object(key: str, store: StoreDep) -> dict[str, object]:
    """Delete an object (no error if it is absent)."""
    _object_path(store, key)
    store.delete(key)
    return {"key": key, "deleted": True}
