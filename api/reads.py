"""The API's one read path: ``await reads.all(statement, params)`` runs a SQLAlchemy ``Select`` of labelled
columns and returns its rows (attribute access by label). Writes use the request's ORM session (``SessionDep``).

On PostgreSQL the statement is compiled once by SQLAlchemy (bind and result types included) and run on a
``psycopg_pool`` connection in autocommit mode, on the event loop: no ORM session, no SQLAlchemy execution
layer and no thread: about half the CPU per statement of SQLAlchemy's asyncio engine (0.33 against 0.74 ms
for the GET-job statement), which the GET-job route's throughput depends on. Repeated statements are
prepared by psycopg after a few executions.
Elsewhere (SQLite, embedded) the statement runs on SQLAlchemy's engine in a worker thread.

A database that cannot be reached answers 503 ``database_unavailable``, like a failed write.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url

from sparsegrad_service.db import get_engine

from .errors import ApiError

log = logging.getLogger("sparsegrad.api.reads")

Params = Mapping[str, Any]
Query = Select[*tuple[Any, ...]]
"""A ``Select`` of labelled columns, any number of them."""


def database_unavailable() -> ApiError:
    return ApiError(503, "The database is unavailable; try again shortly.", type="server_error",
                    code="database_unavailable")


class Reads:
    """Runs read statements; see the module docstring. Rows have one attribute per selected label."""

    async def all(self, statement: Query, params: Params | None = None) -> list[Any]:
        raise NotImplementedError

    async def first(self, statement: Query, params: Params | None = None) -> Any | None:
        rows = await self.all(statement, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        """Close pooled connections (the object stays usable)."""


def reads_for(sql_url: str, pool_size: int) -> Reads:
    """PostgreSQL's pooled reads for a ``postgresql+psycopg`` URL, else reads on the engine in a thread."""
    if sql_url.startswith("postgresql+psycopg"):
        return PostgresReads(sql_url, pool_size)
    return EngineReads(sql_url)


class EngineReads(Reads):
    """Reads on the URL's SQLAlchemy engine (created on first use), in a worker thread (SQLite)."""

    def __init__(self, sql_url: str) -> None:
        self.sql_url = sql_url

    async def all(self, statement: Query, params: Params | None = None) -> list[Any]:
        return await anyio.to_thread.run_sync(self._all, statement, params)

    def _all(self, statement: Query, params: Params | None) -> list[Any]:
        with get_engine(self.sql_url).connect() as conn:
            return list(conn.execute(statement, dict(params or {})).all())


class _Compiled:
    """One statement compiled for psycopg: its SQL, its literal values and the type conversions of the
    parameters (all from the first call's expanded state), and its row type and result conversions (from the
    first result's column types)."""

    __slots__ = ("columns", "compiled", "converters", "dialect", "expanding", "fixed", "row", "sql", "to_db")

    def __init__(self, statement: Query, dialect: Dialect) -> None:
        self.compiled = statement.compile(dialect=dialect)
        self.expanding = bool(self.compiled.post_compile_params or self.compiled.literal_execute_params)
        """``IN (values)`` and the like: the SQL depends on the values, so it is expanded on every call."""
        self.dialect = dialect
        self.columns = list(statement.selected_columns)
        self.sql: str | None = None
        self.fixed: dict[str, Any] = {}
        """The statement's own values (``status = 'queued'``, ``LIMIT 10``), converted: a statement is immutable."""
        self.to_db: dict[str, Callable[[Any], Any]] = {}
        """The bind processor of each parameter whose type has one."""
        self.row: Any = None
        self.converters: list[tuple[int, Callable[[Any], Any]]] = []

    def query(self, params: Params) -> tuple[str, dict[str, Any]]:
        """The SQL and its parameters (the statement's own and ``params``), converted for the database."""
        if self.sql is not None:
            values = dict(self.fixed)
            for name, value in params.items():
                convert = self.to_db.get(name)
                values[name] = value if convert is None else convert(value)
            return self.sql, values
        state = self.compiled.construct_expanded_state(params)
        to_db: dict[str, Callable[[Any], Any]] = dict(state.processors)  # type: ignore[arg-type]
        values = {name: value if (convert := to_db.get(name)) is None else convert(value)
                  for name, value in state.parameters.items()}
        if not self.expanding:
            self.sql, self.to_db = state.statement, to_db
            self.fixed = {name: value for name, value in values.items() if name not in params}
        return state.statement, values

    def describe(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        """On the first result: its row type and the result processors of its column types (building the
        cursor's description costs more than the rest of a read, so it is read once)."""
        if self.row is None:
            description = cursor.description or []
            processors = [c.type.dialect_impl(self.dialect).result_processor(self.dialect, d.type_code)
                          for c, d in zip(self.columns, description, strict=True)]
            self.converters = [(i, f) for i, f in enumerate(processors) if f is not None]
            self.row = namedtuple("Row", [d.name for d in description], rename=True)  # type: ignore[misc]

    def rows(self, records: list[tuple[Any, ...]]) -> list[Any]:
        make = self.row._make
        if not self.converters:
            return [make(r) for r in records]
        rows = []
        for record in records:
            values = list(record)
            for i, convert in self.converters:
                values[i] = convert(values[i])
            rows.append(make(values))
        return rows


class PostgresReads(Reads):
    """Reads on a ``psycopg_pool`` pool opened on first use in the serving event loop (test clients run one
    loop per lifespan: a pool of another loop is replaced)."""

    def __init__(self, sql_url: str, size: int) -> None:
        self.conninfo = make_url(sql_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self.dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
        self.pool: AsyncConnectionPool | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._compiled: weakref.WeakKeyDictionary[Query, _Compiled] = weakref.WeakKeyDictionary()

    def compiled(self, statement: Query) -> _Compiled:
        """Compiled once per statement object: statements built once (the hot ones) are compiled once."""
        found = self._compiled.get(statement)
        if found is None:
            found = self._compiled[statement] = _Compiled(statement, self.dialect)
        return found

    async def _pool(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if self.pool is not None and self.loop is loop:
            return self.pool
        pool = AsyncConnectionPool(self.conninfo, min_size=min(4, self.size), max_size=self.size, open=False,
                                   timeout=30, kwargs={"autocommit": True, "row_factory": tuple_row})
        await pool.open()
        if self.pool is not None and self.loop is loop:  # another request opened one meanwhile
            await pool.close()
            return self.pool
        self.pool, self.loop = pool, loop
        return pool

    async def all(self, statement: Query, params: Params | None = None) -> list[Any]:
        compiled = self.compiled(statement)
        try:
            pool = await self._pool()
            async with pool.connection() as conn:
                cursor = await conn.execute(*compiled.query(params or {}))
                records = await cursor.fetchall()
                compiled.describe(cursor)
        except (psycopg.OperationalError, PoolTimeout, OSError) as exc:
            log.error("database read failed: %s", exc)
            raise database_unavailable() from exc
        return compiled.rows(records)

    async def close(self) -> None:
        if self.pool is not None and self.loop is asyncio.get_running_loop():
            await self.pool.close()
        self.pool = self.loop = None
