"""The workers' store routes: PUT/GET/DELETE objects with the worker token (what HttpArtifactStore does),
401 without it, 400 for keys that would leave the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from api_harness import WORKER_TOKEN, Service
from support.endpoints import free_port

from sparsegrad_service.store import HttpArtifactStore, StoreError


def test_put_get_delete_with_the_worker_token(service: Service) -> None:
    client, auth = service.client, {"Authorization": f"Bearer {WORKER_TOKEN}"}
    content = b"checkpoint bytes " * 100_000
    r = client.put("/internal/store/jobs/ftjob-1/checkpoints/step-00000010.tar.gz", content=iter([content[:5], content[5:]]),
                   headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"key": "jobs/ftjob-1/checkpoints/step-00000010.tar.gz", "bytes": len(content),
                        "sha256": hashlib.sha256(content).hexdigest()}
    assert (service.settings.artifact_root / "jobs/ftjob-1/checkpoints/step-00000010.tar.gz").read_bytes() == content
    r = client.get("/internal/store/jobs/ftjob-1/checkpoints/step-00000010.tar.gz", headers=auth)
    assert r.status_code == 200 and r.content == content
    assert client.delete("/internal/store/jobs/ftjob-1/checkpoints/step-00000010.tar.gz", headers=auth).status_code == 200
    r = client.get("/internal/store/jobs/ftjob-1/checkpoints/step-00000010.tar.gz", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_worker_token_is_required(service: Service) -> None:
    client = service.client
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {service.key('acme')}"}):
        for method in ("GET", "PUT", "DELETE"):
            r = client.request(method, "/internal/store/files/x/data", headers=headers, content=b"x")
            assert r.status_code == 401, (method, headers, r.text)
            assert r.json()["error"]["code"] == "invalid_worker_token"
    r = client.get("/internal/store/../secrets", headers={"Authorization": f"Bearer {WORKER_TOKEN}"})
    assert r.status_code in (400, 404)
    r = client.get("/internal/store/a/..hidden/x%5Cy", headers={"Authorization": f"Bearer {WORKER_TOKEN}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_key"


def test_http_artifact_store_round_trip(service: Service, tmp_path: Path) -> None:
    """The client side used by remote workers, against this app."""
    store = HttpArtifactStore("http://testserver", WORKER_TOKEN)
    store._client = service.client  # route its requests into the app (same httpx interface)
    store._client.headers["Authorization"] = f"Bearer {WORKER_TOKEN}"
    src = tmp_path / "adapter.tar.gz"
    src.write_bytes(b"\x1f\x8b adapter" * 5000)
    stored = store.put_file("jobs/ftjob-2/artifacts/ftjob-2-adapter.tar.gz", src)
    assert stored.bytes == src.stat().st_size
    dest = store.fetch("jobs/ftjob-2/artifacts/ftjob-2-adapter.tar.gz", tmp_path / "back" / "a.tar.gz")
    assert dest.read_bytes() == src.read_bytes()
    try:
        store.fetch("jobs/ftjob-2/artifacts/missing", tmp_path / "m")
    except StoreError as exc:
        assert "404" in str(exc)
    else:
        raise AssertionError("fetching a missing object must fail")


def test_http_artifact_store_waits_for_an_api_that_is_restarting(service: Service, tmp_path: Path) -> None:
    """Nothing listens on the port for the first 1.5 s (an API restart); the upload is retried and lands
    once a real uvicorn serves the app there. Without an API at all it gives up with a clear error."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning",
                                          lifespan="off"))
    starter = threading.Timer(1.5, server.run)
    starter.start()
    try:
        store = HttpArtifactStore(f"http://127.0.0.1:{port}", WORKER_TOKEN, retry_s=30)
        started = time.monotonic()
        stored = store.put_bytes("jobs/ftjob-3/checkpoints/step-00000001.tar.gz", b"ckpt" * 1000)
        assert time.monotonic() - started >= 1.0
        assert stored.bytes == 4000
        assert (service.settings.artifact_root / stored.key).read_bytes() == b"ckpt" * 1000
        store.close()
    finally:
        server.should_exit = True
        starter.join(timeout=10)

    gone = HttpArtifactStore(f"http://127.0.0.1:{port}", WORKER_TOKEN, retry_s=1)
    try:
        gone.put_bytes("jobs/ftjob-3/checkpoints/x", b"x")
    except StoreError as exc:
        assert "gave up after 1 s" in str(exc)
    else:
        raise AssertionError("an unreachable API must fail the upload in the end")
