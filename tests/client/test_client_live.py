"""The client and the CLI against the real API (uvicorn subprocess, SQLite, no worker: jobs stay queued
unless a test moves them; artifacts are placed in the store the way a worker does)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sparsegrad_cli.app import app
from sparsegrad_client import ApiError, SparseGradClient
from sparsegrad_contract import defaults
from sparsegrad_contract.defaults import MethodType
from sparsegrad_data import sample_path
from sparsegrad_service.job_spec import SparseGradMethod
from sparsegrad_service.schemas import FileObject, JobEventPublic, JobPublic

from .conftest import LiveService

runner = CliRunner()


@pytest.fixture()
def client(live_service: LiveService) -> SparseGradClient:
    return SparseGradClient(live_service.url, live_service.api_key)


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [{"text": f"sentence number {i} is {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(live: LiveService, *args: str) -> object:
    return runner.invoke(app, [*args], env={"SPARSEGRAD_URL": live.url, "SPARSEGRAD_API_KEY": live.api_key,
                                            "COLUMNS": "200"})


def test_files_upload_list_get_delete(client: SparseGradClient, train_jsonl: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    file = client.upload_file(train_jsonl, progress=lambda done, total: seen.append(done))
    assert isinstance(file, FileObject)
    assert file.object == "file" and file.num_examples == 40 and file.format == "jsonl"
    assert seen and seen[-1] == train_jsonl.stat().st_size
    assert client.get_file(file.id).filename == "train.jsonl"
    assert file.id in [f.id for f in client.list_files().data]
    tsv = client.upload_file(sample_path("sst2_dev"), text_column="sentence", label_column="label")
    assert tsv.format == "tsv" and tsv.num_examples == 872
    assert client.delete_file(file.id).deleted is True
    with pytest.raises(ApiError) as info:
        client.get_file(file.id)
    assert info.value.status == 404


def test_invalid_upload_names_the_line_and_field(client: SparseGradClient, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{"text": "no label here"}\n')
    with pytest.raises(ApiError) as info:
        client.upload_file(bad)
    assert info.value.status == 400 and info.value.is_validation
    assert "bad.jsonl" in str(info.value) and "2" in str(info.value) and "label" in str(info.value)


def test_a_bad_key_is_refused(live_service: LiveService) -> None:
    with SparseGradClient(live_service.url, "sg-not-a-key") as anonymous, pytest.raises(ApiError) as info:
        anonymous.list_models()
    assert info.value.status == 401


def test_models_list_the_bundled_ones(client: SparseGradClient) -> None:
    names = {m.id for m in client.list_models().data}
    assert {"minilm-l6", "smollm2-135m"} <= names


def test_defaults_are_the_job_contract(client: SparseGradClient) -> None:
    got = client.get_defaults()
    assert got.methods[0] == defaults.DEFAULT_METHOD and set(got.methods) == set(MethodType)
    assert got.hyperparameters.batch_size == defaults.BATCH_SIZE
    sparsegrad = got.method[MethodType.sparsegrad.value]
    assert isinstance(sparsegrad, SparseGradMethod) and sparsegrad.density == defaults.DENSITY
    assert got.validation_split == defaults.VALIDATION_SPLIT


def test_job_lifecycle_idempotency_events_and_paging(client: SparseGradClient, train_jsonl: Path) -> None:
    file_id = client.upload_file(train_jsonl).id
    body = {"hyperparameters": {"max_steps": 3, "batch_size": 4}, "method": {"type": "sparsegrad"}}
    job = client.create_job("minilm-l6", file_id, idempotency_key="idem-1", **body)
    assert isinstance(job, JobPublic)
    assert job.object == "fine_tuning.job" and job.status == "queued"
    assert job.hyperparameters.max_steps == 3 and job.requested == body
    assert client.create_job("minilm-l6", file_id, idempotency_key="idem-1", **body).id == job.id
    with pytest.raises(ApiError) as info:
        client.create_job("minilm-l6", file_id, idempotency_key="idem-1", hyperparameters={"max_steps": 4})
    assert info.value.status == 409
    other = client.create_job("minilm-l6", file_id, hyperparameters={"max_steps": 2})
    assert other.id != job.id

    assert client.pause_job(job.id).status == "paused"
    assert client.resume_job(job.id).status == "queued"
    assert client.cancel_job(job.id).status == "cancelled"
    assert client.get_job(job.id).status == "cancelled"

    ids = [j.id for j in client.iter_jobs(page_size=1)]
    assert ids.index(other.id) < ids.index(job.id)  # newest first, across pages
    assert [j.id for j in client.list_jobs(status="cancelled").data].count(job.id) == 1
    team = f"team-{job.id}"
    tagged = client.create_job("minilm-l6", file_id, metadata={"team": team, "stage": "a b"})
    assert [j.id for j in client.list_jobs(metadata={"team": team, "stage": "a b"}).data] == [tagged.id]
    assert client.list_jobs(metadata={"team": team, "stage": "other"}).data == []
    client.cancel_job(tagged.id)

    events = client.list_events(job.id).data
    assert any("cancelled" in e.message.lower() for e in events)
    streamed = list(client.stream_events(job.id))  # terminal job: the stream ends
    assert all(isinstance(e, JobEventPublic) for e in streamed)
    assert [e.id for e in streamed] == sorted((e.id for e in events), key=lambda i: int(i.split("-")[-1]))
    assert client.get_metrics(job.id).data == []
    assert client.list_checkpoints(job.id).data == []
    assert client.list_artifacts(job.id).data == []
    client.cancel_job(other.id)


def _add_artifacts(live: LiveService, job_id: str, tmp_path: Path, corrupt: bool = False) -> None:
    """What a worker does at the end of a job: write the objects to the store, then insert the rows."""
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.models import Artifact
    from sparsegrad_service.store import LocalArtifactStore, artifact_key, pack_directory

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"format": "sparsegrad"}')
    (adapter / "training_info.json").write_text('{"task": "classification"}')
    archive = pack_directory(adapter, tmp_path / f"{job_id}-adapter.tar.gz")
    csv = tmp_path / f"{job_id}-metrics.csv"
    csv.write_text("step,name,value\n1,loss,0.5\n")
    store = LocalArtifactStore(live.settings.artifact_root)
    with session_scope(live.settings.sql_url) as session:
        for kind, path in (("adapter", archive), ("metrics", csv)):
            stored = store.put_file(artifact_key(job_id, path.name), path)
            sha = hashlib.sha256(b"other").hexdigest() if corrupt else stored.sha256
            session.add(Artifact(job_id=job_id, kind=kind, filename=path.name, bytes=stored.bytes, sha256=sha,
                                 storage_key=stored.key))


def test_cli_submit_jobs_download_and_exit_codes(live_service: LiveService, train_jsonl: Path, tmp_path: Path) -> None:
    submitted = _cli(live_service, "submit", "--model", "minilm-l6", "--train", str(train_jsonl), "--max-steps", "2",
                     "--density", "0.02", "--lora-rank", "4", "--batch-size", "4", "--gradient-checkpointing")
    assert submitted.exit_code == 0, submitted.output  # type: ignore[attr-defined]
    job_id = submitted.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    assert job_id.startswith("ftjob-")
    with SparseGradClient(live_service.url, live_service.api_key) as client:
        job = client.get_job(job_id)
        assert job.method["sparsegrad"]["density"] == 0.02 and job.hyperparameters.max_steps == 2
        assert job.hyperparameters.gradient_checkpointing is True
        client.cancel_job(job_id)

    listed = _cli(live_service, "jobs", "--limit", "5")
    assert listed.exit_code == 0 and job_id in listed.stdout  # type: ignore[attr-defined]
    shown = _cli(live_service, "jobs", "show", job_id)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["status"] == "cancelled"  # type: ignore[attr-defined]
    as_served = httpx.get(f"{live_service.url}/v1/fine_tuning/jobs/{job_id}",
                          headers={"Authorization": f"Bearer {live_service.api_key}"}).json()
    assert json.loads(shown.stdout) == as_served  # type: ignore[attr-defined]  # the job object, field for field
    watched = _cli(live_service, "watch", job_id)
    assert watched.exit_code == 1 and "cancelled" in watched.stdout  # type: ignore[attr-defined]
    again = _cli(live_service, "pause", job_id)
    assert again.exit_code == 2 and "cancelled" in again.stderr  # type: ignore[attr-defined]
    missing = _cli(live_service, "jobs", "show", "ftjob-doesnotexist")
    assert missing.exit_code == 1 and "ftjob-doesnotexist" in missing.stderr  # type: ignore[attr-defined]

    _add_artifacts(live_service, job_id, tmp_path)
    out = tmp_path / "out"
    got = _cli(live_service, "download", job_id, "-o", str(out / "adapter"))
    assert got.exit_code == 0, got.output  # type: ignore[attr-defined]
    assert json.loads((out / "adapter" / "adapter_config.json").read_text()) == {"format": "sparsegrad"}
    assert (out / "adapter" / "training_info.json").is_file()
    got = _cli(live_service, "download", job_id, "--kind", "metrics", "-o", str(out))
    assert got.exit_code == 0, got.output  # type: ignore[attr-defined]
    assert (out / f"{job_id}-metrics.csv").read_text().startswith("step,name,value")
    assert sorted(p.name for p in out.iterdir()) == ["adapter", f"{job_id}-metrics.csv"]  # no leftovers


def test_cli_refuses_a_corrupt_download_and_bad_files(live_service: LiveService, train_jsonl: Path, tmp_path: Path) -> None:
    with SparseGradClient(live_service.url, live_service.api_key) as client:
        job = client.create_job("minilm-l6", client.upload_file(train_jsonl).id)
        client.cancel_job(job.id)
    _add_artifacts(live_service, job.id, tmp_path, corrupt=True)
    got = _cli(live_service, "download", job.id, "-o", str(tmp_path / "dl"))
    assert got.exit_code == 1 and "corrupt" in got.stderr  # type: ignore[attr-defined]
    assert not (tmp_path / "dl" / "adapter_config.json").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,1\n,0\n")
    refused = _cli(live_service, "submit", "--model", "minilm-l6", "--train", str(bad))
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    assert "bad.csv" in refused.stderr and "3" in refused.stderr  # type: ignore[attr-defined]
