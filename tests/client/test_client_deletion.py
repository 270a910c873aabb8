"""Deleting through the typed client and the CLI against the real API (no worker): a finished job
(``delete_job``, ``sparsegrad jobs delete``), a fine-tuned model (``delete_model``), and the storage figure
(``get_storage``) that shrinks with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from sparsegrad_cli.app import app
from sparsegrad_client import ApiError, SparseGradClient
from sparsegrad_service.schemas import JobDeleted, ModelDeleted, StorageUsage

from .conftest import LiveService

runner = CliRunner()


@pytest.fixture()
def client(live_service: LiveService) -> SparseGradClient:
    return SparseGradClient(live_service.url, live_service.api_key)


@pytest.fixture()
def train_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"sentence {i}", "label": i % 2}) + "\n" for i in range(40)))
    return path


def set_job(live: LiveService, job_id: str, **values: object) -> None:
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.models import Job

    with session_scope(live.settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def test_delete_job_refuses_an_unfinished_job_then_deletes_it(client: SparseGradClient, train_jsonl: Path) -> None:
    file = client.upload_file(train_jsonl)
    job = client.create_job("minilm-l6", file.id)
    with pytest.raises(ApiError) as refused:
        client.delete_job(job.id)
    assert refused.value.status == 409 and refused.value.code == "invalid_state" and "'queued'" in str(refused.value)
    client.cancel_job(job.id)
    deleted = client.delete_job(job.id)
    assert isinstance(deleted, JobDeleted) and deleted.model_dump() == {"id": job.id, "object": "fine_tuning.job",
                                                                        "deleted": True}
    with pytest.raises(ApiError) as gone:
        client.get_job(job.id)
    assert gone.value.status == 404


def test_cli_jobs_delete(live_service: LiveService, client: SparseGradClient, train_jsonl: Path) -> None:
    job = client.create_job("minilm-l6", client.upload_file(train_jsonl).id)
    env = {"SPARSEGRAD_URL": live_service.url, "SPARSEGRAD_API_KEY": live_service.api_key, "COLUMNS": "200"}
    refused = runner.invoke(app, ["jobs", "delete", job.id], env=env)
    assert refused.exit_code == 2 and "'queued'" in refused.stderr and "cancel it first" in refused.stderr
    client.cancel_job(job.id)
    done = runner.invoke(app, ["jobs", "delete", job.id], env=env)
    assert done.exit_code == 0 and f"deleted job {job.id}" in done.stdout
    assert job.id not in [j.id for j in client.list_jobs().data]


def test_delete_model_and_the_storage_figure(live_service: LiveService, client: SparseGradClient,
                                             train_jsonl: Path) -> None:
    with pytest.raises(ApiError) as base:
        client.delete_model("minilm-l6")
    assert base.value.status == 403 and base.value.code == "model_not_deletable"

    before = client.get_storage()
    assert isinstance(before, StorageUsage)
    file = client.upload_file(train_jsonl)
    grown = client.get_storage()
    assert grown.files.count == before.files.count + 1
    assert grown.total_bytes == before.total_bytes + train_jsonl.stat().st_size

    job = client.create_job("minilm-l6", file.id)
    name = f"minilm-l6:ft:client:{job.id}"
    set_job(live_service, job.id, status="succeeded", fine_tuned_model=name)
    deleted = client.delete_model(name)
    assert isinstance(deleted, ModelDeleted) and (deleted.id, deleted.deleted) == (name, True)
    with pytest.raises(ApiError) as again:
        client.delete_model(name)
    assert again.value.status == 404

    client.delete_job(job.id)
    client.delete_file(file.id)
    assert client.get_storage() == before
