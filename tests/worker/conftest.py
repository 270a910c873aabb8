"""Fixtures of the worker tests: a migrated database (PostgreSQL or SQLite) and settings that register the
tiny BERT as ``tiny-bert``. Jobs are created with ``worker_helpers.create_job``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrations import upgrade
from sparsegrad_service.settings import Settings


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    return url


@pytest.fixture()
def pg_db(pg_url: str) -> str:
    upgrade(pg_url)
    return pg_url


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    return url


@pytest.fixture()
def make_settings(tmp_path: Path, tiny_model_dir: Path) -> Callable[..., Settings]:
    def make(url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data", "database_url": url, "models": {"tiny-bert": str(tiny_model_dir)},
            "heartbeat_interval_s": 0.2, "metrics_flush_s": 0.2, "stop_check_s": 0.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def sst2_bytes(sst2_jsonl: Path) -> bytes:
    return sst2_jsonl.read_bytes()
