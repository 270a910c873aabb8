"""Webhooks on the embedded default: ``sparsegrad up`` (SQLite, filesystem broker, its webhook worker) delivers a
job's ``fine_tuning.job.succeeded`` event, written by the training worker's finish, to a real local receiver
through Celery: the first attempt gets a 500, the retry after the backoff a 200, both signed."""

from __future__ import annotations

import json
from pathlib import Path

from support.endpoints import wait_for
from support.webhook_receiver import expected_signature, webhook_receiver

from .conftest import embedded_up, tiny_job

LOCAL_TARGETS = {"SPARSEGRAD_WEBHOOKS_ALLOW_PRIVATE": "true", "SPARSEGRAD_WEBHOOKS_ALLOW_HTTP": "true",
                 "SPARSEGRAD_WEBHOOK_BACKOFF_S": "1", "SPARSEGRAD_WEBHOOK_POLL_S": "0.2"}


def test_sparsegrad_up_delivers_a_succeeded_job_and_retries_after_a_500(
    tmp_path: Path, tiny_model_dir: Path, sst2_jsonl: Path
) -> None:
    with webhook_receiver([500]) as receiver, embedded_up(tmp_path, tiny_model_dir, LOCAL_TARGETS) as up, \
            up.client() as c:
        hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.succeeded"]}).json()
        with open(sst2_jsonl, "rb") as f:
            file_id = c.post("/v1/files", files={"file": ("t.jsonl", f)}, data={"purpose": "fine-tune"}).json()["id"]
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=4)).json()
        logs = tmp_path / "up.log"
        wait_for(lambda: len(receiver.requests) >= 2, 180, "two delivery attempts", logs)
        [delivery] = wait_for(lambda: [d for d in c.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
                                       if d["status"] == "succeeded"], 30, "the delivery recorded", logs)
        assert c.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "succeeded"

    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200] and len(receiver.requests) == 2
    for request in receiver.requests:
        assert request.headers["webhook-signature"] == expected_signature(hook["secret"], request)
        event = json.loads(request.body)
        assert event["type"] == "fine_tuning.job.succeeded" and event["data"] == {"id": job["id"]}
        assert event["id"] == request.headers["webhook-id"] == delivery["event_id"]
