"""Webhook endpoints of a tenant: register (the signing secret is answered once), list, retrieve, delete, send a
test event, and list the deliveries with every attempt. Another tenant's endpoint is a 404 on every route."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import bindparam, or_, select

from sparsegrad_service.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_id, utcnow
from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.schemas.webhooks import (
    WebhookAttemptPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookDeleted,
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhooksPublic,
)
from sparsegrad_service.webhooks import (
    MAX_WEBHOOKS_PER_TENANT,
    WebhookUrlError,
    check_url,
    count_endpoints_locked,
    delete_endpoint,
    new_secret,
    record_test_event,
)

from ..deps import CurrentTenant, ReadsDep, SessionDep, SettingsDep
from ..errors import ApiError, not_found
from ..reads import Query as Statement
from ..reads import Reads
from ..timestamps import unix, unix_required

router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=error_responses(400, 401, 404))

ENDPOINT_COLUMNS = (WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.events, WebhookEndpoint.description,
                    WebhookEndpoint.created_at)
"""What the API reads of an endpoint: never its secret."""
DELIVERY_COLUMNS = (WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookDelivery.event_id,
                    WebhookDelivery.event_type, WebhookDelivery.status, WebhookDelivery.next_attempt_at,
                    WebhookDelivery.created_at, WebhookDelivery.finished_at, WebhookDelivery.payload)
ATTEMPT_COLUMNS = (WebhookAttempt.delivery_id, WebhookAttempt.attempt, WebhookAttempt.started_at,
                   WebhookAttempt.duration_ms, WebhookAttempt.status_code, WebhookAttempt.error,
                   WebhookAttempt.response_excerpt)


def endpoint_statement() -> Statement:
    """The tenant's endpoint by id (parameters ``webhook_id``, ``tenant_id``)."""
    return select(*(c.label(c.key) for c in ENDPOINT_COLUMNS)).where(
        WebhookEndpoint.id == bindparam("webhook_id"), WebhookEndpoint.tenant_id == bindparam("tenant_id"))


def webhook_public(row: Any) -> WebhookPublic:
    return WebhookPublic(id=row.id, url=row.url, events=row.events, description=row.description,
                         created_at=unix_required(row.created_at))


async def read_endpoint(reads: Reads, tenant_id: str, webhook_id: str) -> Any:
    row = await reads.first(endpoint_statement(), {"webhook_id": webhook_id, "tenant_id": tenant_id})
    if row is None:
        raise not_found("webhook endpoint", webhook_id, param="webhook_id")
    return row


def invalid_url(url: str, reason: str) -> ApiError:
    return ApiError(400, f"Invalid url '{url[:200]}': {reason}.", param="url", code="invalid_url")


@router.post("", response_model=WebhookCreated, responses=error_responses(409))
def create_webhook(body: WebhookCreate, session: SessionDep, tenant: CurrentTenant,
                   settings: SettingsDep) -> WebhookCreated:
    """Register a URL for the tenant's events; the answer holds the signing secret, shown only this once."""
    try:
        check_url(body.url, settings)
    except WebhookUrlError as exc:
        raise invalid_url(body.url, str(exc)) from None
    if count_endpoints_locked(session, tenant.id) >= MAX_WEBHOOKS_PER_TENANT:
        raise ApiError(409, f"A tenant has at most {MAX_WEBHOOKS_PER_TENANT} webhook endpoints; delete one first.",
                       code="webhook_limit_reached", headers={"x-should-retry": "false"})
    row = WebhookEndpoint(id=new_id("wh"), tenant_id=tenant.id, url=body.url, events=body.events,
                          description=body.description, secret=new_secret(), created_at=utcnow())
    session.add(row)
    session.commit()
    return WebhookCreated(**webhook_public(row).model_dump(), secret=row.secret)


@router.get("", response_model=WebhooksPublic)
async def list_webhooks(tenant: CurrentTenant, reads: ReadsDep) -> WebhooksPublic:
    """List the tenant's webhook endpoints, newest first."""
    rows = await reads.all(select(*(c.label(c.key) for c in ENDPOINT_COLUMNS))
                           .where(WebhookEndpoint.tenant_id == tenant.id)
                           .order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc()))
    return WebhooksPublic(data=[webhook_public(r) for r in rows])


