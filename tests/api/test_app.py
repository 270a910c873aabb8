"""The app as a whole: health and readiness, Prometheus metrics, models, the OpenAPI document, the error
shape of unknown routes / wrong methods / crashes, import without a database, and the reaper thread."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from api_harness import Service, TenantClient, make_settings, start_service
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from migrations import upgrade
from sparsegrad_service.db import session_scope
from sparsegrad_service.models import Job, utcnow

REPO = Path(__file__).resolve().parents[2]


def test_health_and_readiness(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    r = service.client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "database": "ok", "broker": "ok"}


def test_readiness_names_what_failed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"  # never migrated
    with TestClient(create_app(make_settings(tmp_path, url, redis_url="redis://127.0.0.1:1/0"))) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and "schema is missing" in body["database"]
    assert body["broker"].startswith("error: ") and client.get("/healthz").status_code == 200


def test_prometheus_metrics(service: Service, acme: TenantClient) -> None:
    job = acme.create_job()
    acme.get(f"/v1/fine_tuning/jobs/{job['id']}")
    acme.get("/v1/nothing-here")
    text = service.client.get("/metrics").text
    assert 'sparsegrad_jobs{status="queued"} 1.0' in text and 'sparsegrad_jobs{status="running"} 0.0' in text
    assert "sparsegrad_queue_depth 1.0" in text
    assert 'sparsegrad_http_requests_total{method="GET",route="/v1/fine_tuning/jobs/{job_id}",status="200"} 1.0' in text
    assert 'route="/v1/files",status="200"' in text and 'route="unmatched",status="404"' in text
    assert "sparsegrad_http_request_duration_seconds_bucket" in text


def test_models(service: Service, acme: TenantClient) -> None:
    listing = acme.get("/v1/models").json()
    assert listing["object"] == "list"
    models = {m["id"]: m for m in listing["data"]}
    assert set(models) == {"minilm-l6", "smollm2-135m"}
    assert models["minilm-l6"]["architecture"] == "encoder" and "causal_lm" in models["smollm2-135m"]["tasks"]
    assert models["minilm-l6"]["object"] == "model" and isinstance(models["minilm-l6"]["created"], int)
    assert acme.get("/v1/models/smollm2-135m").json() == models["smollm2-135m"]
    assert acme.get("/v1/models/gpt-4o").status_code == 404
    assert service.anonymous().get("/v1/models").status_code == 401


def test_openapi_documents_the_defaults(service: Service) -> None:
    assert service.client.get("/docs").status_code == 200
    document = service.client.get("/openapi.json").json()
    assert document["info"]["title"] == "SparseGrad fine-tuning service" and document["info"]["version"]
    schemas = document["components"]["schemas"]
    assert "Default 0.01" in schemas["SparseGradParams"]["properties"]["density"]["description"]
    assert "Default 3" in schemas["Hyperparameters"]["properties"]["n_epochs"]["description"]
    assert not any(path.startswith("/internal") for path in document["paths"])
    assert "ApiKey" in document["components"]["securitySchemes"]


def test_error_shape_of_unknown_routes_methods_and_crashes(service: Service) -> None:
    r = service.client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"] == {
        "message": "Invalid URL (GET /v2/nothing).", "type": "invalid_request_error", "param": None,
        "code": "unknown_url"}
    r = service.client.delete("/v1/models")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed" and "allow" in r.headers

    def boom() -> None:
        raise RuntimeError("secret internals")

    service.app.add_api_route("/boom", boom)
    with TestClient(service.app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "secret" not in r.text


def test_importing_the_app_touches_no_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSEGRAD_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"SPARSEGRAD_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing",
                "SPARSEGRAD_DATA_DIR": str(tmp_path / "data")})
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", "import api.main; print(api.main.app.title)"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SparseGrad" in result.stdout and time.monotonic() - started < 60
    assert not (tmp_path / "data").exists()


def test_the_reaper_thread_requeues_a_job_whose_worker_died(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    for service in start_service(tmp_path, url, run_reaper=True, reaper_interval_s=0.1, heartbeat_timeout_s=1):
        acme = service.as_tenant("acme")
        job = acme.create_job()
        with session_scope(url) as session:
            row = session.get(Job, job["id"])
            assert row is not None
            row.status, row.attempts, row.worker_id = "running", 1, "w1"
            row.heartbeat_at = utcnow() - timedelta(seconds=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with session_scope(url) as session:
                status = session.scalar(select(Job.status).where(Job.id == job["id"]))
            if status == "queued":
                break
            time.sleep(0.05)
        assert status == "queued"
        messages = [e["message"] for e in acme.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]]
        assert "stopped responding" in messages[0]
