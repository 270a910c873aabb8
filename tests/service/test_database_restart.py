"""PostgreSQL restarts in the middle of a training job (``pg_ctlcluster ... restart``, the normal command on
this machine): the API answers 503 while it is away and recovers by itself, the worker rides it out, the
job succeeds with every metric step exactly once, and nothing is left stuck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from support.endpoints import wait_for

from .conftest import Deployment, tiny_job
from .test_end_to_end import job_status, upload


def _cluster() -> tuple[str, str] | None:
    if shutil.which("pg_lsclusters") is None:
        return None
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, timeout=30).stdout.split()
    return (out[0], out[1]) if len(out) >= 2 and out[2] == "5432" else None


def test_a_postgres_restart_mid_job_loses_nothing(deployment: Deployment, sst2_jsonl: Path) -> None:
    cluster = _cluster()
    if cluster is None:
        pytest.skip("needs the local PostgreSQL cluster on port 5432 managed by pg_ctlcluster")
    deployment.start_worker()
    key = deployment.create_key("acme")
    with deployment.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=300)).json()
        wait_for(lambda: job_status(c, job["id"])["step"] >= 10, 120, "training to pass step 10", deployment)

        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"], check=True, timeout=120)

        def answers() -> bool:
            try:
                r = c.get(f"/v1/fine_tuning/jobs/{job['id']}")
            except httpx.HTTPError:
                return False
            assert r.status_code in (200, 503), r.text  # never a 500 while the database is away
            return r.status_code == 200

        wait_for(answers, 60, "the API to answer again", deployment)
        done = wait_for(lambda: (s := job_status(c, job["id"]))["status"] in ("succeeded", "failed") and s,
                        240, "the job to finish", deployment)
        if done["status"] != "succeeded":
            print(deployment.log_tail(200))  # shown with the failure
        assert done["status"] == "succeeded", done["error"]
        loss = c.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics", params={"name": "loss", "limit": 1000}).json()
        assert [p["step"] for p in loss["data"]] == list(range(1, 301))
        nxt = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=5)).json()
        wait_for(lambda: job_status(c, nxt["id"])["status"] == "succeeded", 120, "the next job", deployment)
