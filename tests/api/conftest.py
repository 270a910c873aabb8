"""Fixtures of the API tests: an app on a real database for each test, SQLite in the test's folder or
(``db`` parametrized with ``postgres``) a fresh PostgreSQL database, migrated with Alembic. No worker runs:
jobs stay queued and their messages land in the filesystem broker folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import Service, TenantClient, start_service

from migrations import upgrade


@pytest.fixture(params=["sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database URL: SQLite by default; tests parametrize ``db`` with ``postgres`` as well."""
    url = str(request.getfixturevalue("pg_url")) if request.param == "postgres" else f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    return url


@pytest.fixture()
def service(tmp_path: Path, db: str) -> Iterator[Service]:
    yield from start_service(tmp_path, db)


@pytest.fixture()
def acme(service: Service) -> TenantClient:
    return service.as_tenant("acme")
