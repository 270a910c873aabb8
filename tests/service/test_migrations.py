"""Alembic is the only way the schema changes: it upgrades an empty database, and the models match it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from migrations import alembic_config, upgrade
from sparsegrad_service.models import Base

TABLES = {"tenants", "api_keys", "files", "jobs", "job_events", "job_metrics", "job_checkpoints", "job_artifacts",
          "webhook_endpoints", "webhook_deliveries", "webhook_attempts"}


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_upgrade_an_empty_postgres_and_match_the_models(pg_url: str) -> None:
    upgrade(pg_url)
    engine = create_engine(pg_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()
    assert _diff(pg_url) == []
    upgrade(pg_url)  # idempotent


def test_migrations_downgrade_to_base_and_back(pg_url: str) -> None:
    upgrade(pg_url)
    command.downgrade(alembic_config(pg_url), "base")
    engine = create_engine(pg_url)
    assert not TABLES & set(inspect(engine).get_table_names())
    engine.dispose()
    upgrade(pg_url)
    assert _diff(pg_url) == []


def test_migrations_on_sqlite_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    assert _diff(url) == []
