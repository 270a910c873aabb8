"""A real deployment (PostgreSQL, Redis, uvicorn, Celery worker processes) runs tiny jobs end to end through
the REST API: upload → create → live events (SSE) → succeeded → download → the adapter reproduces the
worker's model; cancel, pause and resume; a worker SIGKILLed mid-training loses nothing."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.endpoints import wait_for
from support.sse import read_events

from .conftest import Deployment, tiny_job


def upload(c: httpx.Client, path: Path, name: str | None = None) -> str:
    with open(path, "rb") as f:
        r = c.post("/v1/files", files={"file": (name or path.name, f)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def job_status(c: httpx.Client, job_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/fine_tuning/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def report_steps_between_checkpoints(deployment: Deployment) -> None:
    """Make workers started from now on flush the job's step every 50 ms. A checkpoint flushes it too, so with the
    deployment's 0.3 s period and a tiny model's checkpoint every ~0.1 s the reported step is always the newest
    checkpoint's, and a test waiting to see the job past its checkpoint (to kill it there) never would."""
    deployment.env["SPARSEGRAD_METRICS_FLUSH_S"] = "0.05"


def checkpoints(c: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's checkpoints, newest first."""
    r = c.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


@pytest.fixture(scope="module")
def dev_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sparsegrad_data import glue_mapping, load_dataset, sample_path

    task, mapping = glue_mapping("sst2")
    train = load_dataset(sample_path("sst2_train"), task, mapping)
    dev = load_dataset(sample_path("sst2_dev"), task, mapping, label_names=train.label_names)
    path = tmp_path_factory.mktemp("dev") / "dev.jsonl"
    path.write_text("".join(json.dumps({"text": e.text, "label": int(e.label)}) + "\n"  # type: ignore[arg-type]
                            for e in dev.examples[:48]))
    return path


def test_job_runs_end_to_end_and_the_adapter_reproduces_the_workers_model(
    deployment: Deployment, sst2_jsonl: Path, dev_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from support.sparse_update import merged_with_moved_mlps

    from sparsegrad_core.loading import load_base_model
    from sparsegrad_core.precision import bf16_autocast
    from sparsegrad_core.tokenization import tokenize_dataset
    from sparsegrad_core.training import read_training_info
    from sparsegrad_core.training.evaluation import evaluate
    from sparsegrad_data import load_dataset

    deployment.start_worker()
    key = deployment.create_key("acme")
    with deployment.client(key) as c:
        train_id, dev_id = upload(c, sst2_jsonl), upload(c, dev_jsonl)
        spec = tiny_job(train_id, max_steps=25)
        spec["validation_file"] = dev_id
        r = c.post("/v1/fine_tuning/jobs", json=spec)
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["status"] == "queued" and job["object"] == "fine_tuning.job"

        messages = read_events(c, f"/v1/fine_tuning/jobs/{job['id']}/events/stream", timeout=240)
        assert messages[-1].event == "end", messages[-3:]
        events = [m for m in messages if m.event != "end"]
        types = {m.event for m in events}
        assert {"phase", "metrics", "checkpoint", "message"} <= types, types
        phases = [m.json()["data"]["phase"] for m in events if m.event == "phase"]
        assert phases == ["calibrating", "evaluating", "training", "evaluating", "saving"], phases
        ids = [int(m.id) for m in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

        # resuming the stream from the middle gives exactly the later events
        middle = ids[len(ids) // 2]
        resumed = [m for m in read_events(c, f"/v1/fine_tuning/jobs/{job['id']}/events/stream",
                                          last_event_id=str(middle)) if m.event != "end"]
        assert [int(m.id) for m in resumed] == [i for i in ids if i > middle]

        done = job_status(c, job["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"] == pytest.approx(1.0) and done["attempts"] == 1
        assert done["fine_tuned_model"] and done["finished_at"] >= done["started_at"]

        loss = c.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics", params={"name": "loss"}).json()["data"]
        assert [p["step"] for p in loss] == list(range(1, 26))

        artifacts = {a["kind"]: a for a in c.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]}
        assert {"adapter", "metrics"} <= set(artifacts)
        r = c.get(f"/v1/artifacts/{artifacts['adapter']['id']}/content")
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == artifacts["adapter"]["sha256"]
        assert len(r.content) == artifacts["adapter"]["bytes"]
        adapter_dir = tmp_path / "adapter"
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            tar.extractall(adapter_dir, filter="data")

    # the downloaded adapter, loaded here, evaluates exactly like the worker's trained model did
    train = load_dataset(sst2_jsonl)
    dev = load_dataset(dev_jsonl, train.task, label_names=train.label_names)
    base, tokenizer = load_base_model(str(tiny_model_dir), "classification", num_labels=2,
                                      label_names=train.label_names)
    model = merged_with_moved_mlps(base, adapter_dir).eval()  # its sparse delta moved the MLP weights
    # in the precision the worker evaluated in (bf16 autocast on CPUs that multiply bf16 in hardware), which the adapter records
    bf16 = read_training_info(adapter_dir)["bf16"]
    assert bf16 is (done["summary"]["precision"] == "bf16 autocast")
    with torch.no_grad(), bf16_autocast("cpu", bf16):
        local = evaluate(model, tokenize_dataset(dev, tokenizer, 32), batch_size=16)
    after = done["summary"]["after"]
    assert local["eval_accuracy"] == pytest.approx(after["eval_accuracy"], abs=1e-9)
    assert local["eval_loss"] == pytest.approx(after["eval_loss"], rel=1e-5)


def test_cancel_pause_and_resume_with_a_real_worker(deployment: Deployment, sst2_jsonl: Path) -> None:
    deployment.start_worker()
    key = deployment.create_key("acme")
    with deployment.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=4000)).json()
        wait_for(lambda: job_status(c, job["id"])["step"] >= 12, 120, "training to pass step 12", deployment)

        assert c.post(f"/v1/fine_tuning/jobs/{job['id']}/pause").status_code == 200
        paused = wait_for(lambda: (s := job_status(c, job["id"]))["status"] == "paused" and s, 60, "paused",
                          deployment)
        stored = checkpoints(c, job["id"])
        assert stored and stored[0]["step_number"] == paused["step"]

        assert c.post(f"/v1/fine_tuning/jobs/{job['id']}/resume").status_code == 200
        wait_for(lambda: job_status(c, job["id"])["step"] > paused["step"] + 3, 120, "training to continue",
                 deployment)
        messages = [e["message"] for e in c.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                                                 params={"limit": 100}).json()["data"]]
        assert any(f"step {paused['step']}" in m for m in messages if "esum" in m), messages

        assert c.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").status_code == 200
        wait_for(lambda: job_status(c, job["id"])["status"] == "cancelled", 60, "cancelled", deployment)
        # the worker is free again: a short job after the cancelled one succeeds
        short = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=5)).json()
        wait_for(lambda: job_status(c, short["id"])["status"] == "succeeded", 120, "next job", deployment)


