"""``/v1/models``: the model cards say what the bundled weights are, ``created`` is fixed (not the API's
start), a tenant's fine-tuned models are listed and retrievable by name (also names given before OpenAI's
format, which may hold ``/`` and spaces), never another tenant's or a deleted one; a job's ``suffix`` that
would break the name is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from api_harness import Service, start_service

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import JobStatus
from sparsegrad_service.model_names import fine_tuned_model_name
from sparsegrad_service.models import Job, utcnow

JOBS = "/v1/fine_tuning/jobs"


def test_model_cards_say_what_the_weights_are_and_created_is_fixed(tmp_path: Path, db: str) -> None:
    operator = tmp_path / "operator-model"
    operator.mkdir()
    (operator / "config.json").write_text('{"model_type": "bert"}')
    os.utime(operator / "config.json", (1_700_000_000, 1_700_000_000))
    seen = []
    for run in range(2):  # two starts of the API, a second apart
        for service in start_service(tmp_path / f"run{run}", db, models={"mine": str(operator)}):
            started = int(time.time())
            models = {m["id"]: m for m in service.as_tenant("acme").get("/v1/models").json()["data"]}
            seen.append({name: m["created"] for name, m in models.items()})
            assert all(m["created"] < started for m in models.values())
        time.sleep(1.1)
    assert seen[0] == seen[1] and seen[0]["mine"] == 1_700_000_000
    smol = models["smollm2-135m"]["description"]
    assert "GGUF Q4_1" in smol and "dequantized to float32" in smol and "not the published" in smol
    assert "float32 safetensors" in models["minilm-l6"]["description"]


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_fine_tuned_models_are_the_tenants_own(service: Service) -> None:
    acme, beta = service.as_tenant("acme"), service.as_tenant("beta")
    jobs = [acme.create_job(suffix="v1"), acme.create_job(), acme.create_job(), acme.create_job()]
    names = {}
    with session_scope(service.url) as session:
        for i, job in enumerate(jobs):
            row = session.get(Job, job["id"])
            assert row is not None
            names[i] = fine_tuned_model_name(row.model, row.tenant_id, row.suffix, row.id)
            if i == 2:  # a name of the earlier format, with the characters it let through
                names[i] = f"minilm-l6:ft:a/b:c d:{row.id}"
            if i < 3:
                row.status, row.finished_at, row.fine_tuned_model = JobStatus.succeeded, utcnow(), names[i]
                time.sleep(0.01)
            else:  # a queued job has no model yet
                names[i] = fine_tuned_model_name(row.model, row.tenant_id, None, row.id)
    assert names[1].endswith(f"::{jobs[1]['id']}")  # no suffix: an empty part, as OpenAI writes it

    listed = [m["id"] for m in acme.get("/v1/models").json()["data"]]
    assert listed == ["minilm-l6", "smollm2-135m", names[2], names[1], names[0]]
    for name in (names[0], names[1], names[2]):
        got = acme.get(f"/v1/models/{quote(name, safe=':/')}")
        assert got.status_code == 200 and got.json()["id"] == name, got.text
        assert beta.get(f"/v1/models/{quote(name, safe=':/')}").status_code == 404
    missing = acme.get(f"/v1/models/{quote(names[3], safe=':')}")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
    assert acme.get(f"/v1/models/{names[0]}x").status_code == 404  # the name, not just its job id
    assert [m["id"] for m in beta.get("/v1/models").json()["data"]] == ["minilm-l6", "smollm2-135m"]

    with session_scope(service.url) as session:  # a deleted model is gone from both
        row = session.get(Job, jobs[0]["id"])
        assert row is not None
        row.model_deleted_at = utcnow()
    assert names[0] not in acme.get("/v1/models").text
    assert acme.get(f"/v1/models/{names[0]}").status_code == 404


@pytest.mark.parametrize("suffix", ["a:b", "a/b", "my model", "nul\x00", "tab\t", "new\nline", "modèle", "é"])
def test_a_suffix_that_would_break_the_name_is_refused(service: Service, suffix: str) -> None:
    acme = service.as_tenant("acme")
    r = acme.post(JOBS, json={"model": "minilm-l6", "training_file": acme.upload_id(), "suffix": suffix})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "suffix" and "may only contain ASCII letters, digits" in error["message"]
    assert acme.get(JOBS).json()["data"] == []


def test_a_plain_suffix_is_kept(service: Service) -> None:
    job = service.as_tenant("acme").create_job(suffix="Team-A_v1.2")
    assert job["suffix"] == "Team-A_v1.2"
