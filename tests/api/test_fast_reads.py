"""The fast ``GET /v1/fine_tuning/jobs/{id}`` path (``api/fast_reads.py``), on PostgreSQL and SQLite: the same
body as the regular route in every job state, and every case it does not own (no key, a key not cached yet, another
tenant's job, an unknown job, a key over its rate limit) answered by the regular route exactly as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, TenantClient, start_service
from sqlalchemy import update
from starlette.responses import Response

from api.fast_reads import ROUTE, FastJobReads
from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Artifact, Job, utcnow

pytestmark = pytest.mark.parametrize("db", ["postgres", "sqlite"], indirect=True)


@pytest.fixture()
def fast_answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per request the fast path saw: True when it answered, False when it handed over."""
    seen: list[bool] = []
    original = FastJobReads._answer

    async def answer(self: FastJobReads, scope: Any) -> Response | None:
        result = await original(self, scope)
        seen.append(result is not None)
        return result

    monkeypatch.setattr(FastJobReads, "_answer", answer)
    return seen


def both_ways(client: TenantClient, job_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job from the fast path, and from the regular route (a query string always takes that one)."""
    fast, regular = client.get(f"/v1/fine_tuning/jobs/{job_id}"), client.get(f"/v1/fine_tuning/jobs/{job_id}?x=1")
    assert fast.status_code == regular.status_code == 200, (fast.text, regular.text)
    assert fast.headers["content-type"] == regular.headers["content-type"] == "application/json"
    return fast.json(), regular.json()


def test_the_same_job_object_in_every_state(service: Service, acme: TenantClient, fast_answers: list[bool]) -> None:
    first, second = acme.create_job()["id"], acme.create_job()["id"]
    acme.get(f"/v1/fine_tuning/jobs/{first}?x=1")  # the key is cached from here on
    fast_answers.clear()

    fast, regular = both_ways(acme, second)
    assert fast == regular and fast["status"] == "queued" and fast["queue_position"] == 2

    now = utcnow()
    with session_scope(service.url) as session:
        session.execute(update(Job).where(Job.id == first).values(
            status="succeeded", started_at=now, finished_at=now, fine_tuned_model="m:ft:x", progress=1.0, step=7,
            total_steps=7, summary={"after": {"eval_accuracy": 0.75}}, metadata_={"team": "nlp"}))
        for kind, age in (("metrics", 1), ("adapter", 3), ("merged_model", 2)):  # inserted out of order
            session.add(Artifact(job_id=first, kind=kind, filename=f"{kind}.bin", bytes=1, sha256="0" * 64,
                                 storage_key=f"jobs/{first}/{kind}", created_at=now - timedelta(seconds=age)))
    fast, regular = both_ways(acme, first)
    assert fast == regular
    assert fast["status"] == "succeeded" and fast["metadata"] == {"team": "nlp"} and fast["queue_position"] is None
    artifacts = acme.get(f"/v1/fine_tuning/jobs/{first}/artifacts").json()["data"]
    assert [a["kind"] for a in artifacts] == ["adapter", "merged_model", "metrics"]  # creation order
    assert fast["result_files"] == regular["result_files"] == [a["id"] for a in artifacts]

    fast, regular = both_ways(acme, second)  # now first in the queue
    assert fast == regular and fast["queue_position"] == 1

    with session_scope(service.url) as session:
        session.execute(update(Job).where(Job.id == second).values(
            status="failed", finished_at=now, error={"code": "out_of_memory", "message": "m", "param": "hyperparameters"}))
    fast, regular = both_ways(acme, second)
    assert fast == regular and fast["error"] == {"code": "out_of_memory", "message": "m", "param": "hyperparameters"}
    assert fast_answers.count(True) == 4


def test_what_the_fast_path_does_not_own(service: Service, acme: TenantClient, fast_answers: list[bool]) -> None:
    job_id = acme.create_job()["id"]
    other = service.as_tenant("globex")
    assert service.anonymous().get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 401
    assert other.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 404  # first use of its key: looked up
    response = other.get(f"/v1/fine_tuning/jobs/{job_id}")  # cached now; still not its job
    assert response.status_code == 404 and response.json()["error"]["param"] == "job_id"
    assert acme.get("/v1/fine_tuning/jobs/ftjob-missing").status_code == 404
    assert acme.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
    assert acme.post(f"/v1/fine_tuning/jobs/{job_id}").status_code == 405
    assert fast_answers == [False, False, False, False, True]


@pytest.fixture()
def limited(tmp_path: Path, db: str) -> Iterator[Service]:
    yield from start_service(tmp_path, db, rate_limit_per_minute=60, rate_limit_burst=3)


def test_a_key_over_its_rate_limit_gets_the_regular_429(limited: Service, fast_answers: list[bool]) -> None:
    client = limited.as_tenant("acme")
    job_id = client.create_job()["id"]  # 2 requests: upload and create
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}")
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert fast_answers == [True, False]


def test_fast_reads_are_counted_under_the_route(service: Service, acme: TenantClient,
                                                fast_answers: list[bool]) -> None:
    job_id = acme.create_job()["id"]
    for _ in range(3):
        assert acme.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
    assert acme.get(f"/v1/fine_tuning/jobs/{job_id}?x=1").status_code == 200  # the regular route: same label
    assert fast_answers == [True] * 3
    text = service.client.get("/metrics").text
    line = next(ln for ln in text.splitlines()
                if ln.startswith("sparsegrad_http_requests_total{") and f'route="{ROUTE}"' in ln and 'method="GET"' in ln
                and 'status="200"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == 4.0
