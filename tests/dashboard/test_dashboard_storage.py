"""The jobs page shows the tenant's storage (``GET /v1/storage``) and follows it as files come and go."""

from __future__ import annotations

import json
from typing import Any

import pytest
from service.conftest import Deployment

from .test_dashboard_main import sign_in

pytestmark = pytest.mark.timeout(180)

EMPTY = "Storage: 0 B (files 0 B · checkpoints 0 B · artifacts 0 B)"


def test_the_jobs_page_shows_the_storage_and_follows_deletes(page: Any, dashboard_deployment: Deployment) -> None:
    dep = dashboard_deployment
    key = dep.create_key("dash-storage")
    sign_in(page, dep, key)
    figure = page.locator("#storage-usage")
    figure.wait_for()
    page.wait_for_function("text => document.querySelector('#storage-usage').textContent === text", arg=EMPTY)

    data = "".join(json.dumps({"text": f"sentence {i} " * 40, "label": i % 2}) + "\n" for i in range(100)).encode()
    with dep.client(key) as client:
        file = client.post("/v1/files", files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}).json()
        expected = f"Storage: {len(data) / 1000:.1f} KB (files {len(data) / 1000:.1f} KB · checkpoints 0 B · artifacts 0 B)"
        page.wait_for_function("text => document.querySelector('#storage-usage').textContent === text",
                               arg=expected, timeout=15_000)
        assert client.delete(f"/v1/files/{file['id']}").status_code == 200
    page.wait_for_function("text => document.querySelector('#storage-usage').textContent === text", arg=EMPTY,
                           timeout=15_000)
