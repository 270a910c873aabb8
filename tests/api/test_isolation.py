"""Tenant isolation over every ``/v1`` route of the app (taken from its OpenAPI document, so a new route
is covered, or fails this test, automatically): another tenant's object is a 404 exactly like a missing
one, lists never show it, and no API key is a 401 everywhere."""

from __future__ import annotations

import re
import time

import pytest
from api_harness import CLASSIFICATION_ROWS, Service, jsonl

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import JobStatus
from sparsegrad_service.model_names import fine_tuned_model_name
from sparsegrad_service.models import Artifact, Checkpoint, Job, WebhookEndpoint, utcnow
from sparsegrad_service.store import LocalArtifactStore, artifact_key

OBJECT_PARAMS = {"file_id", "job_id", "artifact_id", "model", "webhook_id", "checkpoint_id"}
TENANT_NEUTRAL = {"/v1/fine_tuning/defaults"}
NO_OBJECT = {("GET", "/v1/files"), ("POST", "/v1/files"), ("GET", "/v1/fine_tuning/jobs"),
             ("POST", "/v1/fine_tuning/jobs"), ("GET", "/v1/storage"), ("GET", "/v1/models"),
             ("GET", "/v1/webhooks"), ("POST", "/v1/webhooks")}
BODY_MODEL = {"/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
              "/v1/completions": {"prompt": "hi"}, "/v1/predict": {"texts": ["hi"]}}
"""Routes whose object is the ``model`` named in the body (inference): another tenant's model is a 404."""


def v1_operations(service: Service) -> list[tuple[str, str]]:
    paths = service.app.openapi()["paths"]
    return sorted((method.upper(), path) for path, ops in paths.items() if path.startswith("/v1/")
                  for method in ops)


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def request_kwargs(method: str, path: str) -> dict[str, object]:
    if (method, path) == ("POST", "/v1/files"):
        return {"files": {"file": ("t.jsonl", jsonl(CLASSIFICATION_ROWS))}, "data": {"purpose": "fine-tune"}}
    if method == "POST":
        return {"json": {}}
    return {}


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_every_v1_route_refuses_other_tenants_and_missing_keys(service: Service) -> None:
    acme, beta, nobody = service.as_tenant("acme"), service.as_tenant("beta"), service.anonymous()
    file_id = acme.upload_id()
    job = acme.create_job(training_file=file_id)
    stored = LocalArtifactStore(service.settings.artifact_root).put_bytes(
        artifact_key(job["id"], "a.tar.gz"), b"secret adapter")
    with session_scope(service.url) as session:
        artifact = Artifact(job_id=job["id"], kind="adapter", filename="a.tar.gz", bytes=stored.bytes,
                            sha256=stored.sha256, storage_key=stored.key)
        session.add(artifact)
        session.flush()
        row = session.get(Job, job["id"])
        assert row is not None
        fine_tuned = fine_tuned_model_name(row.model, row.tenant_id, "iso", row.id)
        row.status, row.finished_at, row.fine_tuned_model = JobStatus.succeeded, utcnow(), fine_tuned
        webhook = WebhookEndpoint(tenant_id=row.tenant_id, url="https://hooks.example.com/x", secret="whsec_c2VjcmV0")
        session.add(webhook)
        checkpoint = Checkpoint(job_id=job["id"], step=5, model_kind="adapter", model_key=stored.key,
                                model_bytes=stored.bytes, model_sha256=stored.sha256)
        session.add(checkpoint)
        session.flush()
        ids = {"file_id": file_id, "job_id": job["id"], "artifact_id": artifact.id, "model": fine_tuned,
               "webhook_id": webhook.id, "checkpoint_id": checkpoint.id}

    operations = v1_operations(service)
    assert len(operations) >= 20, operations
    for method, path in operations:
        url = fill(path, ids)
        params = set(re.findall(r"\{(\w+)\}", path))
        # no key: 401, whatever the route
        r = nobody.request(method, url, **request_kwargs(method, path))  # type: ignore[arg-type]
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
        # the owner reaches every object route (so the 404s below are about ownership); the live stream of a
        # queued job never ends, test_events covers it
        if params & OBJECT_PARAMS and method == "GET" and not path.endswith("/stream"):
            owner = acme.get(url)
            assert owner.status_code == 200, (path, owner.text)
        # another tenant
        r = beta.request(method, url, **request_kwargs(method, path))  # type: ignore[arg-type]
        if params & OBJECT_PARAMS:
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "not_found"
            assert "secret" not in r.text and job["task"]["type"] not in r.text
        elif path in TENANT_NEUTRAL:
            assert r.status_code == 200, (method, path, r.text)
        elif path in BODY_MODEL and method == "POST":
            r = beta.post(url, json={"model": ids["model"], **BODY_MODEL[path]})
            missing = beta.post(url, json={"model": ids["model"].replace(job["id"], "ftjob-missing"),
                                           **BODY_MODEL[path]})
            assert r.status_code == missing.status_code == 404, (method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] == missing.json()["error"]["code"] and "secret" not in r.text
        elif (method, path) in NO_OBJECT:
            assert all(i not in r.text for i in (file_id, job["id"], ids["webhook_id"])), (method, path, r.text)
        else:
            raise AssertionError(f"unclassified route {method} {path}: decide how it is tenant-scoped")

    # base models are everybody's; a fine-tuned model only its tenant's
    assert beta.get("/v1/models/minilm-l6").json()["owned_by"] == "sparsegrad"
    assert fine_tuned not in beta.get("/v1/models").text and fine_tuned in acme.get("/v1/models").text
    # beta cannot use acme's file in a job, and its lists stay empty of acme's objects
    r = beta.post("/v1/fine_tuning/jobs", json={"model": "minilm-l6", "training_file": file_id})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    assert beta.get("/v1/fine_tuning/jobs").json()["data"] == []
    assert all(f["id"] != file_id for f in beta.get("/v1/files").json()["data"])
    # acme still sees everything
    assert acme.get(f"/v1/fine_tuning/jobs/{job['id']}").status_code == 200


