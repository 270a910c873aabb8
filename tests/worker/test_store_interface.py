"""The runner reaches uploads and delivers outputs only through the artifact store interface (as a
remote worker does through ``HttpArtifactStore``), never through the API's directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from worker_helpers import artifacts, create_job, job_row, job_spec

from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore, StoredObject, artifact_key, checkpoint_key, file_key
from worker.checkpoints import checkpoint_model_key
from worker.runner import JobRunner, Outcome


class RecordingStore:
    """The store interface over a directory the worker does not know about, recording every call."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalArtifactStore(root)
        self.calls: list[tuple[str, str]] = []

    def put_file(self, key: str, src: Path) -> StoredObject:
        self.calls.append(("put_file", key))
        return self.inner.put_file(key, src)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        self.calls.append(("put_bytes", key))
        return self.inner.put_bytes(key, data)

    def fetch(self, key: str, dest: Path) -> Path:
        self.calls.append(("fetch", key))
        return self.inner.fetch(key, dest)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.inner.delete(key)


def test_runner_uses_only_the_store_interface(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tmp_path: Path
) -> None:
    api_side = make_settings(pg_db, data_dir=tmp_path / "api")
    job_id = create_job(api_side, sst2_bytes, job_spec(hyperparameters={"max_steps": 9, "checkpoint_every": 3}))
    worker_side = make_settings(pg_db, data_dir=tmp_path / "worker")  # no shared disk with the API
    store = RecordingStore(api_side.artifact_root)
    assert JobRunner(worker_side, job_id, store=store).run() == Outcome.succeeded

    train_file = job_row(api_side, job_id).training_file_id
    assert store.calls == [
        ("fetch", file_key(train_file)),
        ("put_file", checkpoint_key(job_id, 3)),
        ("put_file", checkpoint_key(job_id, 6)),
        ("put_file", checkpoint_key(job_id, 9)),
        ("delete", checkpoint_key(job_id, 3)),
        ("put_file", artifact_key(job_id, f"{job_id}-adapter.tar.gz")),
        ("put_file", checkpoint_model_key(job_id, 9)),  # keep_finished_checkpoints (2) kept as models: the final
        ("fetch", checkpoint_key(job_id, 6)),  # step's export, and the newest earlier checkpoint, restored
        ("put_file", checkpoint_model_key(job_id, 6)),
        ("put_bytes", artifact_key(job_id, f"{job_id}-metrics.csv")),
        ("delete", checkpoint_key(job_id, 9)),  # succeeded: the resume archives go
        ("delete", checkpoint_key(job_id, 6)),
    ]
    assert {a.storage_key for a in artifacts(api_side, job_id).values()} == {
        artifact_key(job_id, f"{job_id}-adapter.tar.gz"), artifact_key(job_id, f"{job_id}-metrics.csv")}
    assert not (tmp_path / "worker" / "artifacts").exists()
