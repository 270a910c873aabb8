"""Request dependencies as ``Annotated`` aliases, so route signatures read like a spec: what a route reads
(``ReadsDep``), writes (``SessionDep``), stores (``StoreDep``), enqueues (``QueueDep``), and who asks
(``CurrentTenant``). Each is one object the app builds once (``main.create_app``) and keeps on ``app.state``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from sparsegrad_service.keys import Principal
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.registry import RegisteredModel
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore

from .auth import ApiKeys, invalid_api_key
from .reads import Reads


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


ReadsDep = Annotated[Reads, Depends(get_reads)]
"""The one read path (``api/reads.py``)."""


def get_session(request: Request) -> Iterator[Session]:
    """One ORM session per request, for writes (and the reads a write needs), closed when the route function
    returns (before a streamed body)."""
    sessions: Callable[[], Session] = request.app.state.sessions
    session = sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_store(request: Request) -> LocalArtifactStore:
    store: LocalArtifactStore = request.app.state.store
    return store


StoreDep = Annotated[LocalArtifactStore, Depends(get_store)]


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


QueueDep = Annotated[JobQueue, Depends(get_queue)]


async def get_registry(request: Request) -> dict[str, RegisteredModel]:
    registry: dict[str, RegisteredModel] = request.app.state.registry
    return registry


RegistryDep = Annotated[dict[str, RegisteredModel], Depends(get_registry)]
"""The base models of this deployment, by name."""


async def get_started_at(request: Request) -> int:
    started_at: int = request.app.state.started_at
    return started_at


StartedAtDep = Annotated[int, Depends(get_started_at)]
"""When the app started (Unix seconds): the ``created`` time of the registry's models."""

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                           description="An API key from `sparsegrad keys create --tenant NAME`.")


async def get_current_tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    """The tenant of the request's API key; 401 when the key is missing, unknown or revoked, 429 when the
    key is over its rate limit (``rate_limit_per_minute``)."""
    if credentials is None or not credentials.credentials:
        raise invalid_api_key("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    keys: ApiKeys = request.app.state.api_keys
    principal = await keys.principal(credentials.credentials.strip())
    keys.check_rate(principal)
    return principal


CurrentTenant = Annotated[Principal, Depends(get_current_tenant)]
