"""Redis (broker and live events) restarts in the middle of a training job: the job still succeeds, a job
submitted while Redis is down runs once it is back, and nothing is left stuck. The test runs its own
redis-server on a free port and stops and starts it with the normal commands (redis-cli shutdown,
redis-server), so the machine's Redis is not disturbed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.endpoints import free_port, wait_for

from .conftest import Deployment, running_deployment, tiny_job
from .test_end_to_end import job_status, upload


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port),
                        "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                        "--logfile", str(self.folder / "redis.log")], check=True, timeout=30)
        wait_for(self.ping, 30, "redis to answer")

    def ping(self) -> bool:
        return subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True,
                              timeout=10).stdout.strip() == "PONG"

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=30)
        wait_for(lambda: not self.ping(), 30, "redis to stop")


@pytest.fixture()
def redis_deployment(tmp_path: Path, pg_url: str, tiny_model_dir: Path) -> Iterator[tuple[Deployment, PrivateRedis]]:
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    try:
        with running_deployment(tmp_path, pg_url, redis.url, tiny_model_dir) as dep:
            yield dep, redis
    finally:
        if redis.ping():
            redis.stop()


def test_a_redis_restart_mid_job_loses_nothing(redis_deployment: tuple[Deployment, PrivateRedis],
                                               sst2_jsonl: Path) -> None:
    dep, redis = redis_deployment
    dep.start_worker()
    key = dep.create_key("acme")
    with dep.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        first = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=300)).json()
        wait_for(lambda: job_status(c, first["id"])["step"] >= 10, 120, "training to pass step 10", dep)

        redis.stop()
        during = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=5))
        assert during.status_code == 200, during.text  # the job is recorded; its message waits for the broker
        assert c.get(f"/v1/fine_tuning/jobs/{first['id']}").status_code == 200  # reads never need Redis
        time.sleep(2)
        redis.start()

        for job_id in (first["id"], during.json()["id"]):
            done = wait_for(lambda j=job_id: (s := job_status(c, j))["status"] in ("succeeded", "failed") and s,
                            240, f"job {job_id} to finish", dep)
            assert done["status"] == "succeeded", done
        loss = c.get(f"/v1/fine_tuning/jobs/{first['id']}/metrics",
                     params={"name": "loss", "limit": 1000}).json()["data"]
        assert [p["step"] for p in loss] == list(range(1, 301))
        stuck = c.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
        assert all(j["status"] == "succeeded" for j in stuck), [(j["id"], j["status"]) for j in stuck]
