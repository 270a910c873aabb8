"""Helpers of the API tests: a running app on a migrated database (``Service``), a client that sends one
tenant's API key (``TenantClient``, with ``upload`` and ``create_job`` shortcuts), and sample datasets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from support.endpoints import free_port, wait_for

from api.main import create_app
from sparsegrad_service.db import dispose_engines, session_scope
from sparsegrad_service.keys import create_api_key
from sparsegrad_service.settings import Settings

WORKER_TOKEN = "test-worker-token-0123456789"


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


CLASSIFICATION_ROWS = [{"text": f"sentence number {i}", "label": i % 2} for i in range(12)]
CHAT_ROWS = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                           {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(6)]


class TenantClient:
    """The test client with one tenant's ``Authorization`` header (or none)."""

    def __init__(self, client: TestClient, key: str | None) -> None:
        self.client = client
        self.key = key

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**headers, **(extra or {})}

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self.client.request(method, url, headers=self._headers(headers), **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def stream(self, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.stream(method, url, headers=self._headers(headers), **kw)

    def upload(self, content: bytes, filename: str = "train.jsonl", **form: str) -> httpx.Response:
        return self.post("/v1/files", files={"file": (filename, content)}, data={"purpose": "fine-tune", **form})

    def upload_id(self, content: bytes = jsonl(CLASSIFICATION_ROWS), filename: str = "train.jsonl", **form: str) -> str:
        response = self.upload(content, filename, **form)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def create_job(self, body: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        payload = {"model": "minilm-l6", **(body or {}), **fields}
        if "training_file" not in payload:
            payload["training_file"] = self.upload_id()
        response = self.post("/v1/fine_tuning/jobs", json=payload)
        assert response.status_code == 200, response.text
        return dict(response.json())


@dataclass
class Service:
    app: FastAPI
    client: TestClient
    settings: Settings
    url: str

    def key(self, tenant: str) -> str:
        with session_scope(self.url) as session:
            _, key = create_api_key(session, tenant)
        return key

    def as_tenant(self, tenant: str) -> TenantClient:
        return TenantClient(self.client, self.key(tenant))

    def anonymous(self) -> TenantClient:
        return TenantClient(self.client, None)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free local port (for HTTP clients such as the ``openai`` SDK); yields the
    ``/v1`` base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "uvicorn to start", every=0.02)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


def make_settings(data_dir: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "database_url": url, "redis_url": None, "run_reaper": False,
                              "worker_token": WORKER_TOKEN, "models": {}, **overrides}
    return Settings(**values)


def start_service(tmp_path: Path, url: str, **overrides: Any) -> Iterator[Service]:
    """The app on ``url`` (already migrated), served by a TestClient for as long as the generator runs."""
    settings = make_settings(tmp_path / "data", url, **overrides)
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            yield Service(app, client, settings, url)
    finally:
        dispose_engines()
