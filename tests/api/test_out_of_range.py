"""Integers beyond what the database stores, in every cursor of the job routes: a 400 naming the parameter, never
a 500, on SQLite and PostgreSQL; the event stream refuses the same cursor in ``Last-Event-ID``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import TenantClient

from sparsegrad_service.schemas import JobCreate

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize(("path", "params", "headers", "param"), [
    ("events", {"after": f"ftevent-{HUGE}"}, {}, "after"),
    ("events", {"after": HUGE}, {}, "after"),
    ("events/stream", {}, {"Last-Event-ID": HUGE}, "Last-Event-ID"),
    ("events/stream", {"after": f"ftevent-{HUGE}"}, {}, "after"),
    ("metrics", {"after_step": HUGE}, {}, "after_step"),
    ("metrics", {"after_step": f"-{HUGE}"}, {}, "after_step"),
])
def test_an_out_of_range_cursor_is_a_400_naming_it(
    acme: TenantClient, path: str, params: dict[str, str], headers: dict[str, str], param: str
) -> None:
    job = acme.create_job()
    response = acme.get(f"/v1/fine_tuning/jobs/{job['id']}/{path}", params=params, headers=headers)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_the_largest_cursors_answer_an_empty_page(acme: TenantClient) -> None:
    job = acme.create_job()
    events = acme.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"after": f"ftevent-{2**63 - 1}", "order": "asc"})
    assert events.status_code == 200 and events.json()["data"] == []
    metrics = acme.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics", params={"after_step": 2**31 - 1})
    assert metrics.status_code == 200 and metrics.json()["data"] == []


def integer_fields(schema: dict[str, Any], root: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every integer field of a JSON schema (through ``$ref``, ``anyOf`` and nested objects)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if schema.get("type") == "integer" and path:
        yield path
    for option in schema.get("anyOf", []):
        yield from integer_fields(option, root, path)
    for name, sub in schema.get("properties", {}).items():
        yield from integer_fields(sub, root, (*path, name))


JOB_INTEGERS = sorted(set(integer_fields(JobCreate.model_json_schema(), JobCreate.model_json_schema())))


def nested(path: tuple[str, ...], value: object) -> dict[str, Any]:
    body: dict[str, Any] = {path[-1]: value}
    for name in reversed(path[:-1]):
        body = {name: body}
    return body


def test_the_job_contract_has_integer_fields_to_check() -> None:
    assert {("seed",), ("hyperparameters", "batch_size"), ("method", "sparsegrad", "calibration_steps")} <= set(
        JOB_INTEGERS), JOB_INTEGERS


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_out_of_range_integers_in_every_job_field_are_a_400_naming_it(acme: TenantClient) -> None:
    file_id = acme.upload_id()
    jobs_before = acme.get("/v1/fine_tuning/jobs").json()["data"]
    for path in JOB_INTEGERS:
        for value in (int(HUGE), -int(HUGE)):
            body: dict[str, Any] = {"model": "minilm-l6", "training_file": file_id, **nested(path, value)}
            if path[0] == "method":  # a method's options need the method's type
                body["method"] = {"type": path[1], **nested(path[1:], value)}
            response = acme.post("/v1/fine_tuning/jobs", json=body)
            assert response.status_code == 400, (path, value, response.text[:300])
            error = response.json()["error"]
            if error["param"] == "training_file":  # a column index past the file's columns: checked against it
                assert path[0] == "task" and "column index" in error["message"], (path, error)
            else:
                assert error["param"] is not None and path[-1] in error["param"], (path, error)
    assert acme.get("/v1/fine_tuning/jobs").json()["data"] == jobs_before


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("route", ["/v1/files", "/v1/fine_tuning/jobs", "JOB/events", "JOB/checkpoints", "JOB/metrics"])
def test_out_of_range_page_sizes_are_a_400_naming_limit(acme: TenantClient, route: str) -> None:
    job = acme.create_job()
    url = route.replace("JOB", f"/v1/fine_tuning/jobs/{job['id']}")
    for value in (HUGE, f"-{HUGE}"):
        response = acme.get(url, params={"limit": value})
        assert response.status_code == 400, (url, value, response.text[:300])
        assert response.json()["error"]["param"] == "limit"
