"""Checkpoints that are models, through the API: the ``openai`` SDK lists a succeeded job's checkpoints with their
``fine_tuned_model_checkpoint`` names, a checkpoint's model downloads (another tenant: 404), and a new job may
name a fine-tuned model or a checkpoint as its ``model`` (continued training) with its lineage shown; names that
are another tenant's, unknown, unfinished or deleted are refused naming ``model``. The worker side is
tests/worker/test_continued_training.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import Service, TenantClient, serving
from openai import NotFoundError, OpenAI
from sqlalchemy import update

from sparsegrad_service.db import session_scope
from sparsegrad_service.model_names import checkpoint_model_name, fine_tuned_model_name
from sparsegrad_service.models import Artifact, Checkpoint, Job, utcnow
from sparsegrad_service.store import LocalArtifactStore, artifact_key, checkpoint_key

JOBS = "/v1/fine_tuning/jobs"


def succeed(service: Service, job_id: str, steps: tuple[int, ...] = (10, 20)) -> str:
    """Job ``job_id`` as a worker leaves a succeeded one: its adapter artifact and its checkpoints ``steps``
    kept as models (the resume archive of a running job's checkpoint at step 5 is not one). Returns its model."""
    store = LocalArtifactStore(service.settings.artifact_root)
    with session_scope(service.url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        name = fine_tuned_model_name(job.model if not job.spec.get("lineage") else job.spec["lineage"][0]["model"],
                                     job.tenant_id, None, job_id)
        adapter = store.put_bytes(artifact_key(job_id, "adapter.tar.gz"), b"adapter of " + job_id.encode())
        session.add(Artifact(job_id=job_id, kind="adapter", filename="adapter.tar.gz", bytes=adapter.bytes,
                             sha256=adapter.sha256, storage_key=adapter.key))
        for step in steps:
            model = store.put_bytes(f"jobs/{job_id}/checkpoints/step-{step:08d}-model.tar.gz", bytes([step]) * step)
            session.add(Checkpoint(job_id=job_id, step=step, metrics={"train_loss": 1 / step}, model_kind="adapter",
                                   model_key=model.key, model_bytes=model.bytes, model_sha256=model.sha256))
        resume = store.put_bytes(checkpoint_key(job_id, 5), b"resume")
        session.add(Checkpoint(job_id=job_id, step=5, storage_key=resume.key, bytes=resume.bytes, sha256=resume.sha256))
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", finished_at=utcnow(),
                                                                    fine_tuned_model=name))
    return name