@router.get("/{webhook_id}", response_model=WebhookPublic)
async def retrieve_webhook(webhook_id: str, tenant: CurrentTenant, reads: ReadsDep) -> WebhookPublic:
    """Retrieve a webhook endpoint (without its secret)."""
    return webhook_public(await read_endpoint(reads, tenant.id, webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookDeleted)
def delete_webhook(webhook_id: str, session: SessionDep, tenant: CurrentTenant) -> WebhookDeleted:
    """Delete a webhook endpoint with its deliveries; pending ones are never sent."""
    if not delete_endpoint(session, tenant.id, webhook_id):
        raise not_found("webhook endpoint", webhook_id, param="webhook_id")
    session.commit()
    return WebhookDeleted(id=webhook_id)


@router.post("/{webhook_id}/test", response_model=WebhookDeliveryPublic, status_code=202)
def test_webhook(webhook_id: str, session: SessionDep, tenant: CurrentTenant) -> WebhookDeliveryPublic:
    """Send a `webhook.test` event to this endpoint (queued like any event; follow it in its deliveries)."""
    endpoint = session.scalar(select(WebhookEndpoint.id).where(WebhookEndpoint.id == webhook_id,
                                                               WebhookEndpoint.tenant_id == tenant.id))
    if endpoint is None:
        raise not_found("webhook endpoint", webhook_id, param="webhook_id")
    delivery = record_test_event(session, webhook_id)
    session.commit()
    return delivery_public(delivery, [])


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveriesPublic)
async def list_deliveries(
    webhook_id: str, tenant: CurrentTenant, reads: ReadsDep,
    after: Annotated[str | None, Query(description="A delivery id: return older deliveries.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100. Default 20.")] = 20,
) -> WebhookDeliveriesPublic:
    """List an endpoint's deliveries, newest first, each with its attempts (status code, error, duration)."""
    await read_endpoint(reads, tenant.id, webhook_id)
    query = select(*(c.label(c.key) for c in DELIVERY_COLUMNS)).where(WebhookDelivery.endpoint_id == webhook_id)
    if after is not None:
        cursor = await reads.first(select(WebhookDelivery.created_at.label("created_at")).where(
            WebhookDelivery.id == after, WebhookDelivery.endpoint_id == webhook_id))
        if cursor is None:
            raise ApiError(400, f"Invalid after: no such delivery '{after}'.", param="after", code="invalid_cursor")
        query = query.where(or_(WebhookDelivery.created_at < cursor.created_at,
                                (WebhookDelivery.created_at == cursor.created_at) & (WebhookDelivery.id < after)))
    rows = await reads.all(query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                           .limit(limit + 1))
    page = rows[:limit]
    attempts: dict[str, list[WebhookAttemptPublic]] = {r.id: [] for r in page}
    if page:
        for a in await reads.all(select(*(c.label(c.key) for c in ATTEMPT_COLUMNS))
                                 .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                                 .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)):
            attempts[a.delivery_id].append(WebhookAttemptPublic(
                attempt=a.attempt, started_at=unix_required(a.started_at), duration_ms=a.duration_ms,
                status_code=a.status_code, error=a.error, response_excerpt=a.response_excerpt))
    data = [delivery_public(r, attempts[r.id]) for r in page]
    return WebhookDeliveriesPublic(data=data, has_more=len(rows) > limit, first_id=data[0].id if data else None,
                                   last_id=data[-1].id if data else None)


def delivery_public(row: Any, attempts: list[WebhookAttemptPublic]) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        id=row.id, webhook_id=row.endpoint_id, event_id=row.event_id, event_type=row.event_type, status=row.status,
        attempts=attempts, next_attempt_at=unix(row.next_attempt_at) if row.status == "pending" else None,
        created_at=unix_required(row.created_at), finished_at=unix(row.finished_at), event=json.loads(row.payload))
