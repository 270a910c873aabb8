"""Request dependencies as ``Annotated`` aliases, so route signatures read like a spec: what a route reads
(``ReadsDep``), writes (``SessionDep``), stores (``StoreDep``), enqueues (``QueueDep``), and who asks
(``CurrentTenant``). Each is one object the app builds once (``main.create_app``) and keeps on ``app.state``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

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


def app_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """The dependency that returns ``app.state.<name>`` (built once by ``main.create_app``)."""

    async def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"get_{name}"
    return dependency


SettingsDep = Annotated[Settings, Depends(app_state("settings"))]
ReadsDep = Annotated[Reads, Depends(app_state("reads"))]
"""The one read path (``api/reads.py``)."""
StoreDep = Annotated[LocalArtifactStore, Depends(app_state("store"))]
QueueDep = Annotated[JobQueue, Depends(app_state("queue"))]
RegistryDep = Annotated[dict[str, RegisteredModel], Depends(app_state("registry"))]
"""The base models of this deployment, by name."""
ApiKeysDep = Annotated[ApiKeys, Depends(app_state("api_keys"))]
"""The key cache and lookups (``api/auth.py``)."""


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
