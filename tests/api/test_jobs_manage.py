"""Managing jobs: Idempotency-Key, listing with cursor paging and a status filter, cancel / pause / resume
transitions, and merge requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from api_harness import Service, TenantClient
from sqlalchemy import func, select, update

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.models import Artifact, Job

JOBS = "/v1/fine_tuning/jobs"


def set_status(service: Service, job_id: str, status: str) -> None:
    with session_scope(service.url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_idempotency_key(service: Service, acme: TenantClient) -> None:
    body = {"model": "minilm-l6", "training_file": acme.upload_id(), "seed": 1}
    first = acme.post(JOBS, json=body, headers={"Idempotency-Key": "k-1"})
    again = acme.post(JOBS, json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = acme.post(JOBS, json={**body, "seed": 2}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert other.headers["x-should-retry"] == "false"
    # the same key of another tenant is another job
    beta = service.as_tenant("beta")
    beta_job = beta.post(JOBS, json={**body, "training_file": beta.upload_id()}, headers={"Idempotency-Key": "k-1"})
    assert beta_job.status_code == 200 and beta_job.json()["id"] != first.json()["id"]

    # concurrent duplicates create one job
    racing = {**body, "seed": 3}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: acme.post(JOBS, json=racing, headers={"Idempotency-Key": "race"}),
                                range(6)))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with session_scope(service.url) as session:
        assert session.scalar(select(func.count(Job.id)).where(Job.idempotency_key == "race")) == 1


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_list_pages_newest_first_with_a_status_filter(service: Service, acme: TenantClient) -> None:
    file_id = acme.upload_id()
    ids = [acme.create_job(training_file=file_id)["id"] for _ in range(5)]
    newest_first = ids[::-1]
    listing = acme.get(JOBS).json()
    assert listing["object"] == "list" and [j["id"] for j in listing["data"]] == newest_first
    assert not listing["has_more"]

    seen, after = [], None
    while True:
        page = acme.get(JOBS, params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == newest_first

    acme.post(f"{JOBS}/{ids[1]}/cancel")
    acme.post(f"{JOBS}/{ids[3]}/cancel")
    cancelled = acme.get(JOBS, params={"status": "cancelled"}).json()["data"]
    assert [j["id"] for j in cancelled] == [ids[3], ids[1]]
    assert [j["queue_position"] for j in acme.get(JOBS, params={"status": "queued"}).json()["data"]] == [3, 2, 1]
    r = acme.get(JOBS, params={"status": "sleeping"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "status"
    r = acme.get(JOBS, params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
    r = acme.get(JOBS, params={"after": "ftjob-nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    assert acme.get(f"{JOBS}/{ids[0]}").json()["id"] == ids[0]
    assert acme.get(f"{JOBS}/ftjob-nope").status_code == 404


def test_cancel_pause_resume_transitions(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    url = f"{JOBS}/{job['id']}"
    paused = acme.post(f"{url}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert paused.json()["queue_position"] is None
    assert acme.post(f"{url}/pause").json()["status"] == "paused"  # already paused: unchanged
    resumed = acme.post(f"{url}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    assert len(list((service.settings.broker_dir / "queue").glob("*.msg"))) == 2  # sent again on resume
    assert acme.post(f"{url}/resume").json()["status"] == "queued"  # already queued: unchanged
    cancelled = acme.post(f"{url}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert acme.post(f"{url}/cancel").json()["status"] == "cancelled"  # idempotent
    for action in ("pause", "resume"):
        r = acme.post(f"{url}/{action}")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "invalid_state" and "'cancelled'" in r.json()["error"]["message"]

    running = acme.create_job()
    set_status(service, running["id"], "running")
    r = acme.post(f"{JOBS}/{running['id']}/pause")
    assert r.status_code == 200 and r.json()["status"] == "running"  # the worker pauses at its next step
    assert acme.post(f"{JOBS}/{running['id']}/resume").json()["status"] == "running"  # pause withdrawn
    r = acme.post(f"{JOBS}/{running['id']}/cancel")
    assert r.json()["status"] == "cancelling"
    done = acme.create_job()
    set_status(service, done["id"], "succeeded")
    r = acme.post(f"{JOBS}/{done['id']}/cancel")
    assert r.status_code == 409 and "'succeeded'" in r.json()["error"]["message"]
    messages = [e["message"] for e in acme.get(f"{url}/events", params={"order": "asc"}).json()["data"]]
    assert messages[0] == "Job created" and "Job cancelled." in messages


def test_merge_requests(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    r = acme.post(f"{JOBS}/{job['id']}/merge")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
    set_status(service, job["id"], "succeeded")
    r = acme.post(f"{JOBS}/{job['id']}/merge")
    assert r.status_code == 202 and r.json()["id"] == job["id"]
    queued = [p.read_text() for p in (service.settings.broker_dir / "queue").glob("*.msg")]
    assert any("sparsegrad.merge_job" in text for text in queued)
    with session_scope(service.url) as session:
        session.add(Artifact(job_id=job["id"], kind=str(ArtifactKind.merged_model), filename="m.tar.gz", bytes=1,
                             sha256="0" * 64, storage_key="jobs/x/artifacts/m.tar.gz"))
    r = acme.post(f"{JOBS}/{job['id']}/merge")
    assert r.status_code == 200 and len(r.json()["result_files"]) == 1