def test_a_worker_killed_mid_training_resumes_from_its_checkpoint(deployment: Deployment, sst2_jsonl: Path) -> None:
    report_steps_between_checkpoints(deployment)
    worker = deployment.start_worker("first")
    key = deployment.create_key("acme")
    total = 160
    with deployment.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=total)).json()

        def past_a_checkpoint() -> dict[str, Any] | None:
            s = job_status(c, job["id"])
            ckpts = checkpoints(c, job["id"])
            return s if ckpts and s["step"] >= ckpts[0]["step_number"] + 3 else None

        before = wait_for(past_a_checkpoint, 120, "a checkpoint and a few more steps", deployment, every=0.05)
        assert before["status"] == "running" and before["step"] < total
        deployment.kill(worker)  # SIGKILL, whole process group
        deployment.start_worker("second")
        done = wait_for(lambda: (s := job_status(c, job["id"]))["status"] in ("succeeded", "failed") and s,
                        180, "the job to finish on the second worker", deployment)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        loss = c.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics",
                     params={"name": "loss", "limit": 1000}).json()["data"]
        assert [p["step"] for p in loss] == list(range(1, total + 1))  # no gap, no duplicate
        messages = [e["message"] for e in c.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                                                 params={"limit": 200, "order": "asc"}).json()["data"]]
        assert any("stopped responding" in m for m in messages), messages
        assert any("esum" in m and "checkpoint" in m for m in messages), messages


def test_three_worker_kills_in_one_job(deployment: Deployment, sst2_jsonl: Path) -> None:
    """SIGKILL the worker three times in one job: a fresh worker resumes each time from the last checkpoint,
    so at most one checkpoint interval of steps is redone per kill; the job succeeds with every loss step
    exactly once, and its attempts and events tell the story."""
    deployment.env["SPARSEGRAD_MAX_ATTEMPTS"] = "5"  # a job records its attempt budget when it is created
    report_steps_between_checkpoints(deployment)
    assert deployment.api is not None
    deployment.kill(deployment.api, signal.SIGTERM)
    deployment.start_api()
    every = int(deployment.env["SPARSEGRAD_CHECKPOINT_EVERY"])
    worker = deployment.start_worker("w1")
    key = deployment.create_key("acme")
    total = 200
    with deployment.client(key) as c:
        file_id = upload(c, sst2_jsonl)
        job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=total)).json()
        resumed_from: list[int] = []
        for kill in range(1, 4):
            floor = resumed_from[-1] if resumed_from else 0

            def past_a_new_checkpoint(floor: int = floor) -> dict[str, Any] | None:
                s = job_status(c, job["id"])
                ckpts = checkpoints(c, job["id"])
                newest = ckpts[0]["step_number"] if ckpts else 0
                return s if s["status"] == "running" and newest > floor and s["step"] >= newest + 2 else None

            before = wait_for(past_a_new_checkpoint, 180, f"a new checkpoint before kill {kill}", deployment,
                              every=0.05)
            deployment.kill(worker)
            # The worker kept training between the poll and the kill and may have stored one more
            # checkpoint: the list read once it is dead is the one the next attempt resumes from.
            ckpts = checkpoints(c, job["id"])
            newest = ckpts[0]["step_number"]
            assert before["step"] - newest < every + 5  # what this kill can cost: less than one interval
            resumed_from.append(newest)
            worker = deployment.start_worker(f"w{kill + 1}")
        done = wait_for(lambda: (s := job_status(c, job["id"]))["status"] in ("succeeded", "failed") and s,
                        300, "the job to finish after three kills", deployment)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 4
        loss = c.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics",
                     params={"name": "loss", "limit": 1000}).json()["data"]
        assert [p["step"] for p in loss] == list(range(1, total + 1))  # no gap, no duplicate
        messages = [e["message"] for e in c.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                                                 params={"limit": 1000, "order": "asc"}).json()["data"]]
        assert sum("stopped responding" in m for m in messages) == 3, messages
        for step in resumed_from:
            assert any("esum" in m and f"step {step}" in m for m in messages), (step, messages)
