"""Where the test suite finds the local PostgreSQL and Redis servers (overridable by environment)."""

from __future__ import annotations

import os
from typing import Any

PG_SERVER = os.environ.get("SPARSEGRAD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("SPARSEGRAD_TEST_REDIS", "redis://127.0.0.1:6379/15")


def admin_engine() -> Any:
    """An AUTOCOMMIT engine on the server's ``postgres`` database (to create and drop test databases)."""
    from sqlalchemy import create_engine

    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", pool_pre_ping=True)
