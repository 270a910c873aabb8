"""The data dir returns to its size after deletes: ``sparsegrad up`` on the embedded default (SQLite, the
filesystem broker, the local artifact store, one worker) runs a job from uploaded files; deleting its model
(with its checkpoint models), the job and the files gives every byte they took back.

What is measured: the bytes of every regular file under ``<data_dir>/artifacts`` (the artifact store:
uploads, checkpoints, job outputs) and ``<data_dir>/work`` (the worker's scratch). What is not: the SQLite
database (``sparsegrad.db`` with its ``-wal``/``-shm``: SQLite keeps freed pages for reuse, so the file may
grow, and the rows of a deleted job go with it), ``broker/`` (the queue's message files), ``logs/`` and
``worker_token``. The test fails if the data dir holds anything else, so a new kind of file must be
accounted for here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.endpoints import wait_for

from .conftest import embedded_up, tiny_job

MEASURED = ("artifacts", "work")
NOT_MEASURED = {"sparsegrad.db", "sparsegrad.db-wal", "sparsegrad.db-shm", "broker", "logs", "worker_token"}


def measured_bytes(data_dir: Path) -> tuple[int, list[str]]:
    """Total size and relative paths of the regular files under the measured folders."""
    unknown = {p.name for p in data_dir.iterdir()} - NOT_MEASURED - set(MEASURED)
    assert not unknown, f"the data dir holds what this test does not account for: {unknown}"
    files = sorted(p for folder in MEASURED if (data_dir / folder).exists()
                   for p in (data_dir / folder).rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), [str(p.relative_to(data_dir)) for p in files]


def test_the_data_dir_returns_to_its_size_after_deleting_the_model_the_job_and_the_files(
    tmp_path: Path, tiny_model_dir: Path, sst2_jsonl: Path
) -> None:
    with embedded_up(tmp_path, tiny_model_dir) as up:
        data_dir = up.data_dir
        baseline, baseline_files = measured_bytes(data_dir)

        with up.client() as c:
            lines = sst2_jsonl.read_bytes().splitlines(keepends=True)
            file_ids = [c.post("/v1/files", files={"file": (name, b"".join(part))},
                               data={"purpose": "fine-tune"}).json()["id"]
                        for name, part in (("train.jsonl", lines[:90]), ("valid.jsonl", lines[90:]))]
            uploaded, _ = measured_bytes(data_dir)
            assert uploaded - baseline == sst2_jsonl.stat().st_size

            body = {**tiny_job(file_ids[0], max_steps=12, checkpoint_every=4), "validation_file": file_ids[1],
                    "merge_model": True}
            job = c.post("/v1/fine_tuning/jobs", json=body).json()
            done: dict[str, Any] = wait_for(
                lambda: (j := c.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"]
                in ("succeeded", "failed", "cancelled") and j, 240, "the job")
            assert done["status"] == "succeeded", (done, (tmp_path / "up.log").read_text()[-3000:])
            events = c.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
            assert sorted(e["data"]["step"] for e in events if e["type"] == "checkpoint") == [4, 8, 12]

            # finished: its final step and newest checkpoint kept as models (keep_finished_checkpoints 2) without
            # their resume archives, no scratch, and every stored byte is a live row the storage figure counts.
            # The worker deletes the attempt's scratch folder right after it records the job's end.
            wait_for(lambda: not (data_dir / "work" / job["id"]).exists(), 60, "the job's scratch folder to go")
            finished, finished_files = measured_bytes(data_dir)
            assert [f.rsplit("/", 1)[1] for f in finished_files if "/checkpoints/" in f] == [
                "step-00000008-model.tar.gz", "step-00000012-model.tar.gz"]
            assert not [f for f in finished_files if f.startswith("work")], finished_files
            storage = c.get("/v1/storage").json()
            outputs = c.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
            models = c.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
            assert {"adapter", "merged_model", "metrics"} <= {a["kind"] for a in outputs}
            assert storage["checkpoints"] == {"count": 2, "bytes": sum(m["bytes"] for m in models)}
            assert storage["artifacts"] == {"count": len(outputs), "bytes": sum(a["bytes"] for a in outputs)}
            assert finished - baseline == storage["total_bytes"]

            # deleting the model takes its archives and its checkpoints
            assert c.delete(f"/v1/models/{done['fine_tuned_model']}").json()["deleted"] is True
            without_model, _ = measured_bytes(data_dir)
            kept = c.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
            assert [a["kind"] for a in kept] == ["metrics"]
            assert c.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"] == []
            assert finished - without_model == (sum(a["bytes"] for a in outputs) - kept[0]["bytes"]
                                                + storage["checkpoints"]["bytes"])

            for file_id in file_ids:  # the job has finished: its files may go
                assert c.delete(f"/v1/files/{file_id}").json()["deleted"] is True
            assert c.delete(f"/v1/fine_tuning/jobs/{job['id']}").json()["deleted"] is True
            assert c.get("/v1/storage").json()["total_bytes"] == 0

        after, after_files = measured_bytes(data_dir)
        assert (after, after_files) == (baseline, baseline_files)
