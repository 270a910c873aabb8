"""Tracking integrations on job creation: OpenAI's ``wandb`` entry and the ``mlflow`` entry of the same shape are
accepted when the server is configured for them, stored in the job spec and echoed in the job object; otherwise
a 400 names the missing setting and the ``integrations`` field. Malformed entries name their field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, TenantClient, serving, start_service
from openai import BadRequestError, OpenAI

from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Job

JOBS = "/v1/fine_tuning/jobs"
WANDB = {"type": "wandb", "wandb": {"project": "sst2-runs", "name": "first try", "entity": "acme-ml",
                                    "tags": ["paper", "sparse"]}}
MLFLOW = {"type": "mlflow", "mlflow": {"experiment": "acme/sst2"}}


@pytest.fixture()
def tracking(tmp_path: Path, db: str) -> Iterator[Service]:
    """The app with W&B (offline, no key) and MLflow configured."""
    yield from start_service(tmp_path, db, wandb_mode="offline", mlflow_tracking_uri=f"file:{tmp_path / 'mlruns'}")


def create(client: TenantClient, integrations: Any) -> Any:
    return client.post(JOBS, json={"model": "minilm-l6", "training_file": client.upload_id(),
                                   "integrations": integrations})


def test_unconfigured_integrations_are_refused_naming_the_setting(acme: TenantClient) -> None:
    for entry, setting in ((WANDB, "SPARSEGRAD_WANDB_API_KEY"), (MLFLOW, "SPARSEGRAD_MLFLOW_TRACKING_URI")):
        r = create(acme, [entry])
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "integrations" and error["code"] == "integration_not_configured"
        assert setting in error["message"] and "not set on this server" in error["message"]
    assert acme.get(JOBS).json()["data"] == []  # nothing was created
    for empty in (None, []):
        assert acme.create_job(integrations=empty)["integrations"] == []


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_configured_integrations_are_stored_and_echoed(tracking: Service) -> None:
    acme = tracking.as_tenant("acme")
    job = acme.create_job(integrations=[WANDB, {"type": "mlflow"}])
    shown = [
        {"type": "wandb", "wandb": {**WANDB["wandb"], "log_adapter": False}},  # type: ignore[dict-item]
        {"type": "mlflow", "mlflow": {"experiment": None, "run_name": None, "log_adapter": False}},
    ]
    assert job["integrations"] == shown
    assert acme.get(f"{JOBS}/{job['id']}").json()["integrations"] == shown
    assert acme.get(JOBS).json()["data"][0]["integrations"] == shown
    with session_scope(tracking.url) as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.spec["integrations"] == shown


def test_configured_wandb_alone_leaves_mlflow_refused(tmp_path: Path, db: str) -> None:
    for service in start_service(tmp_path, db, wandb_api_key="a" * 40):
        acme = service.as_tenant("acme")
        assert acme.create_job(integrations=[WANDB])["integrations"][0]["wandb"]["project"] == "sst2-runs"
        r = create(acme, [WANDB, MLFLOW])
        assert r.status_code == 400 and "SPARSEGRAD_MLFLOW_TRACKING_URI" in r.json()["error"]["message"]


def test_malformed_entries_name_their_field(tracking: Service) -> None:
    acme = tracking.as_tenant("acme")
    cases: list[tuple[Any, str]] = [
        ([{"type": "comet", "comet": {}}], "integrations.0"),
        ([{"type": "wandb"}], "integrations.0.wandb.wandb"),
        ([{"type": "wandb", "wandb": {"project": "a/b"}}], "integrations.0.wandb.wandb.project"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": ["x" * 65]}}], "integrations.0.wandb.wandb.tags"),
        ([{"type": "wandb", "wandb": {"project": "p", "colour": "red"}}], "integrations.0.wandb.wandb.colour"),
        ([MLFLOW, MLFLOW], "integrations"),
        ("wandb", "integrations"),
    ]
    for integrations, param in cases:
        r = create(acme, integrations)
        assert r.status_code == 400, (integrations, r.text)
        assert r.json()["error"]["param"] == param, (integrations, r.json())
    r = create(acme, [MLFLOW, MLFLOW])
    assert "at most one mlflow integration" in r.json()["error"]["message"]


def test_the_openai_sdk_sends_and_reads_wandb_integrations(tmp_path: Path, db: str) -> None:
    for service in start_service(tmp_path, db, wandb_mode="offline"):
        with serving(service.app) as base_url:
            client = OpenAI(base_url=base_url, api_key=service.key("sdk"), max_retries=0)
            train = service.as_tenant("sdk").upload_id()
            job = client.fine_tuning.jobs.create(model="minilm-l6", training_file=train, integrations=[
                {"type": "wandb", "wandb": {"project": "sdk-runs", "tags": ["a"]}}])
            assert job.integrations is not None and len(job.integrations) == 1
            wandb = job.integrations[0].wandb
            assert (job.integrations[0].type, wandb.project, wandb.name, wandb.tags) == ("wandb", "sdk-runs", None, ["a"])
            assert client.fine_tuning.jobs.retrieve(job.id).integrations == job.integrations
            with pytest.raises(BadRequestError) as refused:
                client.fine_tuning.jobs.create(model="minilm-l6", training_file=train,
                                               extra_body={"integrations": [MLFLOW]})
            assert "SPARSEGRAD_MLFLOW_TRACKING_URI" in str(refused.value)
