"""PostgreSQL restarts in the middle of a training job (``pg_ctlcluster ... restart``, the normal command on
Debian): the API answers 503 while it is away and recovers by itself, the worker rides it out, the job succeeds
with every metric step exactly once, and nothing is left stuck. The test creates a cluster of its own on a free
port (``pg_createcluster``, trust auth) and drops it afterwards, so the machine's server and the tests running
beside this one are not disturbed."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.endpoints import free_port, wait_for

from .conftest import Deployment, running_deployment, tiny_job
from .test_end_to_end import job_status, upload


class PrivateCluster:
    """A PostgreSQL cluster of the machine's PostgreSQL version, on a free port, managed with Debian's
    ``pg_createcluster`` / ``pg_ctlcluster`` / ``pg_dropcluster``."""

    def __init__(self, version: str) -> None:
        self.version, self.name, self.port = version, f"sgtest_{secrets.token_hex(4)}", free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, action: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action], check=True,
                       timeout=120)

    def create(self) -> None:
        subprocess.run(["pg_createcluster", "--port", str(self.port), self.version, self.name, "--",
                        "--auth=trust"], check=True, capture_output=True, timeout=120)
        self.ctl("start")

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, timeout=120)


def _version() -> str | None:
    """The version of the machine's PostgreSQL cluster on port 5432 (None without Debian's cluster tools)."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_createcluster") is None:
        return None
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, timeout=30).stdout.split()
    return out[0] if len(out) >= 3 and out[2] == "5432" else None


@pytest.fixture()
def cluster_deployment(tmp_path: Path, redis_url: str, tiny_model_dir: Path) -> Iterator[tuple[Deployment, PrivateCluster]]:
    version = _version()
    if version is None:
        pytest.skip("needs Debian's PostgreSQL cluster tools (pg_createcluster, pg_ctlcluster)")
    cluster = PrivateCluster(version)
    cluster.create()
    try:
        with running_deployment(tmp_path, cluster.url, redis_url, tiny_model_dir) as dep:
            yield dep, cluster
    finally:
        cluster.drop()


def test_a_postgres_restart_mid_job_loses_nothing(cluster_deployment: tuple[Deployment, PrivateCluster],
                                                  sst2_jsonl: Path) -> None:
    deployment, cluster = cluster_deployment
    deployment.start_worker()
    key = deployment.create_key("acme")
    with deployment.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=300)).json()
        wait_for(lambda: job_status(c, job["id"])["step"] >= 10, 120, "training to pass step 10", deployment)

        cluster.ctl("restart")

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
