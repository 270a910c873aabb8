"""Integers beyond what the database stores, in every cursor of the job routes: a 400 naming the parameter, never
a 500, on SQLite and PostgreSQL; the event stream refuses the same cursor in ``Last-Event-ID``."""

from __future__ import annotations

import pytest
from api_harness import TenantClient

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
