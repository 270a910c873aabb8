"""Webhooks in the service layer: which URLs the service sends to, the events a job's end writes to the outbox,
and the outbox itself (what webhook workers queue, claim and record).

**Outbox.** A job's terminal transition (:func:`~sparsegrad_service.transitions.end_job`) writes one
``webhook_deliveries`` row per subscribed endpoint in its own transaction: a rolled-back transition sends
nothing, and a committed one cannot lose its event to a broker outage. Webhook workers poll for due rows
(:meth:`Outbox.dispatch_due`) and queue one Celery task per row; the task claims the row
(:meth:`Outbox.claim`, a compare-and-set that also counts the attempt, so duplicate messages are harmless),
POSTs it and records the attempt (:meth:`Outbox.record`), which schedules the next one with exponential backoff
(``webhook_backoff_s`` doubling up to ``webhook_backoff_max_s``) until ``webhook_max_attempts``.

**Targets.** A URL must be ``https://`` (``webhooks_allow_http`` allows ``http://``), carry no credentials, and
resolve only to public addresses: loopback, link-local (cloud metadata), private, unspecified, multicast and
reserved ones are refused unless ``webhooks_allow_private``, when the URL is registered and again before every
attempt (DNS may change in between); the attempt then connects to the address that was checked.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from .db import session_scope
from .enums import JobStatus
from .models import Job, Tenant, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from .schemas.webhooks import MAX_URL_CHARS, SECRET_PREFIX, TEST_EVENT_TYPE
from .settings import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IpAddress]]
MAX_WEBHOOKS_PER_TENANT = 10
EXCERPT_CHARS = 500
"""Characters of an answer's body (and of an error) an attempt keeps; the rest is never stored."""
REDISPATCH_AFTER_S = 300.0
"""A due delivery whose task was queued this long ago and never claimed it (a lost message) is queued again."""


class WebhookUrlError(ValueError):
    """A URL the service does not send to; the message says why (the API answers it as a 400 on ``url``)."""


def job_event_type(status: JobStatus) -> str:
    """``fine_tuning.job.succeeded`` for ``succeeded``..."""
    return f"fine_tuning.job.{status}"


def new_secret() -> str:
    """A signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


# -------------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """Where to connect for a URL: its ``host`` and ``port``, and the checked ``address`` to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: IpAddress

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (the ``Host`` header and TLS name stay ``host``)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return parts._replace(netloc=f"{literal}:{self.port}").geturl()

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (a literal address: itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookUrlError(f"its host '{host}' does not resolve ({exc})") from None
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))


