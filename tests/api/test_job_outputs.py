"""A job's metric series, checkpoints (OpenAI's shape, newest first) and artifacts (streamed with their
size and sha256), from rows and objects written the way a worker writes them."""

from __future__ import annotations

import hashlib

import pytest
from api_harness import Service, TenantClient

from sparsegrad_service.db import session_scope
from sparsegrad_service.job_records import insert_metrics
from sparsegrad_service.models import Artifact, Checkpoint
from sparsegrad_service.store import LocalArtifactStore, artifact_key, checkpoint_key

JOBS = "/v1/fine_tuning/jobs"


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_metrics_filter_and_page_by_whole_steps(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    with session_scope(service.url) as session:
        insert_metrics(session, job["id"], [(s, n, s * 0.1) for s in range(1, 11) for n in ("loss", "lr")])
        insert_metrics(session, job["id"], [(0, "eval_loss", 0.9), (10, "eval_loss", 0.5)])
    url = f"{JOBS}/{job['id']}/metrics"
    everything = acme.get(url).json()
    assert everything["object"] == "list" and everything["names"] == ["eval_loss", "loss", "lr"]
    assert len(everything["data"]) == 22 and not everything["has_more"]
    keys = [(p["step"], p["name"]) for p in everything["data"]]
    assert keys == sorted(keys) and everything["data"][0] == {**everything["data"][0], "step": 0, "name": "eval_loss"}

    loss = acme.get(url, params={"name": "loss"}).json()["data"]
    assert [p["step"] for p in loss] == list(range(1, 11)) and loss[2]["value"] == pytest.approx(0.3)
    both = acme.get(url, params=[("name", "loss"), ("name", "eval_loss")]).json()["data"]
    assert len(both) == 12
    assert acme.get(url, params={"name": "loss,eval_loss"}).json()["data"] == both
    late = acme.get(url, params={"name": "loss", "after_step": 7}).json()["data"]
    assert [p["step"] for p in late] == [8, 9, 10]

    page = acme.get(url, params={"limit": 5}).json()  # steps 0,1,1,2,2 → cut to whole steps
    assert page["has_more"] and {p["step"] for p in page["data"]} == {0, 1, 2}
    page = acme.get(url, params={"limit": 4}).json()
    assert page["has_more"] and [p["step"] for p in page["data"]] == [0, 1, 1]
    rest = acme.get(url, params={"after_step": 1, "limit": 100}).json()["data"]
    assert len(page["data"]) + len(rest) == 22


def test_checkpoints_newest_first_in_openai_shape(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    with session_scope(service.url) as session:
        for step in (10, 20, 30):
            session.add(Checkpoint(job_id=job["id"], step=step, metrics={"train_loss": 1 / step},
                                   storage_key=checkpoint_key(job["id"], step), bytes=10, sha256="0" * 64))
    url = f"{JOBS}/{job['id']}/checkpoints"
    listing = acme.get(url).json()
    assert [c["step_number"] for c in listing["data"]] == [30, 20, 10] and not listing["has_more"]
    first = listing["data"][0]
    assert first["object"] == "fine_tuning.job.checkpoint" and first["fine_tuning_job_id"] == job["id"]
    assert first["fine_tuned_model_checkpoint"] is None and first["resumable"]  # a resume point, not a model yet
    assert first["metrics"] == {"step": 30, "train_loss": pytest.approx(1 / 30)} and first["id"].startswith("ftckpt-")
    assert listing["first_id"] == first["id"] and listing["last_id"] == listing["data"][-1]["id"]
    page = acme.get(url, params={"limit": 2}).json()
    assert [c["step_number"] for c in page["data"]] == [30, 20] and page["has_more"]
    rest = acme.get(url, params={"limit": 2, "after": page["last_id"]}).json()
    assert [c["step_number"] for c in rest["data"]] == [10] and not rest["has_more"]


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_artifacts_list_describe_and_download(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    content = bytes(range(256)) * 4000
    store = LocalArtifactStore(service.settings.artifact_root)
    filename = f"{job['id']}-adapter.tar.gz"
    stored = store.put_bytes(artifact_key(job["id"], filename), content)
    with session_scope(service.url) as session:
        artifact = Artifact(job_id=job["id"], kind="adapter", filename=filename, bytes=stored.bytes,
                            sha256=stored.sha256, storage_key=stored.key)
        session.add(artifact)
        session.flush()
        artifact_id = artifact.id
    listing = acme.get(f"{JOBS}/{job['id']}/artifacts").json()
    assert listing["object"] == "list" and len(listing["data"]) == 1
    described = listing["data"][0]
    assert described == acme.get(f"/v1/artifacts/{artifact_id}").json()
    assert (described["id"], described["kind"], described["bytes"]) == (artifact_id, "adapter", len(content))
    assert described["sha256"] == hashlib.sha256(content).hexdigest() and described["object"] == "artifact"
    assert acme.get(f"{JOBS}/{job['id']}").json()["result_files"] == [artifact_id]

    with acme.stream("GET", f"/v1/artifacts/{artifact_id}/content") as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == len(content)
        assert response.headers["x-content-sha256"] == described["sha256"]
        assert filename in response.headers["content-disposition"]
        downloaded = b"".join(response.iter_bytes())
    assert hashlib.sha256(downloaded).hexdigest() == described["sha256"]
    assert acme.get("/v1/artifacts/file-nope/content").status_code == 404

    # the same artifact is a result file of the Files API: described, downloaded, listed and paged with uploads
    as_file = acme.get(f"/v1/files/{artifact_id}").json()
    assert (as_file["purpose"], as_file["filename"], as_file["bytes"], as_file["format"]) == (
        "fine-tune-results", filename, len(content), "tar.gz")
    assert as_file["created_at"] == described["created_at"] and as_file["num_examples"] is None
    assert acme.get(f"/v1/files/{artifact_id}/content").content == downloaded
    listed = acme.get("/v1/files", params={"order": "asc"}).json()["data"]
    assert [f["id"] for f in listed] == [job["training_file"], artifact_id]
    assert [f["id"] for f in acme.get("/v1/files", params={"purpose": "fine-tune-results"}).json()["data"]] == [
        artifact_id]
    after = acme.get("/v1/files", params={"after": artifact_id}).json()["data"]  # desc: older than the artifact
    assert [f["id"] for f in after] == [job["training_file"]]
    beta = service.as_tenant("beta")
    assert beta.get(f"/v1/files/{artifact_id}").status_code == 404
    assert beta.get(f"/v1/files/{artifact_id}/content").status_code == 404
    assert beta.get("/v1/files").json()["data"] == []
