"""The embedded default: ``sparsegrad up`` (uvicorn + a Celery worker on the filesystem broker + SQLite + a
local artifact directory) runs a job submitted over REST; Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from support.endpoints import free_port, wait_for, wait_ready

from .conftest import REPO, tiny_job


def test_sparsegrad_up_runs_a_job_on_sqlite_and_the_filesystem_broker(
    tmp_path: Path, tiny_model_dir: Path, sst2_jsonl: Path
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SPARSEGRAD_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"SPARSEGRAD_MODELS": json.dumps({"tiny-bert": str(tiny_model_dir)}), "PYTHONUNBUFFERED": "1",
                "SPARSEGRAD_TORCH_THREADS": "1"})
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "sparsegrad_cli", "up", "--port", str(port),
                           "--data-dir", str(data_dir)], env=env, cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, up, 90, tmp_path / "up.log")
        keys = subprocess.run([sys.executable, "-m", "sparsegrad_cli", "keys", "create", "--tenant",
                               "local", "--data-dir", str(data_dir)], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert keys.returncode == 0, keys.stderr
        key = keys.stdout.strip().splitlines()[-1]
        assert (data_dir / "sparsegrad.db").is_file()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            with open(sst2_jsonl, "rb") as f:
                file_id = c.post("/v1/files", files={"file": ("t.jsonl", f)},
                                 data={"purpose": "fine-tune"}).json()["id"]
            job = c.post("/v1/fine_tuning/jobs", json=tiny_job(file_id, max_steps=10)).json()
            done = wait_for(lambda: (j := c.get(f"/v1/fine_tuning/jobs/{job['id']}").json())["status"]
                            in ("succeeded", "failed") and j, 180, "the embedded job")
            assert done["status"] == "succeeded", (done, (tmp_path / "up.log").read_text()[-3000:])
            artifacts = c.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts").json()["data"]
            adapter = next(a for a in artifacts if a["kind"] == "adapter")
            assert c.get(f"/v1/artifacts/{adapter['id']}/content").content[:2] == b"\x1f\x8b"  # gzip
        assert list((data_dir / "artifacts").rglob("*adapter.tar.gz"))
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
        code = up.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