def refused_kind(address: IpAddress) -> str | None:
    """Why ``address`` is not a public one (``None`` when it is)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


def check_url(url: str, settings: Settings, resolver: Resolver = resolve) -> Target:
    """The target of ``url`` if the service may send to it (module docstring); :class:`WebhookUrlError` if not."""
    if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 for c in url):
        raise WebhookUrlError(f"a URL has at most {MAX_URL_CHARS} characters and no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"it is not a valid URL ({exc})") from None
    allowed = ("https", "http") if settings.webhooks_allow_http else ("https",)
    if parts.scheme not in allowed:
        raise WebhookUrlError(f"it must start with https:// (got '{parts.scheme}:')" if parts.scheme else
                              "it must be an absolute https:// URL")
    if not parts.hostname:
        raise WebhookUrlError("it has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("it must not contain credentials (user:password@)")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise WebhookUrlError(f"its host '{parts.hostname}' does not resolve")
    if not settings.webhooks_allow_private:
        for address in addresses:
            kind = refused_kind(address)
            if kind is not None:
                raise WebhookUrlError(f"its host '{parts.hostname}' resolves to {address}, a {kind} address; "
                                      "webhooks go to public addresses only")
    return Target(url, parts.scheme, parts.hostname, port, addresses[0])


# --------------------------------------------------------------------------------------------- events in
def new_event_id() -> str:
    return f"evt_{secrets.token_hex(16)}"


def event_body(event_id: str, event_type: str, created_at: datetime, object_id: str) -> str:
    """The JSON every attempt of the event sends (OpenAI's webhook event)."""
    event = {"id": event_id, "object": "event", "created_at": int(created_at.timestamp()), "type": event_type,
             "data": {"id": object_id}}
    return json.dumps(event, separators=(",", ":"))


def _delivery(endpoint_id: str, event_id: str, event_type: str, payload: str, now: datetime) -> WebhookDelivery:
    return WebhookDelivery(endpoint_id=endpoint_id, event_id=event_id, event_type=event_type, payload=payload,
                           status="pending", attempts=0, next_attempt_at=now, created_at=now)


def record_job_event(session: Session, job_id: str, status: JobStatus, at: datetime) -> int:
    """In the caller's transaction: a delivery of job ``job_id``'s ``fine_tuning.job.<status>`` event (created
    ``at``) to each endpoint of its tenant that wants it. Returns how many."""
    event_type = job_event_type(status)
    endpoints = session.execute(select(WebhookEndpoint.id, WebhookEndpoint.events).join(
        Job, Job.tenant_id == WebhookEndpoint.tenant_id).where(Job.id == job_id)).all()
    wanted = [e.id for e in endpoints if e.events is None or event_type in e.events]
    if wanted:
        event_id = new_event_id()
        payload = event_body(event_id, event_type, at, job_id)
        session.add_all(_delivery(endpoint_id, event_id, event_type, payload, utcnow()) for endpoint_id in wanted)
        session.flush()
    return len(wanted)


def record_test_event(session: Session, endpoint_id: str) -> WebhookDelivery:
    """A ``webhook.test`` event for endpoint ``endpoint_id`` only (the caller commits)."""
    event_id, now = new_event_id(), utcnow()
    delivery = _delivery(endpoint_id, event_id, TEST_EVENT_TYPE, event_body(event_id, TEST_EVENT_TYPE, now,
                                                                            endpoint_id), now)
    session.add(delivery)
    session.flush()
    return delivery


# -------------------------------------------------------------------------------------------- outbox
@dataclass(frozen=True)
class Claim:
    """A delivery a worker holds for one attempt: what to send where."""

    delivery_id: str
    attempt: int
    url: str
    secret: str
    event_id: str
    payload: str


@dataclass(frozen=True)
class AttemptResult:
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


class Outbox:
    """The deliveries' side of the database for webhook workers (they write no SQL themselves)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def lease_s(self) -> float:
        """How long a claimed attempt may take before another worker may try again (connect, send, read)."""
        return 4 * self.settings.webhook_timeout_s + 30

    def backoff_s(self, attempt: int) -> float:
        """Wait after failed attempt ``attempt`` (1, 2...): ``webhook_backoff_s`` doubling, capped."""
        return min(self.settings.webhook_backoff_s * 2 ** (attempt - 1), self.settings.webhook_backoff_max_s)

    def dispatch_due(self, send: Callable[[str], object], limit: int = 100) -> list[str]:
        """Mark up to ``limit`` due deliveries dispatched and ``send(id)`` each (queue its task). When a send
        raises (the broker is down), the rows not sent are unmarked, for the next poll, and the error propagates.
        Returns the ids sent."""
        now = utcnow()
        due = (WebhookDelivery.status.in_(["pending", "sending"]), WebhookDelivery.next_attempt_at <= now,
               or_(WebhookDelivery.dispatched_at.is_(None),
                   WebhookDelivery.dispatched_at < now - timedelta(seconds=REDISPATCH_AFTER_S)))
        with session_scope(self.settings.sql_url) as session:
            ids = session.scalars(select(WebhookDelivery.id).where(*due)
                                  .order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
            won = [i for i in ids if session.execute(update(WebhookDelivery).where(WebhookDelivery.id == i, *due)
                                                     .values(dispatched_at=now)).rowcount]  # type: ignore[attr-defined]
        for i, delivery_id in enumerate(won):
            try:
                send(delivery_id)
            except Exception:
                with session_scope(self.settings.sql_url) as session:
                    session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(won[i:]),
                                                                  WebhookDelivery.dispatched_at == now)
                                    .values(dispatched_at=None))
                raise
        return won

    def prune(self, now: datetime | None = None) -> int:
        """Delete the deliveries that finished more than ``webhook_retention_days`` before ``now`` (their
        attempts go with them); pending and sending ones stay whatever their age. Returns how many went."""
        cutoff = (now or utcnow()) - timedelta(days=self.settings.webhook_retention_days)
        with session_scope(self.settings.sql_url) as session:
            old = select(WebhookDelivery.id).where(WebhookDelivery.status.in_(["succeeded", "failed"]),
                                                   WebhookDelivery.finished_at < cutoff)
            session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
            return int(session.execute(delete(WebhookDelivery).where(  # type: ignore[attr-defined]
                WebhookDelivery.id.in_(old))).rowcount)

    def claim(self, delivery_id: str) -> Claim | None:
        """Take delivery ``delivery_id`` for its next attempt if it is due (also a ``sending`` one whose lease
        ran out: its worker died); ``None`` when it is not (done, not due yet, another worker has it, deleted).
        A delivery past ``webhook_max_attempts`` is marked failed instead."""
        now = utcnow()
        with session_scope(self.settings.sql_url) as session:
            taken = session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.status.in_(["pending", "sending"]),
                WebhookDelivery.next_attempt_at <= now,
            ).values(status="sending", attempts=WebhookDelivery.attempts + 1,
                     next_attempt_at=now + timedelta(seconds=self.lease_s))).rowcount  # type: ignore[attr-defined]
            if not taken:
                return None
            row = session.execute(select(WebhookDelivery.attempts, WebhookDelivery.event_id, WebhookDelivery.payload,
                                         WebhookEndpoint.url, WebhookEndpoint.secret)
                                  .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                                  .where(WebhookDelivery.id == delivery_id)).one()
            if row.attempts > self.settings.webhook_max_attempts:  # the last attempt's worker died
                session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
                    status="failed", finished_at=now, next_attempt_at=None, dispatched_at=None,
                    attempts=self.settings.webhook_max_attempts))
                return None
        return Claim(delivery_id, row.attempts, row.url, row.secret, row.event_id, row.payload)

    def record(self, claim: Claim, result: AttemptResult) -> str:
        """Record ``claim``'s attempt and what follows: ``succeeded``, ``failed`` (no attempt left) or ``pending``
        (the next attempt after the backoff). Returns that status (``gone`` for a deleted endpoint)."""
        now = utcnow()
        if result.succeeded:
            status, changes = "succeeded", {"finished_at": now, "next_attempt_at": None}
        elif claim.attempt >= self.settings.webhook_max_attempts:
            status, changes = "failed", {"finished_at": now, "next_attempt_at": None}
        else:
            status = "pending"
            changes = {"next_attempt_at": now + timedelta(seconds=self.backoff_s(claim.attempt))}
        with session_scope(self.settings.sql_url) as session:
            if session.get(WebhookDelivery, claim.delivery_id) is None:
                return "gone"
            session.add(WebhookAttempt(
                delivery_id=claim.delivery_id, attempt=claim.attempt, started_at=result.started_at,
                duration_ms=result.duration_ms, status_code=result.status_code, error=result.error,
                response_excerpt=result.response_excerpt))
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == claim.delivery_id, WebhookDelivery.status == "sending",
                WebhookDelivery.attempts == claim.attempt,
            ).values(status=status, dispatched_at=None, last_status_code=result.status_code,
                     last_error=result.error, **changes))
        return status


def count_endpoints_locked(session: Session, tenant_id: str) -> int:
    """How many endpoints the tenant has, with the tenant's row locked until the transaction ends (a no-op
    update: a row lock in PostgreSQL, the write lock in SQLite), so concurrent registrations count in turn."""
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name))
    return session.scalar(select(func.count()).select_from(WebhookEndpoint)
                          .where(WebhookEndpoint.tenant_id == tenant_id)) or 0


def delete_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> bool:
    """Delete the tenant's endpoint with its deliveries (pending ones are never sent); whether it existed."""
    result = session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                                           WebhookEndpoint.tenant_id == tenant_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
