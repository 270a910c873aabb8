"""Fixtures of the client tests: a clean service environment (embedded defaults, no DATABASE_URL or
REDIS_URL from the caller), a job object as the API serializes it, and a real API server
(uvicorn in a subprocess, no worker) with an API key, on a temporary data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import free_port, wait_ready

from sparsegrad_service.job_spec import ResolvedHyperparameters, SparseGradMethod, TaskSpec
from sparsegrad_service.schemas import JobPublic
from sparsegrad_service.schemas.jobs import PublicHyperparameters

REPO = Path(__file__).resolve().parents[2]
SERVICE_ENV_PREFIXES = ("SPARSEGRAD_",)
SERVICE_ENV_NAMES = ("DATABASE_URL", "REDIS_URL")


def clean_env(data_dir: Path | None = None) -> dict[str, str]:
    """This process's environment without service settings (so tests use the embedded defaults)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(SERVICE_ENV_PREFIXES) and k not in SERVICE_ENV_NAMES}
    if data_dir is not None:
        env["SPARSEGRAD_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def job_object(job_id: str, status: str = "queued", **fields: Any) -> dict[str, Any]:
    """A job object as the API serializes it (``JobPublic``, every field)."""
    job = JobPublic(
        id=job_id, status=status, model="minilm-l6", created_at=1_700_000_000, started_at=None, finished_at=None,
        error=None, method={"type": "sparsegrad", "sparsegrad": {"density": 0.01}, "setting": "paper"},
        hyperparameters=PublicHyperparameters.of(ResolvedHyperparameters(learning_rate=2e-4), SparseGradMethod(setting="paper")),
        requested={"method": {"type": "sparsegrad"}}, training_file="file-1", validation_file=None,
        trained_tokens=None, result_files=[], fine_tuned_model=None, estimated_finish=None, metadata=None,
        seed=42, suffix=None, organization_id="org-1", phase=None, progress=0.0, queue_position=1,
        task=TaskSpec(), attempts=0, step=0, total_steps=None, summary=None, pause_requested=False,
        validation_split=0.1, merge_model=False,
    )
    return {**job.model_dump(mode="json"), **fields}


@pytest.fixture(autouse=True)
def _embedded_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process CLI calls read settings from the environment: start each test from the defaults."""
    for name in list(os.environ):
        if name.startswith(SERVICE_ENV_PREFIXES) or name in SERVICE_ENV_NAMES:
            monkeypatch.delenv(name)
    yield
    from sparsegrad_service.db import dispose_engines

    dispose_engines()


@dataclass(frozen=True)
class LiveService:
    url: str
    api_key: str
    data_dir: Path

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        from sparsegrad_service.settings import Settings

        return Settings(data_dir=self.data_dir)


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The real API (``api.main:app`` under uvicorn) on a free port with its own SQLite data dir; no worker
    runs, so jobs stay queued unless a test changes them."""
    pytest.importorskip("api.main")
    from migrations import upgrade
    from sparsegrad_service.db import dispose_engines, session_scope
    from sparsegrad_service.keys import create_api_key
    from sparsegrad_service.settings import Settings

    data_dir = tmp_path_factory.mktemp("service-data")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(SERVICE_ENV_PREFIXES) or name in SERVICE_ENV_NAMES:
                mp.delenv(name)
        settings = Settings(data_dir=data_dir)
    upgrade(settings.sql_url)
    with session_scope(settings.sql_url) as session:
        _, key = create_api_key(session, "client-tests")
    dispose_engines()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = data_dir / "api-test.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=clean_env(data_dir), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_ready(url, process, 60, log)
        yield LiveService(url, key, data_dir)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
