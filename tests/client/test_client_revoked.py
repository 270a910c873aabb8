"""The typed client against the real API: a stream whose key is revoked ends with a 401 ``ApiError``
(the server's ``event: revoked``), not a silent reconnect loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsegrad_client import ApiError, SparseGradClient
from sparsegrad_service.db import session_scope
from sparsegrad_service.keys import create_api_key, revoke_api_key

from .conftest import LiveService


def test_a_stream_whose_key_is_revoked_raises_401(live_service: LiveService, tmp_path: Path) -> None:
    with session_scope(live_service.settings.sql_url) as session:
        _, key = create_api_key(session, "revoked-while-streaming")
    client = SparseGradClient(live_service.url, key)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(20)))
    job = client.create_job(model="minilm-l6", training_file=client.upload_file(data).id)
    seen = []
    with pytest.raises(ApiError) as raised:
        for event in client.stream_events(job.id):
            seen.append(event.message)
            with session_scope(live_service.settings.sql_url) as session:
                assert revoke_api_key(session, key[:10]) == 1
    assert raised.value.status == 401 and raised.value.code == "invalid_api_key"
    assert seen == ["Job created"]
