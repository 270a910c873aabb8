"""The job object leaves the method insight out of ``summary`` (the database removes it, on SQLite and
PostgreSQL) and ``GET /v1/fine_tuning/jobs/{id}/insight`` answers it, for the job's tenant only."""

from __future__ import annotations

import pytest
from api_harness import Service, TenantClient

from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Job
from sparsegrad_service.schemas.insight import INSIGHT_KEYS

JOBS = "/v1/fine_tuning/jobs"


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_summary_leaves_the_insight_to_its_route(service: Service, acme: TenantClient) -> None:
    job, fresh = acme.create_job(), acme.create_job()
    spectra = {kind: {"out": [float(2 ** -i) for i in range(600)], "in": [float(3 ** -i) for i in range(300)]}
               for kind in ("intermediate.dense", "output.dense")}
    insight = {"spectra": spectra, "block": {"rule": "given block_sizes",
                                             "kinds": {"output.dense": {"r_out": 8, "r_in": 16, "kept_share": None}}},
               "probe": {"texts": ["a"], "text_pairs": None, "max_seq_length": 32, "logits": [[0.5, -0.5]]}}
    results = {"steps": 20, "after": {"eval_accuracy": 0.75}, "trainable_params": 1234}
    with session_scope(service.url) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.summary = {**results, **insight}

    shown = acme.get(f"{JOBS}/{job['id']}")
    assert shown.json()["summary"] == results and len(shown.content) < 4096
    assert [j["summary"] for j in acme.get(JOBS).json()["data"]] == [None, results]
    assert set(INSIGHT_KEYS) == set(insight)
    body = acme.get(f"{JOBS}/{job['id']}/insight").json()
    assert body == {"object": "fine_tuning.job.insight", "fine_tuning_job_id": job["id"], "method": "sparsegrad",
                    **insight}

    # a job without results yet: null everywhere
    assert acme.get(f"{JOBS}/{fresh['id']}").json()["summary"] is None
    empty = acme.get(f"{JOBS}/{fresh['id']}/insight").json()
    assert (empty["spectra"], empty["block"], empty["probe"]) == (None, None, None)
    # another tenant's job, or none: 404 like every job route
    assert service.as_tenant("beta").get(f"{JOBS}/{job['id']}/insight").status_code == 404
    missing = acme.get(f"{JOBS}/ftjob-missing/insight")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "job_id"
