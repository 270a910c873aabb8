"""The embedded default: ``sparsegrad up`` (uvicorn + a Celery worker on the filesystem broker + SQLite + a
local artifact directory) runs a job submitted over REST; Ctrl-C stops all of it."""

from __future__ import annotations

from pathlib import Path

from support.endpoints import wait_for

from sparsegrad_service.allocator import jemalloc_library

from .conftest import embedded_up, tiny_job


def test_sparsegrad_up_runs_a_job_on_sqlite_and_the_filesystem_broker(
    tmp_path: Path, tiny_model_dir: Path, sst2_jsonl: Path
) -> None:
    with embedded_up(tmp_path, tiny_model_dir) as up:
        assert (up.data_dir / "sparsegrad.db").is_file()
        with up.client() as c:
            with open(sst2_jsonl, "rb") as f:
                file_id = c.post("/v1/files", files={"file": ("t.jsonl", f)},
                                 data={"purpose": "fine-tune"}).json()["id"]
            job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=10)).json()
            done = wait_for(lambda: (j := c.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"]
                            in ("succeeded", "failed") and j, 180, "the embedded job")
            assert done["status"] == "succeeded", (done, (tmp_path / "up.log").read_text()[-3000:])
            assert jemalloc_library() is not None, "jemalloc is missing: sudo apt-get install -y libjemalloc2"
            assert done["summary"]["allocator"] == "jemalloc"  # `sparsegrad up` preloads it into its workers
            artifacts = c.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
            adapter = next(a for a in artifacts if a["kind"] == "adapter")
            assert c.get(f"/v1/artifacts/{adapter['id']}/content").content[:2] == b"\x1f\x8b"  # gzip
        assert list((up.data_dir / "artifacts").rglob("*adapter.tar.gz"))
