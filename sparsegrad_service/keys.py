"""API keys: created for a tenant, shown once, stored as SHA-256, revocable."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ApiKey, Tenant, utcnow

KEY_PREFIX = "sg-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("tenant name must be 1-200 characters")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, tenant_name: str, key_name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for the tenant (created if needed): ``(row, plaintext key)``; the key is not stored."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10], name=key_name)
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The live key row for ``key``, or None (unknown or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_api_key(session: Session, key_id_or_prefix: str) -> int:
    """Revoke keys by id or by their shown prefix; returns how many were revoked."""
    rows = session.scalars(
        select(ApiKey).where((ApiKey.id == key_id_or_prefix) | (ApiKey.prefix == key_id_or_prefix))
    ).all()
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = utcnow()
    return len(rows)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the tenant (``id``, as routes scope by ``tenant.id``) and the key used."""

    id: str
    tenant_name: str
    key_id: str


class KeyCache:
    """Authenticated keys of one process for ``ttl_s`` seconds, keyed by their hash.

    Only successful lookups are kept, so its size is bounded by the number of live keys used recently;
    a key revoked in SQL keeps working in a process that cached it for at most ``ttl_s`` seconds.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        if self.ttl_s <= 0:
            return None
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                now = time.monotonic()
                self._entries = {h: e for h, e in self._entries.items() if e[0] >= now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
