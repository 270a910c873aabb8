"""What a finished job answers, from a real SparseGrad job: the bundled MiniLM fine-tuned for a few steps by the
worker's own runner, in-process, on the API's database and store. The job object stays OpenAI-sized (the
method insight has its own route), its result files are files of the Files API in OpenAI's result-file
columns, and its fine-tuned model is the tenant's model in ``/v1/models``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, TenantClient, serving, start_service
from openai import OpenAI

from migrations import upgrade

JOBS = "/v1/fine_tuning/jobs"
JOB_JSON_LIMIT = 4096
"""Bytes: a job object the size of OpenAI's (one without the insight is about 2.3 KB)."""


@dataclass
class FinishedJob:
    service: Service
    acme: TenantClient
    job: dict[str, Any]
    base_url: str

    def sdk(self, tenant: str = "acme") -> OpenAI:
        key = self.acme.key if tenant == "acme" else self.service.key(tenant)
        return OpenAI(base_url=self.base_url, api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, sst2_jsonl: Path) -> Iterator[FinishedJob]:
    from worker.runner import JobRunner, Outcome

    root = tmp_path_factory.mktemp("finished")
    url = f"sqlite:///{root / 'api.db'}"
    upgrade(url)
    for service in start_service(root, url, heartbeat_interval_s=0.2, metrics_flush_s=0.2, stop_check_s=0.0):
        acme = service.as_tenant("acme")
        created = acme.create_job(
            model="minilm-l6", training_file=acme.upload_id(sst2_jsonl.read_bytes()), suffix="trial",
            metadata={"team": "trial"}, validation_split=0.2,
            method={"type": "sparsegrad", "setting": "peft", "sparsegrad": {"calibration_steps": 2}},
            hyperparameters={"max_steps": 4, "batch_size": 8, "max_seq_length": 32})
        assert JobRunner(service.settings, created["id"]).run() == Outcome.succeeded
        job = acme.get(f"{JOBS}/{created['id']}").json()
        assert job["status"] == "succeeded", job
        with serving(service.app) as base_url:
            yield FinishedJob(service, acme, job, base_url)


def test_the_job_object_is_openai_sized_and_the_insight_has_its_own_route(finished: FinishedJob) -> None:
    acme, job_id = finished.acme, finished.job["id"]
    response = acme.get(f"{JOBS}/{job_id}")
    assert len(response.content) < JOB_JSON_LIMIT, (len(response.content), response.text[:300])
    summary = response.json()["summary"]
    assert {"spectra", "block", "probe"}.isdisjoint(summary)
    assert summary["steps"] == 4 and summary["trainable_params"] > 0 and "eval_accuracy" in summary["after"]
    listing = acme.get(JOBS)
    assert len(listing.content) < JOB_JSON_LIMIT and listing.json()["data"][0] == response.json()

    insight = acme.get(f"{JOBS}/{job_id}/insight")
    assert insight.status_code == 200, insight.text
    body = insight.json()
    assert body["object"] == "fine_tuning.job.insight" and body["fine_tuning_job_id"] == job_id
    assert body["method"] == "sparsegrad"
    # MiniLM's MLP: intermediate.dense is 1536 × 384, output.dense 384 × 1536
    shapes = {kind: (len(s["out"]), len(s["in"])) for kind, s in body["spectra"].items()}
    assert shapes == {"intermediate.dense": (1536, 384), "output.dense": (384, 1536)}
    assert all(s["out"] == sorted(s["out"], reverse=True) for s in body["spectra"].values())
    assert set(body["block"]["kinds"]) == set(shapes) and body["block"]["rule"]
    assert all(c["r_out"] > 0 and c["r_in"] > 0 for c in body["block"]["kinds"].values())
    assert len(body["probe"]["logits"]) == len(body["probe"]["texts"]) > 0

    assert finished.service.as_tenant("beta").get(f"{JOBS}/{job_id}/insight").status_code == 404


def test_cli_jobs_show_prints_a_compact_job(finished: FinishedJob) -> None:
    from typer.testing import CliRunner

    from sparsegrad_cli.app import app

    url = finished.base_url.removesuffix("/v1")
    result = CliRunner().invoke(app, ["jobs", "show", finished.job["id"], "--url", url,
                                      "--api-key", str(finished.acme.key)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["id"] == finished.job["id"]
    assert len(result.output.splitlines()) < 150 and "spectra" not in result.output