def error_of(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == "model", error
    return str(error["message"])


@pytest.fixture()
def base_url(service: Service) -> Iterator[str]:
    with serving(service.app) as url:
        yield url


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_the_sdk_lists_checkpoints_as_models_and_they_download(service: Service, base_url: str) -> None:
    acme, beta = service.as_tenant("acme"), service.as_tenant("beta")
    job = acme.create_job()
    name = succeed(service, job["id"])
    client = OpenAI(base_url=base_url, api_key=service.key("acme"), max_retries=0)
    listed = client.fine_tuning.jobs.checkpoints.list(job["id"]).data
    assert [c.step_number for c in listed] == [20, 10, 5]
    assert [c.fine_tuned_model_checkpoint for c in listed] == [f"{name}:ckpt-step-20", f"{name}:ckpt-step-10", None]
    assert listed[0].metrics.train_loss == pytest.approx(1 / 20)
    assert (listed[0].model_extra or {})["format"] == "adapter" and not (listed[0].model_extra or {})["resumable"]

    content = acme.get(f"{JOBS}/{job['id']}/checkpoints/{listed[0].id}/content")
    assert content.status_code == 200 and content.content == bytes([20]) * 20
    assert content.headers["x-content-sha256"] == hashlib.sha256(content.content).hexdigest()
    assert (listed[0].model_extra or {})["sha256"] == content.headers["x-content-sha256"]
    assert "ckpt-step-20.tar.gz" in content.headers["content-disposition"]
    # a resume point is no model; another tenant's checkpoint is answered like a missing one
    assert acme.get(f"{JOBS}/{job['id']}/checkpoints/{listed[2].id}/content").status_code == 404
    stranger = beta.get(f"{JOBS}/{job['id']}/checkpoints/{listed[0].id}/content")
    assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "not_found"
    with pytest.raises(NotFoundError):
        OpenAI(base_url=base_url, api_key=service.key("beta"), max_retries=0).fine_tuning.jobs.checkpoints.list(
            job["id"])

    # a kept checkpoint is a model the SDK retrieves; a step kept for resuming only, or another tenant, is a 404
    model = client.models.retrieve(f"{name}:ckpt-step-20")
    assert model.id == f"{name}:ckpt-step-20" and model.owned_by == job["organization_id"]
    assert (model.model_extra or {})["parent"] == name and (model.model_extra or {})["fine_tuning_job_id"] == job["id"]
    for client_, missing in ((client, f"{name}:ckpt-step-5"), (client, f"{name}:ckpt-step-15"),
                             (OpenAI(base_url=base_url, api_key=service.key("beta"), max_retries=0),
                              f"{name}:ckpt-step-20")):
        with pytest.raises(NotFoundError):
            client_.models.retrieve(missing)


def test_continued_training_from_a_model_or_a_checkpoint_shows_its_lineage(service: Service) -> None:
    acme = service.as_tenant("acme")
    parent = acme.create_job()
    name = succeed(service, parent["id"])

    child = acme.create_job(model=name)
    assert child["model"] == name and child["status"] == "queued"
    assert child["lineage"] == [{"model": "minilm-l6", "fine_tuning_job_id": None, "step": None},
                                {"model": name, "fine_tuning_job_id": parent["id"], "step": None}]
    checkpoint = checkpoint_model_name(name, 10)
    from_checkpoint = acme.create_job(model=checkpoint)
    assert from_checkpoint["lineage"][-1] == {"model": checkpoint, "fine_tuning_job_id": parent["id"], "step": 10}
    assert acme.get(f"{JOBS}/{from_checkpoint['id']}").json()["lineage"] == from_checkpoint["lineage"]

    # a grandchild names its whole chain, and its model is named after the root base
    child_name = succeed(service, child["id"])
    assert child_name.startswith("ft:minilm-l6:")
    grandchild = acme.create_job(model=checkpoint_model_name(child_name, 20))
    assert [e["model"] for e in grandchild["lineage"]] == ["minilm-l6", name, checkpoint_model_name(child_name, 20)]
    described = acme.get(f"/v1/models/{child_name}").json()
    assert described["parent"] == name and described["architecture"] == "encoder"

    # a model others were trained from stays while they need it
    r = acme.delete(f"/v1/models/{name}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_in_use" and child["id"] in r.text
    assert acme.delete(f"{JOBS}/{parent['id']}").status_code == 409


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_a_model_that_is_not_the_tenants_usable_model_is_refused(service: Service) -> None:
    acme, beta = service.as_tenant("acme"), service.as_tenant("beta")
    parent = acme.create_job()
    name = succeed(service, parent["id"])
    running = acme.create_job()

    def refused(client: TenantClient, model: str, status: int, code: str) -> str:
        before = len(client.get(JOBS).json()["data"])
        message = error_of(client.post(JOBS, json={"model": model, "training_file": client.upload_id()}),
                           status, code)
        assert len(client.get(JOBS).json()["data"]) == before  # nothing was created
        return message

    missing_job = "ftjob-000000000000000000000000"
    for model in (name, checkpoint_model_name(name, 10)):  # another tenant's reads exactly like a missing one
        missing = refused(beta, model.replace(parent["id"], missing_job), 404, "model_not_found")
        assert refused(beta, model, 404, "model_not_found") == missing.replace(missing_job, parent["id"])
    refused(acme, name + "x", 404, "model_not_found")
    refused(acme, checkpoint_model_name(name, 15), 404, "model_not_found")  # no model kept at that step
    refused(acme, checkpoint_model_name(name, 5), 404, "model_not_found")  # a resume point is no model
    assert "not available" in refused(acme, "no-such-base", 400, "model_not_found")
    unfinished = fine_tuned_model_name("minilm-l6", running["organization_id"], None, running["id"])
    assert "'queued'" in refused(acme, unfinished, 400, "model_not_ready")
    assert acme.delete(f"/v1/models/{name}").status_code == 200
    refused(acme, name, 404, "model_deleted")
    refused(acme, checkpoint_model_name(name, 10), 404, "model_deleted")
    assert acme.get(f"{JOBS}/{parent['id']}/checkpoints").json()["data"] == []  # the model's checkpoints went too
