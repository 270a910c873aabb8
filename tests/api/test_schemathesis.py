"""Property-based tests of the whole public API from its own OpenAPI schema (schemathesis): with a valid
key, generated requests to every route never get a server error, and every response conforms to the
schema (status code, content type, body). Path parameters are replaced by the ids of a real file and
job half of the time, so the routes are exercised past their 404s."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_harness import Service, start_service
from hypothesis import HealthCheck, given, settings

from migrations import upgrade

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, str], str]]:
    folder: Path = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{folder / 'api.db'}"
    upgrade(url)
    for service in start_service(folder, url, rate_limit_per_minute=0):
        client = service.as_tenant("acme")
        job = client.create_job()
        ids = {"file_id": job["training_file"], "job_id": job["id"]}
        assert client.key is not None
        yield service, ids, client.key


def _operations(service: Service) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", service.app)
    return [result.ok() for result in schema.get_all_operations()
            if not result.ok().path.startswith("/internal")]


def test_no_server_errors_and_responses_match_the_schema(live: tuple[Service, dict[str, str], str]) -> None:
    service, ids, key = live
    pick = random.Random(0)
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    operations = _operations(service)
    assert len(operations) >= 20

    for operation in operations:
        @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            for name in list(case.path_parameters or {}):
                if name in ids and pick.random() < 0.5:
                    case.path_parameters[name] = ids[name]
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=checks)

        run()
