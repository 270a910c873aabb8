"""Webhook endpoints over the API: register (secret shown once), list, retrieve, delete, the limit per tenant; URLs
refused with a 400 naming ``url`` (plain http, credentials, loopback, link-local, private, unspecified, multicast
addresses, also behind a host name) unless the operator allows them; and the outbox: a job's terminal transition
writes one delivery per subscribed endpoint in its own transaction (a rolled-back one writes none).
Cross-tenant 404s on every webhook route are checked with every other route in ``test_isolation``."""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from api_harness import Service, TenantClient, start_service
from sqlalchemy import select

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import JobStatus
from sparsegrad_service.models import Job, WebhookDelivery
from sparsegrad_service.settings import Settings
from sparsegrad_service.transitions import end_job
from sparsegrad_service.webhooks import MAX_WEBHOOKS_PER_TENANT, WebhookUrlError, check_url

HOOKS = "/v1/webhooks"
LOCAL = "http://127.0.0.1:9/hook"  # nothing is sent in these tests


@pytest.fixture()
def open_service(tmp_path: Path, db: str) -> Iterator[Service]:
    """The API with local http targets allowed (as the delivery tests run)."""
    yield from start_service(tmp_path, db, webhooks_allow_private=True, webhooks_allow_http=True)


def refused(client: TenantClient, url: str) -> str:
    r = client.post(HOOKS, json={"url": url})
    assert r.status_code == 400, (url, r.text)
    error = r.json()["error"]
    assert error["param"] == "url", (url, error)
    return str(error["message"])


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_create_list_retrieve_delete_and_the_secret_is_shown_once(open_service: Service) -> None:
    acme = open_service.as_tenant("acme")
    r = acme.post(HOOKS, json={"url": LOCAL, "events": ["fine_tuning.job.succeeded", "fine_tuning.job.succeeded"],
                               "description": "CI"})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["object"] == "webhook_endpoint" and created["id"].startswith("wh-")
    assert created["events"] == ["fine_tuning.job.succeeded"] and created["description"] == "CI"
    assert created["secret"].startswith("whsec_") and len(base64.b64decode(created["secret"][6:])) == 32
    other = acme.post(HOOKS, json={"url": LOCAL}).json()
    assert other["events"] is None and other["secret"] != created["secret"]

    one = acme.get(f"{HOOKS}/{created['id']}")
    assert one.status_code == 200 and "secret" not in one.json() and created["secret"] not in one.text
    listed = acme.get(HOOKS).json()
    assert [w["id"] for w in listed["data"]] == [other["id"], created["id"]]
    assert created["secret"] not in json.dumps(listed) and other["secret"] not in json.dumps(listed)
    assert acme.get(f"{HOOKS}/{created['id']}/deliveries").json() == {
        "object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}

    deleted = acme.delete(f"{HOOKS}/{created['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": created["id"], "object": "webhook_endpoint",
                                                             "deleted": True}
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries"), ("POST", "/test")):
        r = acme.request(method, f"{HOOKS}/{created['id']}{path}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path, r.text)
    assert [w["id"] for w in acme.get(HOOKS).json()["data"]] == [other["id"]]


def test_bad_bodies_name_the_field(open_service: Service) -> None:
    acme = open_service.as_tenant("acme")
    cases = [({}, "url"), ({"url": LOCAL, "events": []}, "events"), ({"url": LOCAL, "events": ["job.done"]},
             "events.0"), ({"url": LOCAL, "secret": "mine"}, "secret"), ({"url": LOCAL + "x" * 2048}, "url"),
             ({"url": LOCAL, "description": "d" * 201}, "description")]
    for body, param in cases:
        r = acme.post(HOOKS, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)


def test_a_tenant_has_a_limited_number_of_endpoints(open_service: Service) -> None:
    acme, beta = open_service.as_tenant("acme"), open_service.as_tenant("beta")
    for _ in range(MAX_WEBHOOKS_PER_TENANT):
        assert acme.post(HOOKS, json={"url": LOCAL}).status_code == 200
    r = acme.post(HOOKS, json={"url": LOCAL})
    assert r.status_code == 409 and r.json()["error"]["code"] == "webhook_limit_reached"
    assert beta.post(HOOKS, json={"url": LOCAL}).status_code == 200  # per tenant


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_concurrent_registrations_keep_the_limit(open_service: Service) -> None:
    acme = open_service.as_tenant("acme")
    attempts = 4 * MAX_WEBHOOKS_PER_TENANT
    barrier = threading.Barrier(attempts)

    def register(_: int) -> int:
        barrier.wait()
        return acme.post(HOOKS, json={"url": LOCAL}).status_code

    with ThreadPoolExecutor(attempts) as pool:
        statuses = sorted(pool.map(register, range(attempts)))
    assert statuses == [200] * MAX_WEBHOOKS_PER_TENANT + [409] * (attempts - MAX_WEBHOOKS_PER_TENANT)
    assert len(acme.get(HOOKS).json()["data"]) == MAX_WEBHOOKS_PER_TENANT


def test_urls_to_private_targets_and_plain_http_are_refused_by_default(service: Service, acme: TenantClient) -> None:
    assert "https://" in refused(acme, "http://hooks.example.com/x")
    for url, kind in [("https://127.0.0.1/x", "loopback"), ("https://127.5.6.7:8443/", "loopback"),
                      ("https://[::1]/x", "loopback"), ("https://[::ffff:127.0.0.1]/", "loopback"),
                      ("https://localhost/x", "loopback"), ("https://169.254.169.254/latest/meta-data", "link-local"),
                      ("https://[fe80::1]/", "link-local"), ("https://0.0.0.0/", "unspecified"),
                      ("https://224.0.0.1/", "multicast"), ("https://10.1.2.3/", "private"),
                      ("https://192.168.0.10/", "private"), ("https://[fd00::1]/", "private")]:
        assert f"a {kind} address" in refused(acme, url), url
    for url, reason in [("https://user:pw@1.1.1.1/", "credentials"), ("ftp://1.1.1.1/", "https://"),
                        ("/relative", "absolute"), ("https://", "no host"), ("https://1.1.1.1:99999/", "valid URL"),
                        ("https://exa mple.com/", "spaces")]:
        assert reason in refused(acme, url), url
    assert acme.get(HOOKS).json()["data"] == []


def test_the_operator_settings_allow_local_targets_separately(tmp_path: Path) -> None:
    public = [ipaddress.ip_address("93.184.216.34")]
    strict = Settings(data_dir=tmp_path)
    assert check_url("https://hooks.example.com/x", strict, lambda host, port: public).address == public[0]
    with pytest.raises(WebhookUrlError, match=r"resolves to 10\.0\.0\.7, a private address"):
        check_url("https://hooks.example.com/x", strict, lambda host, port: [public[0], ipaddress.ip_address("10.0.0.7")])
    private = Settings(data_dir=tmp_path, webhooks_allow_private=True)
    assert check_url("https://127.0.0.1:8443/x", private).pinned_url == "https://127.0.0.1:8443/x"
    with pytest.raises(WebhookUrlError, match="https://"):
        check_url("http://127.0.0.1/x", private)
    both = Settings(data_dir=tmp_path, webhooks_allow_private=True, webhooks_allow_http=True)
    target = check_url("http://localhost:8080/x?y=1", both)
    assert target.address.is_loopback and target.host_header == "localhost:8080"
    assert target.pinned_url == f"http://{'[::1]' if target.address.version == 6 else '127.0.0.1'}:8080/x?y=1"


def _deliveries(service: Service) -> list[WebhookDelivery]:
    with session_scope(service.url) as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.endpoint_id)))


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_a_terminal_transition_writes_one_delivery_per_subscribed_endpoint(open_service: Service) -> None:
    acme, beta = open_service.as_tenant("acme"), open_service.as_tenant("beta")
    every = acme.post(HOOKS, json={"url": LOCAL}).json()
    cancelled = acme.post(HOOKS, json={"url": LOCAL, "events": ["fine_tuning.job.cancelled"]}).json()
    acme.post(HOOKS, json={"url": LOCAL, "events": ["fine_tuning.job.succeeded", "fine_tuning.job.failed"]})
    beta.post(HOOKS, json={"url": LOCAL})  # another tenant's endpoint hears nothing of acme's jobs
    job = acme.create_job()
    assert _deliveries(open_service) == []  # created and queued: no event

    # a transition that rolls back leaves no delivery behind
    with session_scope(open_service.url) as session:
        assert end_job(session, job["id"], JobStatus.cancelled, None, Job.status == JobStatus.queued)
        assert len(session.scalars(select(WebhookDelivery)).all()) == 2
        session.rollback()
    assert _deliveries(open_service) == []

    done = acme.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()
    rows = _deliveries(open_service)
    assert sorted(r.endpoint_id for r in rows) == sorted([every["id"], cancelled["id"]])
    assert rows[0].payload == rows[1].payload and rows[0].event_id == rows[1].event_id
    event = json.loads(rows[0].payload)
    assert event == {"id": rows[0].event_id, "object": "event", "created_at": done["finished_at"],
                     "type": "fine_tuning.job.cancelled", "data": {"id": job["id"]}}
    assert event["id"].startswith("evt_") and all(r.status == "pending" and r.attempts == 0 for r in rows)

    listed = acme.get(f"{HOOKS}/{every['id']}/deliveries").json()["data"]
    assert len(listed) == 1 and listed[0]["status"] == "pending" and listed[0]["attempts"] == []
    assert listed[0]["event"] == event and listed[0]["event_type"] == "fine_tuning.job.cancelled"
    assert listed[0]["next_attempt_at"] is not None and listed[0]["webhook_id"] == every["id"]
    acme.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")  # already cancelled: no second event
    assert len(_deliveries(open_service)) == 2


def test_test_events_and_delivery_pages(open_service: Service) -> None:
    acme = open_service.as_tenant("acme")
    hook = acme.post(HOOKS, json={"url": LOCAL, "events": ["fine_tuning.job.failed"]}).json()
    sent = [acme.post(f"{HOOKS}/{hook['id']}/test") for _ in range(3)]
    assert all(r.status_code == 202 for r in sent)
    first = sent[0].json()
    assert first["event_type"] == "webhook.test" and first["event"]["data"] == {"id": hook["id"]}
    assert first["status"] == "pending" and first["object"] == "webhook_delivery"
    page = acme.get(f"{HOOKS}/{hook['id']}/deliveries", params={"limit": 2}).json()
    assert [d["id"] for d in page["data"]] == [sent[2].json()["id"], sent[1].json()["id"]] and page["has_more"]
    rest = acme.get(f"{HOOKS}/{hook['id']}/deliveries", params={"after": page["last_id"]}).json()
    assert [d["id"] for d in rest["data"]] == [first["id"]] and not rest["has_more"]
    r = acme.get(f"{HOOKS}/{hook['id']}/deliveries", params={"after": "whd-nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
