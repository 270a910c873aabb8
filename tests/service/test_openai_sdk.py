"""The official ``openai`` SDK works unchanged against the service: files, jobs (our fields through
``extra_body``), retrieve, list with paging, cancel, pause/resume, list_events and checkpoints.list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import NotFoundError, OpenAI
from support.endpoints import wait_for

from .conftest import Deployment

CHAT = [
    {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                  {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
    for i in range(30)
]


@pytest.fixture()
def chat_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    return path


def test_openai_sdk_drives_the_service(deployment: Deployment, sst2_jsonl: Path, chat_jsonl: Path) -> None:
    key = deployment.create_key("sdk-tenant")
    client = OpenAI(base_url=f"{deployment.url}/v1", api_key=key, max_retries=0)

    # a plain SDK call with a chat file on a decoder model: task inferred as causal-LM SFT (no worker yet,
    # so it stays queued; then it is cancelled)
    chat_file = client.files.create(file=chat_jsonl.open("rb"), purpose="fine-tune")
    assert chat_file.id.startswith("file-") and chat_file.purpose == "fine-tune" and chat_file.bytes > 0
    chat_job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=chat_file.id)
    assert chat_job.status == "queued"
    assert chat_job.model_extra is not None and chat_job.model_extra["task"]["type"] == "causal_lm"
    assert chat_job.method is not None and chat_job.method.type == "sparsegrad"
    cancelled = client.fine_tuning.jobs.cancel(chat_job.id)
    assert cancelled.status == "cancelled"

    # SDK-style "supervised" method with hyperparameters means the SparseGrad default
    train_file = client.files.create(file=sst2_jsonl.open("rb"), purpose="fine-tune")
    queued = client.fine_tuning.jobs.create(
        model="tiny-bert", training_file=train_file.id, suffix="sdk", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8, "n_epochs": 1}}},
        metadata={"team": "nlp"},
    )
    assert queued.seed == 7 and queued.metadata == {"team": "nlp"}
    assert queued.hyperparameters.batch_size == 8 and queued.hyperparameters.n_epochs == 1
    paused = client.fine_tuning.jobs.pause(queued.id)
    assert paused.status == "paused"
    assert client.fine_tuning.jobs.resume(queued.id).status == "queued"
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"

    # our own fields through extra_body; a worker runs this one
    deployment.start_worker()
    job = client.fine_tuning.jobs.create(
        model="tiny-bert", training_file=train_file.id,
        extra_body={
            "task": {"type": "classification", "text_column": "text", "label_column": "label"},
            "method": {"type": "sparsegrad", "sparsegrad": {"density": 0.05, "calibration_steps": 2}},
            "hyperparameters": {"batch_size": 8, "max_seq_length": 32, "max_steps": 25, "learning_rate": 1e-3},
        },
    )
    assert job.method is not None and job.method.type == "sparsegrad"
    done = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in
                    ("succeeded", "failed", "cancelled") and j, 240, "the SDK job", deployment)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and done.result_files and done.trained_tokens

    events = client.fine_tuning.jobs.list_events(job.id, limit=5)
    assert len(events.data) == 5 and events.has_more
    assert all(e.object == "fine_tuning.job.event" for e in events.data)
    assert events.data[0].created_at >= events.data[-1].created_at  # newest first, like OpenAI
    all_events = list(client.fine_tuning.jobs.list_events(job.id, limit=7))  # auto-paging over `after`
    assert len({e.id for e in all_events}) == len(all_events) > 7
    assert any(e.type == "metrics" for e in all_events)

    # checkpoints were written (events say so), and the finished job keeps its final step and newest checkpoint
    # as models (SPARSEGRAD_KEEP_FINISHED_CHECKPOINTS defaults to 2), named as OpenAI names them
    assert any(e.type == "checkpoint" for e in all_events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.fine_tuned_model_checkpoint for c in checkpoints] == [
        f"{done.fine_tuned_model}:ckpt-step-25", f"{done.fine_tuned_model}:ckpt-step-{checkpoints[1].step_number}"]
    assert 0 < checkpoints[1].step_number < 25 and checkpoints[0].fine_tuning_job_id == job.id

    page = client.fine_tuning.jobs.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    ids = [j.id for j in client.fine_tuning.jobs.list(limit=1)]  # auto-paging
    assert ids == [job.id, queued.id, chat_job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(extra_query={"status": "cancelled"})] == [
        queued.id, chat_job.id]

    # another tenant sees none of it
    other = OpenAI(base_url=f"{deployment.url}/v1", api_key=deployment.create_key("other"), max_retries=0)
    with pytest.raises(NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    assert list(other.fine_tuning.jobs.list()) == []
