"""Webhook delivery to a real local receiver: a job's cancel is POSTed signed (checked by a hand-written HMAC and by
the ``openai`` SDK), a 500 is retried after the backoff with the same event, and every attempt shows in the
endpoint's deliveries; attempts run out into ``failed``; the address is checked again before each attempt and the
connection goes to the address checked; redirects are not followed. The relay and the sender run in this process
(``Outbox.dispatch_due`` handing ids to ``WebhookSender.deliver``); the Celery worker runs them in
``tests/service/test_webhooks_embedded.py``."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from api_harness import Service, start_service
from openai.types.webhooks import FineTuningJobCancelledWebhookEvent
from sqlalchemy import func, select
from support.webhook_receiver import expected_signature, webhook_receiver

from sparsegrad_client import WebhookSignatureError, verify_webhook
from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Tenant, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from sparsegrad_service.webhooks import Outbox, new_secret, record_test_event
from worker.webhooks import WebhookSender

HOOKS = "/v1/webhooks"
BACKOFF_S = 0.3


@pytest.fixture()
def service(tmp_path: Path, db: str) -> Iterator[Service]:
    yield from start_service(tmp_path, db, webhooks_allow_private=True, webhooks_allow_http=True,
                             webhook_backoff_s=BACKOFF_S, webhook_max_attempts=3, webhook_timeout_s=5)


def relay_once(service: Service, sender: WebhookSender | None = None) -> list[str]:
    """One pass of the relay, each due delivery attempted at once."""
    sender = sender or WebhookSender(service.settings)
    return Outbox(service.settings).dispatch_due(sender.deliver)


def deliveries(client: Any, webhook_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"{HOOKS}/{webhook_id}/deliveries").json()["data"])


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_a_cancelled_job_is_delivered_signed_and_retried_after_a_500(service: Service) -> None:
    acme = service.as_tenant("acme")
    with webhook_receiver([500]) as receiver:
        hook = acme.post(HOOKS, json={"url": receiver.url}).json()
        job = acme.create_job()
        acme.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        [delivery_id] = relay_once(service)
        assert len(receiver.requests) == 1
        assert relay_once(service) == [] and WebhookSender(service.settings).deliver(delivery_id) == "skipped"
        [pending] = deliveries(acme, hook["id"])
        assert pending["status"] == "pending" and [a["status_code"] for a in pending["attempts"]] == [500]
        assert pending["next_attempt_at"] >= pending["attempts"][0]["started_at"]
        time.sleep(BACKOFF_S + 0.1)
        assert relay_once(service) == [delivery_id]
        assert relay_once(service) == []  # delivered: nothing left to send

    first, second = receiver.requests
    assert first.body == second.body and first.path == second.path == "/hooks/sparsegrad"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for request in receiver.requests:
        assert request.headers["webhook-signature"] == expected_signature(hook["secret"], request)
        assert abs(int(request.headers["webhook-timestamp"]) - request.at) <= 5
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Host"] == receiver.url.split("/")[2]
        event = openai.OpenAI(api_key="unused", webhook_secret=hook["secret"]).webhooks.unwrap(
            request.body, request.headers)
        assert isinstance(event, FineTuningJobCancelledWebhookEvent) and event.data.id == job["id"]
        assert event.id == request.headers["webhook-id"] and event.id.startswith("evt_")
        assert verify_webhook(request.body, request.headers, hook["secret"]).data.id == job["id"]
        with pytest.raises(WebhookSignatureError):
            verify_webhook(request.body.replace(b"cancelled", b"succeeded"), request.headers, hook["secret"])
        with pytest.raises(WebhookSignatureError):
            verify_webhook(request.body, request.headers, new_secret())
        with pytest.raises(WebhookSignatureError, match="from now"):
            verify_webhook(request.body, request.headers, hook["secret"], now=request.at + 600)

    [done] = deliveries(acme, hook["id"])
    assert done["status"] == "succeeded" and done["finished_at"] is not None and done["next_attempt_at"] is None
    failed, ok = done["attempts"]
    assert (failed["attempt"], failed["status_code"], failed["error"]) == (1, 500, "HTTP 500")
    assert failed["response_excerpt"] == ("boom " * 100)[:500]  # a 5,000-byte answer, kept to its start
    assert (ok["attempt"], ok["status_code"], ok["error"], ok["response_excerpt"]) == (2, 200, None, "ok")


def _endpoint(service: Service, url: str) -> str:
    """An endpoint stored as the API would (its URL passed the checks then) with a test event waiting."""
    service.key("acme")  # the tenant exists
    with session_scope(service.url) as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == "acme"))
        endpoint = WebhookEndpoint(tenant_id=tenant_id, url=url, secret=new_secret())
        session.add(endpoint)
        session.flush()
        return record_test_event(session, endpoint.id).id


def test_attempts_run_out_into_failed(service: Service) -> None:
    acme = service.as_tenant("acme")
    with webhook_receiver([503, 500, 502, 200]) as receiver:
        hook = acme.post(HOOKS, json={"url": receiver.url}).json()
        assert acme.post(f"{HOOKS}/{hook['id']}/test").status_code == 202
        for attempt in range(3):
            assert len(relay_once(service)) == 1, attempt
            time.sleep(BACKOFF_S * 2**attempt + 0.1)
        assert relay_once(service) == []
    [delivery] = deliveries(acme, hook["id"])
    assert delivery["status"] == "failed" and [a["status_code"] for a in delivery["attempts"]] == [503, 500, 502]
    assert len(receiver.requests) == 3 and delivery["event"]["type"] == "webhook.test"


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_finished_deliveries_are_swept_after_the_retention_with_their_attempts(service: Service) -> None:
    with webhook_receiver([200, 500]) as receiver:
        done, retried = _endpoint(service, receiver.url), _endpoint(service, receiver.url)
        assert sorted(relay_once(service)) == sorted([done, retried])
    outbox, days = Outbox(service.settings), service.settings.webhook_retention_days
    with session_scope(service.url) as session:
        assert session.scalar(select(func.count()).select_from(WebhookAttempt)) == 2
    assert outbox.prune(utcnow() + timedelta(days=days - 1)) == 0
    assert outbox.prune(utcnow() + timedelta(days=days + 1)) == 1  # the retried one is still pending
    with session_scope(service.url) as session:
        assert session.scalars(select(WebhookDelivery.id)).all() == [retried]
        assert session.scalars(select(WebhookAttempt.delivery_id)).all() == [retried]


def test_the_address_is_checked_before_each_attempt_and_connected_to(service: Service, tmp_path: Path) -> None:
    loopback = [ipaddress.ip_address("127.0.0.1")]
    with webhook_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        # registered when the name resolved to a public address; it now resolves to loopback: refused, nothing sent
        delivery = _endpoint(service, f"http://hooks.invalid:{port}/x")
        strict = service.settings.model_copy(update={"webhooks_allow_private": False})
        assert Outbox(strict).dispatch_due(WebhookSender(strict, lambda host, p: loopback).deliver) == [delivery]
        assert receiver.requests == []
        # allowed: the request goes to the address that was checked (hooks.invalid resolves nowhere else)
        time.sleep(BACKOFF_S + 0.1)
        assert relay_once(service, WebhookSender(service.settings, lambda host, p: loopback)) == [delivery]
        assert [r.headers["Host"] for r in receiver.requests] == [f"hooks.invalid:{port}"]
    acme = service.as_tenant("acme")
    [hook] = acme.get(HOOKS).json()["data"]
    [row] = deliveries(acme, hook["id"])
    refused, ok = row["attempts"]
    assert refused["status_code"] is None and "resolves to 127.0.0.1, a loopback address" in refused["error"]
    assert ok["status_code"] == 200 and row["status"] == "succeeded"


def test_redirects_are_not_followed(service: Service) -> None:
    acme = service.as_tenant("acme")
    with webhook_receiver() as elsewhere, webhook_receiver([307]) as receiver:
        receiver.location = elsewhere.url
        hook = acme.post(HOOKS, json={"url": receiver.url}).json()
        acme.post(f"{HOOKS}/{hook['id']}/test")
        relay_once(service)
        assert len(receiver.requests) == 1 and elsewhere.requests == []
    [attempt] = deliveries(acme, hook["id"])[0]["attempts"]
    assert attempt["status_code"] == 307 and "redirects are not followed" in attempt["error"]


def test_an_answer_that_trickles_in_does_not_hold_the_attempt(service: Service) -> None:
    acme = service.as_tenant("acme")
    with webhook_receiver([500]) as receiver:
        receiver.trickle_s = 0.05  # 5,000 bytes: over four minutes
        hook = acme.post(HOOKS, json={"url": receiver.url}).json()
        acme.post(f"{HOOKS}/{hook['id']}/test")
        t0 = time.monotonic()
        relay_once(service, WebhookSender(service.settings.model_copy(update={"webhook_timeout_s": 1.0})))
        assert time.monotonic() - t0 < 3
    [attempt] = deliveries(acme, hook["id"])[0]["attempts"]
    assert attempt["status_code"] == 500 and attempt["response_excerpt"].startswith("boo")
