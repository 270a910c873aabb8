"""Request dependencies as ``Annotated`` aliases, so route signatures read like a spec: ``SessionDep``,
``CurrentTenant``, ``SettingsDep``, ``ContextDep``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import update
from sqlalchemy.orm import Session

from sparsegrad_service.keys import KEY_PREFIX, Principal, authenticate, hash_key
from sparsegrad_service.models import ApiKey, utcnow
from sparsegrad_service.settings import Settings

from .context import ServiceContext
from .errors import ApiError
from .timestamps import as_utc

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``ApiKey.last_used_at`` is written at most this often per key."""


async def get_context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


async def current_settings(context: ContextDep) -> Settings:
    return context.settings


SettingsDep = Annotated[Settings, Depends(current_settings)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """One session per request, closed when the route function returns (before a streamed body)."""
    session = context.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                           description="An API key from `sparsegrad keys create --tenant NAME`.")


def invalid_api_key(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def get_current_tenant(
    context: ContextDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    """The tenant of the request's API key; 401 when the key is missing, unknown or revoked, 429 when the
    key is over its rate limit (``rate_limit_per_minute``).

    A key found in the process's short-lived cache (``api_key_cache_s``) costs no database round trip and
    no thread; otherwise the key row is read in a worker thread (its ``last_used_at`` written at most once
    a minute)."""
    if credentials is None or not credentials.credentials:
        raise invalid_api_key("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    raw = credentials.credentials.strip()
    if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        raise invalid_api_key("Incorrect API key provided (unknown or revoked).")
    key_hash = hash_key(raw)
    principal = context.key_cache.get(key_hash)
    if principal is None:
        principal = await context.read(lambda session: _lookup_key(session, raw))
        context.key_cache.put(key_hash, principal)
    wait_s = context.rate_limiter.check(principal.key_id)
    if wait_s > 0:
        retry = max(1, math.ceil(wait_s))
        raise ApiError(429, f"Rate limit exceeded for this API key: {context.rate_limiter.per_minute} requests per "
                       f"minute. Retry after {retry} s.", type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": str(retry)})
    return principal


def _lookup_key(session: Session, raw: str) -> Principal:
    key = authenticate(session, raw)
    if key is None:
        raise invalid_api_key("Incorrect API key provided (unknown or revoked).")
    now = utcnow()
    if key.last_used_at is None or now - as_utc(key.last_used_at) >= LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
                        .execution_options(synchronize_session=False))
        session.commit()
    return Principal(id=key.tenant_id, tenant_name=key.tenant.name, key_id=key.id)


CurrentTenant = Annotated[Principal, Depends(get_current_tenant)]
