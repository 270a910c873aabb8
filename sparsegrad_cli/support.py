"""What every ``sparsegrad`` command shares: consoles, the ``--url``/``--api-key``/``--data-dir`` options,
settings and client construction, error reporting with exit codes, and transfer progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sparsegrad_client import ApiError, DownloadError, SparseGradClient

if TYPE_CHECKING:
    from sparsegrad_service.settings import Settings

console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOption = Annotated[str, typer.Option("--url", envvar="SPARSEGRAD_URL", help="Service base URL.")]
ApiKeyOption = Annotated[str | None, typer.Option(
    "--api-key", envvar="SPARSEGRAD_API_KEY", show_default=False,
    help="API key (create one with `sparsegrad keys create --tenant NAME`).")]
DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="SPARSEGRAD_DATA_DIR", show_default=False,
    help="Embedded data folder (SQLite database, broker, artifacts, logs); default ./sparsegrad-data.")]

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` in red on stderr; returns the ``typer.Exit`` to raise."""
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def load_settings(data_dir: Path | None) -> Settings:
    """Service settings from the environment, with ``--data-dir`` overriding ``SPARSEGRAD_DATA_DIR``."""
    from pydantic import ValidationError

    from sparsegrad_service.settings import Settings

    try:
        settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    except ValidationError as exc:
        messages = "; ".join(str(e.get("msg", e)) for e in exc.errors())
        raise fail(f"invalid service settings: {messages}", 2) from exc
    if settings.database_url is None:  # SQLite needs the folder of its file
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return settings


def safe_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def make_client(url: str, api_key: str | None) -> SparseGradClient:
    if not api_key:
        raise fail("no API key: pass --api-key or set SPARSEGRAD_API_KEY "
                   "(create one with `sparsegrad keys create --tenant NAME`)", 2)
    return SparseGradClient(url, api_key)


def api_command(func: Callable[P, R]) -> Callable[P, R]:
    """Turn client errors into a red message and an exit code: 2 for a request the API refused as
    invalid, 1 for anything else (not found, unreachable service, corrupt download)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ApiError as exc:
            raise fail(exc.message, 2 if exc.is_validation else 1) from exc
        except httpx.ConnectError as exc:
            url = getattr(exc.request, "url", None) if _has_request(exc) else None
            where = f" at {url.scheme}://{url.netloc.decode()}" if url is not None else ""
            raise fail(f"cannot reach the service{where}: is it running (`sparsegrad up`)? ({exc})") from exc
        except (httpx.HTTPError, DownloadError) as exc:
            raise fail(str(exc) or type(exc).__name__) from exc

    return wrapper


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True


@contextmanager
def transfer_progress(label: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A byte progress bar; yields the ``(done, total)`` callback the client calls."""
    if not enabled:
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)

        def update(done: int, size: int | None) -> None:
            progress.update(task, completed=done, total=size if size is not None else total)

        yield update


def format_time(value: Any) -> str:
    """Unix seconds (or an ISO string) as local ``YYYY-MM-DD HH:MM:SS``; '' when missing."""
    if value in (None, ""):
        return ""
    try:
        when = datetime.fromtimestamp(float(value)) if not isinstance(value, str) or value.isdigit() else \
            datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone()
    except (TypeError, ValueError):
        return str(value)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def format_age(seconds: float) -> str:
    """An age in its largest whole unit, as ``kubectl`` shows one: ``45s``, ``12m``, ``5h``, ``3d``."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def to_timestamp(value: Any) -> float | None:
    """Unix seconds from an int/float or ISO string (None when missing or unreadable)."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
