"""Where the test suite finds its servers: the local PostgreSQL and Redis (overridable by environment), a
free port for a server it starts, and waiting until that server (or any condition) is ready."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

PG_SERVER = os.environ.get("SPARSEGRAD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
# The server only: a database number given with it (``redis://host:6379/15``) is dropped, the suite picks its own.
_REDIS_HOST = re.sub(r"/\d*$", "", os.environ.get("SPARSEGRAD_TEST_REDIS", "redis://127.0.0.1:6379"))


def _xdist_worker_index() -> int:
    """pytest-xdist's worker number (``gw1`` -> 1), 0 when the suite runs in one process."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if index > 7:
        raise RuntimeError("at most 8 test processes (pytest -n 8): each owns two of Redis's 16 databases")
    return index


# Each test process owns two Redis databases, counting down from 15: one that function-scoped fixtures flush
# (REDIS_SERVER) and one for session-scoped deployments (REDIS_SESSION_SERVER), so parallel workers never
# flush each other's queues.
REDIS_SERVER = f"{_REDIS_HOST}/{15 - 2 * _xdist_worker_index()}"
REDIS_SESSION_SERVER = f"{_REDIS_HOST}/{14 - 2 * _xdist_worker_index()}"

T = TypeVar("T")


def admin_engine() -> Any:
    """An AUTOCOMMIT engine on the server's ``postgres`` database (to create and drop test databases)."""
    from sqlalchemy import create_engine

    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HasLogTail(Protocol):
    def log_tail(self) -> str: ...


Logs = HasLogTail | Path | None
"""Where a failure finds the servers' output: a deployment (``log_tail()``), a log file, or nothing."""


def log_tail(logs: Logs) -> str:
    """The end of ``logs``, for a failure message."""
    if logs is None:
        return ""
    if isinstance(logs, Path):
        return logs.read_text(errors="replace")[-3000:] if logs.is_file() else ""
    return logs.log_tail()


def wait_for(predicate: Callable[[], T], timeout: float, what: str, logs: Logs = None, every: float = 0.2) -> T:
    """Poll ``predicate`` every ``every`` seconds until it returns something truthy, and return that; after
    ``timeout`` seconds fail with ``what``, the last value and the tail of ``logs``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last}\n{log_tail(logs)}")


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout: float, logs: Logs = None) -> None:
    """Return once ``{url}/readyz`` answers 200; fail at once if ``process`` (the server, when the test
    started it) exits, or after ``timeout`` seconds, with the tail of ``logs``."""
    import httpx

    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(logs)}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout, f"{url}/readyz to answer 200")
    except AssertionError:
        raise RuntimeError(f"server not ready after {timeout} s:\n{log_tail(logs)}") from None
