"""API keys to tenants: ``ApiKeys.principal(raw key)`` is the request's ``Principal`` or a 401, and
``ApiKeys.check_rate(principal)`` a 429 when its key is over its rate limit.

An authenticated key is remembered by the process for ``api_key_cache_s`` (no database round trip, no thread);
otherwise the key row is read through the read path, and its ``last_used_at`` written (in a worker thread) at
most once a minute."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio.to_thread
from sqlalchemy import update
from sqlalchemy.orm import Session

from sparsegrad_service.keys import KEY_PREFIX, KeyCache, Principal, hash_key
from sparsegrad_service.models import ApiKey, utcnow
from sparsegrad_service.ratelimit import RateLimiter

from .errors import ApiError
from .queries import api_key_by_id_statement, api_key_statement
from .reads import Reads
from .timestamps import as_utc

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``ApiKey.last_used_at`` is written at most this often per key."""


def invalid_api_key(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def well_formed(raw: str) -> bool:
    return raw.startswith(KEY_PREFIX) and len(raw) <= 200


class ApiKeys:
    """The app's key cache and rate limiter, and the key lookups on a cache miss."""

    def __init__(self, reads: Reads, sessions: Callable[[], Session], cache: KeyCache, limiter: RateLimiter) -> None:
        self.reads, self.sessions, self.cache, self.limiter = reads, sessions, cache, limiter

    def cached(self, raw: str) -> Principal | None:
        """The principal of a well-formed key authenticated recently, else None."""
        return self.cache.get(hash_key(raw)) if well_formed(raw) else None

    async def principal(self, raw: str) -> Principal:
        if not well_formed(raw):
            raise invalid_api_key("Incorrect API key provided (unknown or revoked).")
        key_hash = hash_key(raw)
        principal = self.cache.get(key_hash)
        if principal is None:
            principal = await self._lookup(key_hash)
            self.cache.put(key_hash, principal)
        return principal

    async def _lookup(self, key_hash: str) -> Principal:
        key = await self.reads.first(api_key_statement(), {"key_hash": key_hash})
        if key is None or key.revoked_at is not None:
            raise invalid_api_key("Incorrect API key provided (unknown or revoked).")
        now = utcnow()
        if key.last_used_at is None or now - as_utc(key.last_used_at) >= LAST_USED_RESOLUTION:
            await anyio.to_thread.run_sync(self._touch, key.id, now)
        return Principal(id=key.tenant_id, tenant_name=key.tenant_name, key_id=key.id)

    async def still_valid(self, principal: Principal) -> bool:
        """Whether the principal's key still exists unrevoked (read now, not from the cache): long-lived
        requests, like an event stream, ask this every ``api_key_cache_s``."""
        key = await self.reads.first(api_key_by_id_statement(), {"key_id": principal.key_id})
        return key is not None and key.revoked_at is None

    def _touch(self, key_id: str, now: datetime) -> None:
        with self.sessions() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)
                            .execution_options(synchronize_session=False))
            session.commit()

    def check_rate(self, principal: Principal) -> None:
        """429 when the principal's key is over its rate limit (each call takes a token)."""
        wait_s = self.limiter.check(principal.key_id)
        if wait_s > 0:
            retry = max(1, math.ceil(wait_s))
            raise ApiError(429, f"Rate limit exceeded for this API key: {self.limiter.per_minute} requests per "
                           f"minute. Retry after {retry} s.", type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(retry)})
