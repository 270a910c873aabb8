"""What a finished job answers, from a real SparseGrad job: the bundled MiniLM fine-tuned for a few steps by the
worker's own runner, in-process, on the API's database and store. The job object stays OpenAI-sized (the
method insight has its own route), its result files are files of the Files API in OpenAI's result-file
columns, and its fine-tuned model is the tenant's model in ``/v1/models``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, TenantClient, serving, start_service
from openai import NotFoundError, OpenAI

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
            method={"type": "sparsegrad", "setting": "peft",
                    "sparsegrad": {"calibration_steps": 2, "selection": "block"}},  # its insight names the blocks
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


def test_result_files_are_files_of_the_files_api_in_openais_columns(finished: FinishedJob) -> None:
    client, job = finished.sdk(), finished.job
    result_files = client.fine_tuning.jobs.retrieve(job["id"]).result_files
    artifacts = {a["id"]: a for a in finished.acme.get(f"{JOBS}/{job['id']}/artifacts").json()["data"]}
    assert result_files and set(result_files) == set(artifacts)
    for file_id in result_files:
        file = client.files.retrieve(file_id)
        artifact = artifacts[file_id]
        assert (file.id, file.purpose, file.filename, file.bytes) == (
            file_id, "fine-tune-results", artifact["filename"], artifact["bytes"])
        assert file.created_at == artifact["created_at"] and file.status == "processed"
        content = client.files.content(file_id).read()
        assert len(content) == artifact["bytes"]
        assert content == finished.acme.get(f"/v1/artifacts/{file_id}/content").content  # still served there too

    listed = client.files.list(purpose="fine-tune-results")
    assert sorted(f.id for f in listed) == sorted(result_files)
    everything = [f.id for f in client.files.list()]
    assert set(result_files) < set(everything) and job["training_file"] in everything
    assert [f.id for f in client.files.list(purpose="fine-tune")] == [job["training_file"]]
    page = client.files.list(limit=1, order="asc")  # the cursor walks uploads and result files alike
    assert [f.id for f in page] == [f.id for f in client.files.list(order="asc")]

    # the metrics file: OpenAI's columns first, one row per step, then every other series the job recorded
    metrics_id = next(i for i, a in artifacts.items() if a["kind"] == "metrics")
    table = list(csv.DictReader(io.StringIO(client.files.content(metrics_id).text)))
    header = list(table[0])
    assert header[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert {"eval_accuracy", "lr", "step_time_s"} <= set(header) and "loss" not in header and "eval_loss" not in header
    by_step = {int(r["step"]): r for r in table}
    assert [int(r["step"]) for r in table] == sorted(by_step)
    series = finished.acme.get(f"{JOBS}/{job['id']}/metrics", params={"limit": 100_000}).json()["data"]
    loss = {p["step"]: p["value"] for p in series if p["name"] == "loss"}
    valid = {p["step"]: p["value"] for p in series if p["name"] == "eval_loss"}
    assert sorted(loss) == [1, 2, 3, 4] and sorted(valid) == [0, 4]
    assert {s: float(by_step[s]["train_loss"]) for s in loss} == loss
    assert {s: float(by_step[s]["valid_loss"]) for s in valid} == valid
    assert by_step[0]["train_loss"] == "" and all(r["train_accuracy"] == "" for r in table)

    # another tenant: a 404 like any file it does not own
    other = finished.sdk("beta")
    with pytest.raises(NotFoundError):
        other.files.retrieve(metrics_id)
    with pytest.raises(NotFoundError):
        other.files.content(metrics_id)
    assert list(other.files.list()) == []


def test_the_fine_tuned_model_is_named_like_openais_and_listed_for_its_tenant(finished: FinishedJob) -> None:
    client, job = finished.sdk(), finished.job
    org = job["organization_id"]
    assert job["fine_tuned_model"] == f"ft:minilm-l6:{org}:trial:{job['id']}"
    assert job["fine_tuned_model"].split(":") == ["ft", "minilm-l6", org, "trial", job["id"]]

    models = list(client.models.list())
    assert [m.id for m in models] == ["minilm-l6", "smollm2-135m", job["fine_tuned_model"]]
    mine = models[-1]
    assert (mine.owned_by, mine.created, mine.object) == (org, job["finished_at"], "model")
    assert mine.model_extra is not None and mine.model_extra["parent"] == "minilm-l6"
    assert mine.model_extra["fine_tuning_job_id"] == job["id"] and mine.model_extra["tasks"] == ["classification"]
    assert client.models.retrieve(job["fine_tuned_model"]) == mine
    other = finished.sdk("beta")
    with pytest.raises(NotFoundError):
        other.models.retrieve(job["fine_tuned_model"])
    assert [m.id for m in other.models.list()] == ["minilm-l6", "smollm2-135m"]