def test_revoked_and_malformed_keys_are_401(service: Service) -> None:
    from sparsegrad_service.keys import revoke_api_key

    acme = service.as_tenant("acme")
    assert acme.get("/v1/files").status_code == 200
    for header in ("Bearer sg-unknown", "Bearer ", "Basic abc", "sg-no-scheme"):
        r = service.client.get("/v1/files", headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", header
        assert r.json()["error"]["type"] == "invalid_request_error"
    with session_scope(service.url) as session:
        assert acme.key is not None
        assert revoke_api_key(session, acme.key[:10]) == 1
    # The API remembers an authenticated key for at most api_key_cache_s seconds.
    ttl = service.settings.api_key_cache_s
    deadline = time.monotonic() + ttl + 1.0
    while acme.get("/v1/files").status_code != 401:
        assert time.monotonic() < deadline, f"a revoked key still works after {ttl} s"
        time.sleep(0.05)
    assert acme.get("/v1/files").status_code == 401


def test_key_cache_saves_lookups_and_expires() -> None:
    from sparsegrad_service.keys import KeyCache, Principal

    who = Principal(id="org-1", tenant_name="acme", key_id="key-1")
    cache = KeyCache(0.2)
    assert cache.get("h") is None
    cache.put("h", who)
    assert cache.get("h") == who
    time.sleep(0.25)
    assert cache.get("h") is None
    off = KeyCache(0)
    off.put("h", who)
    assert off.get("h") is None


def test_last_used_at_is_recorded(service: Service) -> None:
    from sqlalchemy import select

    from sparsegrad_service.keys import hash_key
    from sparsegrad_service.models import ApiKey

    acme = service.as_tenant("acme")
    acme.get("/v1/models")
    assert acme.key is not None
    with session_scope(service.url) as session:
        first = session.scalar(select(ApiKey.last_used_at).where(ApiKey.key_hash == hash_key(acme.key)))
    acme.get("/v1/models")
    with session_scope(service.url) as session:
        second = session.scalar(select(ApiKey.last_used_at).where(ApiKey.key_hash == hash_key(acme.key)))
    assert first is not None and first == second  # written at most once a minute
