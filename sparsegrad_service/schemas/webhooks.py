"""Webhooks: endpoint and delivery objects, the event every delivery carries (OpenAI's webhook event shape) and
its signature, the Standard Webhooks scheme OpenAI uses (``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` with the key in ``whsec_<base64>``).
The service signs with :func:`sign_webhook`; receivers check with :func:`verify_webhook`, or with
``openai.OpenAI(webhook_secret=...).webhooks.unwrap``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JobEventType = Literal["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]
TEST_EVENT_TYPE = "webhook.test"
"""The type of the event ``POST /v1/webhooks/{id}/test`` sends (to that endpoint only, whatever its filter)."""
MAX_URL_CHARS = 2048
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
"""How far a delivery's ``webhook-timestamp`` may be from the receiver's clock (seconds), as OpenAI's SDK."""


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description=(
        "Where events are POSTed: an `https://` URL whose host resolves to public addresses only (an operator can "
        "allow `http://` and private or loopback targets)."))
    events: list[JobEventType] | None = Field(default=None, min_length=1, description=(
        "The event types to send; null (default): every type."))
    description: str | None = Field(default=None, max_length=200)

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[JobEventType] | None) -> list[JobEventType] | None:
        return None if events is None else list(dict.fromkeys(events))


class WebhookPublic(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str] | None = Field(description="The event types sent to it; null: every type.")
    description: str | None
    created_at: int = Field(description="Unix seconds.")


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret (`whsec_<base64>`), shown only in this answer: keep it.")


class WebhooksPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookPublic]
    has_more: bool = False


class WebhookDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: bool = True


class WebhookAttemptPublic(BaseModel):
    attempt: int = Field(description="1 for the first try.")
    started_at: int = Field(description="Unix seconds.")
    duration_ms: int
    status_code: int | None = Field(description="The endpoint's HTTP status; null when no answer came.")
    error: str | None = Field(description="Why the attempt failed (a non-2xx status, a timeout, a refused address).")
    response_excerpt: str | None = Field(description="The first characters of the answer's body.")


class WebhookDeliveryPublic(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_id: str
    event_id: str
    event_type: str
    status: str = Field(description="`pending` (waiting for its next attempt), `sending`, `succeeded` or `failed` "
                        "(no attempt left).")
    attempts: list[WebhookAttemptPublic] = Field(description="Every HTTP attempt so far, oldest first.")
    next_attempt_at: int | None = Field(description="When a pending delivery is tried next (unix seconds).")
    created_at: int
    finished_at: int | None
    event: dict[str, Any] = Field(description="The event sent, exactly as in the request body.")


class WebhookDeliveriesPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookDeliveryPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class WebhookEventData(BaseModel):
    id: str = Field(description="The object the event is about: the fine-tuning job's id (a test event: the endpoint's).")


class WebhookEvent(BaseModel):
    """The body of every delivery, OpenAI's webhook event."""

    id: str = Field(description="`evt_...`; also the `webhook-id` header, the same on every attempt (deduplicate on it).")
    object: Literal["event"] = "event"
    created_at: int = Field(description="Unix seconds: when the job reached the status the type names.")
    type: str
    data: WebhookEventData


# ------------------------------------------------------------------------------------------------- signature
class WebhookSignatureError(ValueError):
    """A delivery whose headers, timestamp or signature do not check out."""


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a webhook secret is '{SECRET_PREFIX}' then base64; this one is not") from exc


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of ``body``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    digest = hmac.new(_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str, *,
                   tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None) -> WebhookEvent:
    """The event of a delivery whose signature matches ``secret`` and whose timestamp is within ``tolerance_s`` of
    now; :class:`WebhookSignatureError` otherwise. ``headers``: the request's (any case); ``body``: its raw bytes."""
    raw = body.encode() if isinstance(body, str) else body
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        webhook_id, stamp, signatures = (lower[h] for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    except KeyError as exc:
        raise WebhookSignatureError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookSignatureError(f"invalid webhook-timestamp {stamp!r}") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise WebhookSignatureError(f"webhook-timestamp {timestamp} is more than {tolerance_s} s from now")
    expected = sign_webhook(secret, webhook_id, timestamp, raw)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise WebhookSignatureError("no signature in webhook-signature matches the secret")
    return WebhookEvent.model_validate(json.loads(raw))
