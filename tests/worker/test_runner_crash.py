"""A worker SIGKILLed mid-training: the reaper requeues the job, the next attempt resumes from the last
stored checkpoint and succeeds with one contiguous metric series."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from worker_helpers import checkpoints, create_job, events, job_row, job_spec, metric_series

from sparsegrad_service.db import get_engine
from sparsegrad_service.models import utcnow
from sparsegrad_service.reaper import reap_stale_jobs
from sparsegrad_service.settings import Settings
from worker.runner import JobRunner, Outcome

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import json, sys, time
from sparsegrad_core.training import trainer
from sparsegrad_service.settings import Settings
from worker.runner import JobRunner

step = trainer.Trainer._train_step
def slow(self, micro_batches):
    time.sleep(0.1)
    return step(self, micro_batches)
trainer.Trainer._train_step = slow
JobRunner(Settings(**json.loads(sys.argv[1])), sys.argv[2]).run()
"""


def test_killed_worker_resumes_from_its_checkpoint(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    settings = make_settings(pg_db, heartbeat_timeout_s=30)
    job_id = create_job(settings, sst2_bytes, job_spec(hyperparameters={"max_steps": 20, "checkpoint_every": 5}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, settings.model_dump_json(), job_id], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not checkpoints(settings, job_id):
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    job = job_row(settings, job_id)
    assert job.status == "running" and job.attempts == 1 and job.last_checkpoint_step == 5
    assert reap_stale_jobs(get_engine(settings.sql_url), settings, lambda _: None) == []  # heartbeat still fresh
    requeued: list[str] = []
    later = utcnow() + timedelta(seconds=settings.heartbeat_timeout_s + 1)
    assert reap_stale_jobs(get_engine(settings.sql_url), settings, requeued.append, now=later) == [(job_id, "requeued")]
    assert requeued == [job_id]
    job = job_row(settings, job_id)
    assert job.status == "queued" and job.attempts == 1

    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.attempts == 2 and job.step == 20
    messages = [e.message for e in events(settings, job_id)]
    assert any(m.startswith("Attempt 2 of 3 started on worker") for m in messages)
    assert "Resuming from checkpoint at step 5." in messages
    for name in ("loss", "lr", "tokens_per_s"):
        assert [s for s, _ in metric_series(settings, job_id, name)] == list(range(1, 21)), name
    resumed = [e.data["step"] for e in events(settings, job_id) if e.type == "checkpoint"]
    assert resumed[-3:] == [10, 15, 20]  # the second attempt checkpointed from step 5 on
    kept = checkpoints(settings, job_id)  # once succeeded, the newest two as models, without resume archives
    assert [(c.step, c.storage_key) for c in kept] == [(15, None), (20, None)]
    assert not (settings.work_dir / job_id).exists()  # the killed attempt's folder is cleaned up too


def test_settings_survive_a_json_round_trip(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings("sqlite:///x.db", heartbeat_timeout_s=30)
    again = Settings(**json.loads(settings.model_dump_json()))
    assert again.sql_url == settings.sql_url and again.models == settings.models
