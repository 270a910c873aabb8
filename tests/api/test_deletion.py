"""Deleting gives the storage back: a file, a finished job (with its checkpoints, artifacts, events, metrics and
the worker's scratch) and a fine-tuned model lose their bytes in the artifact store, and anything a job or a
merge that has not finished still uses is refused with a 409 naming it. Another tenant's objects are 404s and
keep their bytes. ``GET /v1/storage`` counts what is left. Job outputs are written the way a worker writes them
(objects in the store, then their rows)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from api_harness import Service, TenantClient, jsonl, serving, start_service
from sqlalchemy import func, select, update

from sparsegrad_service.db import session_scope
from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.job_records import add_event, insert_metrics
from sparsegrad_service.models import Artifact, Checkpoint, File, Job, JobEvent, MetricPoint, utcnow
from sparsegrad_service.store import LocalArtifactStore, artifact_key, checkpoint_key, file_key, job_prefix

JOBS = "/v1/fine_tuning/jobs"
UNFINISHED = ["validating_files", "queued", "running", "paused", "cancelling"]


@dataclass
class Outputs:
    """What a fabricated job stored: its fine-tuned model name and the storage keys by artifact kind."""

    model: str
    artifacts: dict[str, str]
    checkpoints: list[str]


def store_of(service: Service) -> LocalArtifactStore:
    return LocalArtifactStore(service.settings.artifact_root)


def set_job(service: Service, job_id: str, **values: object) -> None:
    with session_scope(service.url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def add_outputs(service: Service, job_id: str, *, status: str = "succeeded", steps: tuple[int, ...] = (10, 20),
                kinds: tuple[ArtifactKind, ...] = (ArtifactKind.adapter, ArtifactKind.merged_model,
                                                   ArtifactKind.metrics)) -> Outputs:
    """Checkpoints, artifacts, events and metrics of job ``job_id`` as a worker leaves them, and its status."""
    store = store_of(service)
    model = f"minilm-l6:ft:test:{job_id}"
    artifacts, checkpoints = {}, []
    with session_scope(service.url) as session:
        for step in steps:
            stored = store.put_bytes(checkpoint_key(job_id, step), bytes([step % 256]) * (3000 + step))
            session.add(Checkpoint(job_id=job_id, step=step, storage_key=stored.key, bytes=stored.bytes,
                                   sha256=stored.sha256))
            checkpoints.append(stored.key)
        for kind in kinds:
            filename = f"{job_id}-{kind}.bin"
            stored = store.put_bytes(artifact_key(job_id, filename), kind.encode() * 1000)
            session.add(Artifact(job_id=job_id, kind=str(kind), filename=filename, bytes=stored.bytes,
                                 sha256=stored.sha256, storage_key=stored.key))
            artifacts[str(kind)] = stored.key
        insert_metrics(session, job_id, [(s, "loss", 1.0 / s) for s in range(1, 21)])
        add_event(session, job_id, "message", "Fine-tuning job succeeded.")
        session.execute(update(Job).where(Job.id == job_id).values(
            status=status, fine_tuned_model=model if status == "succeeded" else None,
            last_checkpoint_step=max(steps) if steps else None))
    return Outputs(model, artifacts, checkpoints)


def rows_of(service: Service, job_id: str) -> dict[str, int]:
    with session_scope(service.url) as session:
        return {table.__tablename__: session.scalar(select(func.count()).select_from(table)
                                                    .where(table.job_id == job_id)) or 0
                for table in (Artifact, Checkpoint, JobEvent, MetricPoint)}


def error_of(response: object, status: int, code: str) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == code, error
    return str(error["message"])


@pytest.fixture()
def other(service: Service) -> TenantClient:
    return service.as_tenant("globex")


# ------------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_file_removes_its_bytes(service: Service, acme: TenantClient, other: TenantClient) -> None:
    file_id = acme.upload_id(jsonl([{"text": f"row {i} " * 50, "label": i % 2} for i in range(200)]))
    path = store_of(service).path(file_key(file_id))
    assert path.is_file() and path.stat().st_size > 50_000

    assert other.delete(f"/v1/files/{file_id}").status_code == 404  # another tenant's: as if it did not exist
    assert path.is_file()
    r = acme.delete(f"/v1/files/{file_id}")
    assert r.status_code == 200 and r.json() == {"id": file_id, "object": "file", "deleted": True}
    assert not path.exists() and not path.parent.exists()  # the object and the folder it leaves empty
    assert error_of(acme.delete(f"/v1/files/{file_id}"), 404, "not_found")
    assert acme.get(f"/v1/files/{file_id}/content").status_code == 404


def test_bytes_a_crash_left_after_a_file_deletion_go_when_the_reaper_starts(service: Service,
                                                                            acme: TenantClient) -> None:
    from api.reaper import ReaperThread
    from sparsegrad_service.retention import mark_file_deleted

    kept, dropped = acme.upload_id(), acme.upload_id()
    with session_scope(service.url) as session:  # the delete committed, then its process died
        left = mark_file_deleted(session, dropped)
    store = store_of(service)
    assert left is not None and store.exists(left)
    reaper = ReaperThread(service.settings, service.app.state.queue, store)
    reaper.run_once()
    assert not store.exists(left) and store.exists(file_key(kept))
    assert acme.get(f"/v1/files/{kept}/content").status_code == 200


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("status", UNFINISHED)
def test_a_file_a_job_that_has_not_finished_uses_cannot_be_deleted(
    service: Service, acme: TenantClient, status: str,
) -> None:
    train, valid = acme.upload_id(), acme.upload_id()
    job = acme.create_job(training_file=train, validation_file=valid)
    set_job(service, job["id"], status=status)
    for file_id, role in ((train, "training_file"), (valid, "validation_file")):
        message = error_of(acme.delete(f"/v1/files/{file_id}"), 409, "file_in_use")
        assert job["id"] in message and role in message and f"'{status}'" in message, message
        assert store_of(service).exists(file_key(file_id)) and acme.get(f"/v1/files/{file_id}").status_code == 200

    set_job(service, job["id"], status="failed")  # finished: it reads nothing any more
    for file_id in (train, valid):
        assert acme.delete(f"/v1/files/{file_id}").status_code == 200
        assert not store_of(service).exists(file_key(file_id))
    assert acme.get(f"{JOBS}/{job['id']}").json()["training_file"] == train  # the finished job keeps its record


# -------------------------------------------------------------------------------------------------- jobs
@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_finished_job_removes_its_outputs_records_and_scratch(
    service: Service, acme: TenantClient, other: TenantClient,
) -> None:
    file_id = acme.upload_id()
    job = acme.create_job(training_file=file_id)
    outputs = add_outputs(service, job["id"])
    scratch = service.settings.work_dir / job["id"] / "attempt-1"
    scratch.mkdir(parents=True)
    (scratch / "leftover.bin").write_bytes(b"x" * 1000)
    merge_scratch = service.settings.work_dir / f"merge-{job['id']}-abc"
    merge_scratch.mkdir()
    store = store_of(service)
    job_folder = store.path(job_prefix(job["id"]))
    (job_folder / "artifacts" / ".tmp-cut-short.part").write_bytes(b"y" * 100)  # a write that never finished
    assert rows_of(service, job["id"]) == {"job_artifacts": 3, "job_checkpoints": 2, "job_events": 2,
                                           "job_metrics": 20}

    assert error_of(other.delete(f"{JOBS}/{job['id']}"), 404, "not_found")
    assert job_folder.is_dir() and scratch.is_dir()

    r = acme.delete(f"{JOBS}/{job['id']}")
    assert r.status_code == 200 and r.json() == {"id": job["id"], "object": "fine_tuning.job", "deleted": True}
    assert not job_folder.exists() and not (service.settings.artifact_root / "jobs").exists()
    assert not (service.settings.work_dir / job["id"]).exists() and not merge_scratch.exists()
    assert rows_of(service, job["id"]) == {"job_artifacts": 0, "job_checkpoints": 0, "job_events": 0,
                                           "job_metrics": 0}
    assert error_of(acme.get(f"{JOBS}/{job['id']}"), 404, "not_found")
    assert error_of(acme.delete(f"{JOBS}/{job['id']}"), 404, "not_found")
    assert job["id"] not in [j["id"] for j in acme.get(JOBS).json()["data"]]
    assert acme.get(f"/v1/files/{file_id}").status_code == 200 and store.exists(file_key(file_id))  # files stay
    assert all(not store.path(key).exists() for key in [*outputs.artifacts.values(), *outputs.checkpoints])


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("status", UNFINISHED)
def test_a_job_that_has_not_finished_cannot_be_deleted(service: Service, acme: TenantClient, status: str) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"], status=status)
    message = error_of(acme.delete(f"{JOBS}/{job['id']}"), 409, "invalid_state")
    assert job["id"] in message and f"'{status}'" in message and "cancel it first" in message, message
    assert acme.get(f"{JOBS}/{job['id']}").json()["status"] == status
    assert all(store_of(service).exists(key) for key in outputs.checkpoints)
    assert rows_of(service, job["id"])["job_checkpoints"] == 2


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_and_cancelled_jobs_can_be_deleted(service: Service, acme: TenantClient, status: str) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"], status=status, kinds=(ArtifactKind.metrics,))
    assert acme.delete(f"{JOBS}/{job['id']}").status_code == 200
    assert not any(store_of(service).path(key).exists() for key in outputs.checkpoints)


# ------------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_deleting_a_fine_tuned_model_removes_its_archives_and_keeps_the_job(
    service: Service, acme: TenantClient, other: TenantClient,
) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"], kinds=(ArtifactKind.adapter, ArtifactKind.lora,
                                                     ArtifactKind.merged_model, ArtifactKind.metrics))
    store = store_of(service)
    assert error_of(other.delete(f"/v1/models/{outputs.model}"), 404, "not_found")  # not globex's
    assert error_of(acme.delete("/v1/models/minilm-l6:ft:test:ftjob-nope"), 404, "not_found")
    assert all(store.exists(key) for key in outputs.artifacts.values())

    r = acme.delete(f"/v1/models/{outputs.model}")
    assert r.status_code == 200 and r.json() == {"id": outputs.model, "object": "model", "deleted": True}
    for kind, key in outputs.artifacts.items():
        assert store.exists(key) == (kind == "metrics"), kind  # the metrics file is the job's, not the model's
    kept = acme.get(f"{JOBS}/{job['id']}/artifacts").json()["data"]
    assert [a["kind"] for a in kept] == ["metrics"]
    assert acme.get(f"{JOBS}/{job['id']}").json()["status"] == "succeeded"
    with session_scope(service.url) as session:
        assert session.get(Job, job["id"]).model_deleted_at is not None  # type: ignore[union-attr]
    assert error_of(acme.delete(f"/v1/models/{outputs.model}"), 404, "not_found")
    assert "was deleted" in error_of(acme.post(f"{JOBS}/{job['id']}/merge"), 409, "model_deleted")
    assert acme.delete(f"{JOBS}/{job['id']}").status_code == 200  # the job still goes, with what is left



@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_a_result_file_is_deleted_through_the_files_api_unless_it_is_part_of_the_model(
    service: Service, acme: TenantClient, other: TenantClient,
) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"], kinds=(ArtifactKind.adapter, ArtifactKind.metrics))
    ids = {a["kind"]: a["id"] for a in acme.get(f"{JOBS}/{job['id']}/artifacts").json()["data"]}
    store = store_of(service)

    assert error_of(other.delete(f"/v1/files/{ids['metrics']}"), 404, "not_found")  # not globex's
    message = error_of(acme.delete(f"/v1/files/{ids['adapter']}"), 409, "file_is_model")
    assert outputs.model in message and "/v1/models/" in message, message
    assert store.exists(outputs.artifacts["adapter"])

    r = acme.delete(f"/v1/files/{ids['metrics']}")
    assert r.status_code == 200 and r.json() == {"id": ids["metrics"], "object": "file", "deleted": True}
    assert not store.exists(outputs.artifacts["metrics"])
    assert acme.get(f"/v1/files/{ids['metrics']}").status_code == 404
    assert acme.get(f"{JOBS}/{job['id']}").json()["result_files"] == [ids["adapter"]]
    assert error_of(acme.delete(f"/v1/files/{ids['metrics']}"), 404, "not_found")

def test_base_models_cannot_be_deleted(service: Service, acme: TenantClient) -> None:
    message = error_of(acme.delete("/v1/models/minilm-l6"), 403, "model_not_deletable")
    assert "base model" in message and "minilm-l6" in message
    assert acme.get("/v1/models/minilm-l6").status_code == 200


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_a_model_or_job_a_merge_request_uses_cannot_be_deleted(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"], kinds=(ArtifactKind.adapter, ArtifactKind.metrics))
    assert acme.post(f"{JOBS}/{job['id']}/merge").status_code == 202  # queued for a worker; none runs here
    for url, what in ((f"/v1/models/{outputs.model}", "model"), (f"{JOBS}/{job['id']}", "job")):
        message = error_of(acme.delete(url), 409, "merge_in_progress")
        assert job["id"] in message and "merge" in message, (what, message)
    assert store_of(service).exists(outputs.artifacts["adapter"])

    from sparsegrad_service.job_store import JobStore

    job_store = JobStore(service.url, job["id"])  # the worker's merge run: it served the request it started for
    job_store.end_merge_request(job_store.merge_requested_at())
    assert acme.delete(f"/v1/models/{outputs.model}").status_code == 200


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_a_lost_merge_message_is_sent_again_and_only_the_new_run_ends_the_request(service: Service,
                                                                                  acme: TenantClient) -> None:
    from sparsegrad_service.db import get_engine
    from sparsegrad_service.job_store import JobStore
    from sparsegrad_service.reaper import reap_stale_jobs

    job = acme.create_job()
    outputs = add_outputs(service, job["id"], kinds=(ArtifactKind.adapter,))
    assert acme.post(f"{JOBS}/{job['id']}/merge").status_code == 202  # the message is lost: no worker runs here
    job_store = JobStore(service.url, job["id"])
    lost = job_store.merge_requested_at()
    engine, sent = get_engine(service.url), []
    later = utcnow() + timedelta(seconds=service.settings.resend_after_s + 60)

    def reap(depth: int) -> list[tuple[str, str]]:
        return reap_stale_jobs(engine, service.settings, lambda _: None, now=later, queue_depth=lambda: depth,
                               enqueue_merge=sent.append)
    assert reap(1) == [] and sent == []  # the queue holds messages: the merge may still be in it
    assert reap(0) == [(job["id"], "merge resent")] and sent == [job["id"]]
    assert reap(0) == [] and sent == [job["id"]]  # renewed: not sent twice
    assert "sent again" in acme.get(f"{JOBS}/{job['id']}/events").json()["data"][0]["message"]
    job_store.end_merge_request(lost)  # a late run of the lost message does not end the renewed request
    error_of(acme.delete(f"/v1/models/{outputs.model}"), 409, "merge_in_progress")
    job_store.end_merge_request(job_store.merge_requested_at())  # the re-sent run does
    assert acme.delete(f"/v1/models/{outputs.model}").status_code == 200


def test_a_merge_request_made_while_a_merge_runs_stays_pending(service: Service, acme: TenantClient) -> None:
    from sparsegrad_service.job_store import JobStore

    job = acme.create_job()
    outputs = add_outputs(service, job["id"], kinds=(ArtifactKind.adapter,))
    assert acme.post(f"{JOBS}/{job['id']}/merge").status_code == 202
    job_store = JobStore(service.url, job["id"])
    running_for = job_store.merge_requested_at()
    assert acme.post(f"{JOBS}/{job['id']}/merge").status_code == 202  # asked again while the first run works
    job_store.end_merge_request(running_for)
    error_of(acme.delete(f"/v1/models/{outputs.model}"), 409, "merge_in_progress")


def test_a_model_a_job_fine_tunes_cannot_be_deleted(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"])
    user = acme.create_job()
    set_job(service, user["id"], model=outputs.model, status="running")
    message = error_of(acme.delete(f"/v1/models/{outputs.model}"), 409, "model_in_use")
    assert user["id"] in message and "'running'" in message
    set_job(service, user["id"], status="succeeded")  # its model is built on this one (continued training)
    message = error_of(acme.delete(f"/v1/models/{outputs.model}"), 409, "model_in_use")
    assert user["id"] in message and "'succeeded'" in message
    set_job(service, user["id"], model_deleted_at=utcnow())
    assert acme.delete(f"/v1/models/{outputs.model}").status_code == 200


# ----------------------------------------------------------------------------------- retention on cancel
@pytest.fixture()
def keeping_one(tmp_path: Path, db: str) -> Iterator[Service]:
    yield from start_service(tmp_path / "keep-one", db, keep_finished_checkpoints=1)


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_cancelling_a_paused_job_drops_its_checkpoints(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    outputs = add_outputs(service, job["id"], status="paused", kinds=())
    r = acme.post(f"{JOBS}/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert acme.get(f"{JOBS}/{job['id']}/checkpoints").json()["data"] == []
    assert not any(store_of(service).path(key).exists() for key in outputs.checkpoints)
    with session_scope(service.url) as session:
        assert session.get(Job, job["id"]).last_checkpoint_step is None  # type: ignore[union-attr]


def test_a_cancelled_job_keeps_no_checkpoint_whatever_the_setting(keeping_one: Service) -> None:
    acme = keeping_one.as_tenant("acme")  # keep_finished_checkpoints keeps a succeeded job's checkpoint models only
    job = acme.create_job()
    outputs = add_outputs(keeping_one, job["id"], status="paused", steps=(10, 20, 30), kinds=())
    assert acme.post(f"{JOBS}/{job['id']}/cancel").json()["status"] == "cancelled"
    assert acme.get(f"{JOBS}/{job['id']}/checkpoints").json()["data"] == []
    assert [store_of(keeping_one).path(key).exists() for key in outputs.checkpoints] == [False, False, False]


# ------------------------------------------------------------------------------------------------ storage
@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_storage_counts_the_tenants_live_files_checkpoints_and_artifacts(
    service: Service, acme: TenantClient, other: TenantClient,
) -> None:
    empty = {"count": 0, "bytes": 0}
    assert acme.get("/v1/storage").json() == {"object": "storage", "files": empty, "checkpoints": empty,
                                              "artifacts": empty, "total_bytes": 0}
    kept, dropped = acme.upload_id(), acme.upload_id(jsonl([{"text": "x" * 500, "label": i % 2} for i in range(9)]))
    other.upload_id()
    job = acme.create_job(training_file=kept)
    add_outputs(service, job["id"])
    assert acme.delete(f"/v1/files/{dropped}").status_code == 200

    def stored(table: type[File] | type[Checkpoint] | type[Artifact], *where: object) -> dict[str, int]:
        with session_scope(service.url) as session:
            sizes = list(session.scalars(select(table.bytes).where(*where)))  # type: ignore[arg-type]
        return {"count": len(sizes), "bytes": sum(sizes)}

    usage = acme.get("/v1/storage").json()
    files = stored(File, File.id == kept)
    assert files["bytes"] == store_of(service).path(file_key(kept)).stat().st_size
    assert usage["files"] == files
    assert usage["checkpoints"] == stored(Checkpoint, Checkpoint.job_id == job["id"]) and usage["checkpoints"]["count"] == 2
    assert usage["artifacts"] == stored(Artifact, Artifact.job_id == job["id"]) and usage["artifacts"]["count"] == 3
    assert usage["total_bytes"] == files["bytes"] + usage["checkpoints"]["bytes"] + usage["artifacts"]["bytes"]
    assert other.get("/v1/storage").json()["files"]["count"] == 1 and other.get("/v1/storage").json()[
        "checkpoints"] == empty

    assert acme.delete(f"{JOBS}/{job['id']}").status_code == 200
    after = acme.get("/v1/storage").json()
    assert after["checkpoints"] == empty and after["artifacts"] == empty and after["total_bytes"] == files["bytes"]


def test_the_openai_sdk_deletes_files_and_fine_tuned_models(service: Service, acme: TenantClient) -> None:
    from openai import ConflictError, NotFoundError, OpenAI, PermissionDeniedError

    pending = acme.create_job()
    done = acme.create_job()
    outputs = add_outputs(service, done["id"])
    with serving(service.app) as url:
        client = OpenAI(base_url=url, api_key=acme.key, max_retries=0)
        with pytest.raises(ConflictError, match=pending["id"]):
            client.files.delete(pending["training_file"])
        deleted = client.files.delete(done["training_file"])
        assert (deleted.id, deleted.object, deleted.deleted) == (done["training_file"], "file", True)
        assert not store_of(service).exists(file_key(done["training_file"]))

        model = client.models.delete(outputs.model)
        assert (model.id, model.object, model.deleted) == (outputs.model, "model", True)
        with pytest.raises(NotFoundError):
            client.models.delete(outputs.model)
        with pytest.raises(PermissionDeniedError, match="base model"):
            client.models.delete("minilm-l6")
