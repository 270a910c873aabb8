"""With Redis configured, every write of a running job wakes live listeners on the job's channel."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis
from worker_helpers import create_job, job_spec

from sparsegrad_service.live import CHANNEL_PREFIX
from sparsegrad_service.settings import Settings
from worker.runner import JobRunner, Outcome


def test_job_writes_are_published(
    sqlite_db: str, redis_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(sqlite_db, redis_url=redis_url)
    job_id = create_job(settings, sst2_bytes, job_spec(hyperparameters={"max_steps": 4, "checkpoint_every": 2}))
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL_PREFIX + job_id)
    pubsub.get_message(timeout=1.0)
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    payloads = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        payloads.append(json.loads(message["data"]))
    pubsub.close()
    client.close()
    assert len(payloads) >= 5
    assert payloads[-1] == {"status": "succeeded"}
