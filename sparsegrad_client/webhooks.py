"""Webhooks from the client's side: the tenant's endpoints through the API (``client.webhooks``), and
:func:`verify_webhook`, the check a receiver runs on each delivery (its signature against the endpoint's secret,
its timestamp against the clock) before it trusts the event::

    event = verify_webhook(request_body_bytes, request_headers, secret="whsec_...")
    if event.type == "fine_tuning.job.succeeded":
        job = client.get_job(event.data.id)

The signature is the Standard Webhooks scheme OpenAI uses, so ``openai.OpenAI(webhook_secret=...).webhooks
.unwrap`` accepts the same deliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sparsegrad_service.schemas.webhooks import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeleted,
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookEvent,
    WebhookPublic,
    WebhookSignatureError,
    WebhooksPublic,
    verify_webhook,
)

Call = Callable[..., Any]
"""``SparseGradClient._call``: ``(response model, method, path, **httpx arguments) -> the parsed answer``."""

__all__ = ["WebhookEndpoints", "WebhookEvent", "WebhookSignatureError", "verify_webhook"]


class WebhookEndpoints:
    """``client.webhooks``: create, list, get, delete and test the tenant's endpoints, and read their deliveries."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def create(self, url: str, events: Sequence[str] | None = None, description: str | None = None) -> WebhookCreated:
        """Register ``url`` for ``events`` (default: every type); the answer's ``secret`` is shown only now."""
        body = WebhookCreate.model_validate({"url": url, "events": None if events is None else list(events),
                                             "description": description})
        result: WebhookCreated = self._call(WebhookCreated, "POST", "/v1/webhooks",
                                            json=body.model_dump(exclude_none=True))
        return result

    def list(self) -> WebhooksPublic:
        result: WebhooksPublic = self._call(WebhooksPublic, "GET", "/v1/webhooks")
        return result

    def get(self, webhook_id: str) -> WebhookPublic:
        result: WebhookPublic = self._call(WebhookPublic, "GET", f"/v1/webhooks/{webhook_id}")
        return result

    def delete(self, webhook_id: str) -> WebhookDeleted:
        """Delete the endpoint; its pending deliveries are never sent."""
        result: WebhookDeleted = self._call(WebhookDeleted, "DELETE", f"/v1/webhooks/{webhook_id}")
        return result

    def test(self, webhook_id: str) -> WebhookDeliveryPublic:
        """Queue a ``webhook.test`` event to the endpoint; follow it with :meth:`deliveries`."""
        result: WebhookDeliveryPublic = self._call(WebhookDeliveryPublic, "POST", f"/v1/webhooks/{webhook_id}/test")
        return result

    def deliveries(self, webhook_id: str, after: str | None = None, limit: int | None = None) -> WebhookDeliveriesPublic:
        """The endpoint's deliveries, newest first, each with its attempts."""
        params = {k: v for k, v in {"after": after, "limit": limit}.items() if v is not None}
        result: WebhookDeliveriesPublic = self._call(WebhookDeliveriesPublic, "GET",
                                                     f"/v1/webhooks/{webhook_id}/deliveries", params=params)
        return result
