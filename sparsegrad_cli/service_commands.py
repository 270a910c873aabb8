"""Commands that operate the service on this machine: ``up`` (the embedded default in one foreground
command), ``migrate``, ``keys create|list|revoke``, ``worker`` (a training worker for any deployment) and
``inference`` (the inference server)."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sparsegrad_service.settings import DEFAULT_INFERENCE_PORT

from .support import DataDirOption, console, err_console, fail, load_settings, safe_url

keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys (they belong to a tenant).")


class LogMode(StrEnum):
    console = "console"
    files = "files"


def _describe(settings: object) -> str:
    from sparsegrad_service.settings import Settings

    assert isinstance(settings, Settings)
    broker = "Redis" if settings.redis_url else f"filesystem broker in {settings.broker_dir}"
    store = f"via the API at {settings.api_url}" if settings.api_url else str(settings.artifact_root)
    return f"database {safe_url(settings.sql_url)}; {broker}; artifacts {store}"


def _echo_log_line(line: str) -> None:
    console.print(escape(line), style="dim", highlight=False, soft_wrap=True)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def up(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface the API listens on (0.0.0.0: every interface).")] = "127.0.0.1",
    data_dir: DataDirOption = None,
    workers: Annotated[int, typer.Option(min=0, max=64, help="Training worker processes on this machine.")] = 1,
    api_workers: Annotated[int, typer.Option(min=1, max=64, help="API processes (uvicorn workers); more serve "
                                             "more requests per second on a multi-core machine.")] = 1,
    logs: Annotated[LogMode, typer.Option(
        help="console: follow the processes' logs here (prefixed); files: only write data-dir/logs/*.log.")] = LogMode.console,
    inference: Annotated[bool, typer.Option(
        help="Start the inference server (transformers engine, CPU) for chat completions, completions and predict; "
             "with --no-inference those routes answer 503 unless SPARSEGRAD_INFERENCE_URL names a server.")] = True,
    inference_port: Annotated[int | None, typer.Option(help="The inference server's port (default: --port + 1).")] = None,
) -> None:
    """Run the service in the foreground: migrations, the API (uvicorn), training workers (Celery) and the
    inference server.

    With no DATABASE_URL/REDIS_URL this is the embedded default (SQLite, filesystem broker, local
    artifacts under --data-dir); with them, the same processes use PostgreSQL and Redis. Ctrl-C stops
    everything.
    """
    from .launcher import EmbeddedService, ServiceError, run_foreground

    settings = load_settings(data_dir)
    echo = _echo_log_line if logs == LogMode.console else None
    start_inference = inference and not settings.inference_url  # a configured server is used as it is
    service = EmbeddedService(settings, host=host, port=port, workers=workers, api_workers=api_workers,
                              inference_port=(inference_port or port + 1) if start_inference else None, echo=echo)
    data = Path(settings.data_dir).resolve()

    def ready() -> None:
        url = service.url
        console.print(f"\n[bold green]SparseGrad service ready[/] ({escape(_describe(settings))})")
        console.print(f"  Dashboard  {url}/\n  API        {url}/v1\n  Docs       {url}/docs")
        if service.inference_url or settings.inference_url:
            console.print(f"  Inference  {service.inference_url or settings.inference_url} (through the API: "
                          f"OpenAI(base_url=\"{url}/v1\"))")
        logs = ", ".join(child.log_path.name for child in service.children)
        console.print(f"  Logs       {escape(str(service.log_dir))}/ ({logs})")
        console.print(f"Create an API key: [bold]sparsegrad keys create --tenant NAME --data-dir {escape(str(data))}[/]")
        console.print("Press Ctrl-C to stop the API and the workers.\n")

    console.print(f"starting the SparseGrad service on {service.url} (data in {escape(str(data))})")
    try:
        code = run_foreground(service, ready)
    except ServiceError as exc:
        raise fail(str(exc)) from exc
    console.print("service stopped")
    raise typer.Exit(code)


def inference(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_INFERENCE_PORT,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    data_dir: DataDirOption = None,
    backend: Annotated[str | None, typer.Option(
        help="transformers (CPU or GPU) or vllm (GPU, `pip install vllm`); default SPARSEGRAD_INFERENCE_BACKEND.")] = None,
    print_command: Annotated[bool, typer.Option(hidden=True, help="Print the command instead of running it.")] = False,
) -> None:
    """Run the inference server on this machine (replaces this process): the API forwards chat completions,
    completions and predictions to it.

    Point the API at it with SPARSEGRAD_INFERENCE_URL=http://HOST:PORT; both need the same SPARSEGRAD_WORKER_TOKEN
    and base models (SPARSEGRAD_MODELS). It reads fine-tuned models from the artifact directory, or through the API
    with SPARSEGRAD_API_URL as remote workers do.
    """
    from .launcher import inference_command, service_env

    if backend is not None and backend not in ("transformers", "vllm"):
        raise fail(f"--backend must be transformers or vllm (got {backend!r})")
    settings = load_settings(data_dir)
    command = inference_command(host, port, backend)
    if print_command:
        typer.echo(" ".join(command))
        return
    err_console.print(f"starting the inference server on {host}:{port} ({escape(_describe(settings))})",
                      highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, service_env(settings))


def migrate(data_dir: DataDirOption = None) -> None:
    """Create or upgrade the database schema (Alembic upgrade head)."""
    from migrations import upgrade

    settings = load_settings(data_dir)
    try:
        upgrade(settings.sql_url)
    except Exception as exc:
        raise fail(f"migration of {safe_url(settings.sql_url)} failed: {exc}") from exc
    console.print(f"database {escape(safe_url(settings.sql_url))} is at the latest schema revision")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant (organization) the key belongs to; created if new.")],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an API key; it is printed once, alone on the last line."""
    from migrations import upgrade
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.keys import create_api_key

    settings = load_settings(data_dir)
    upgrade(settings.sql_url)
    try:
        with session_scope(settings.sql_url) as session:
            row, key = create_api_key(session, tenant, name)
            key_id, prefix = row.id, row.prefix
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    console.print(f"Created API key {key_id} ({prefix}…) for tenant {escape(tenant)!r} in "
                  f"{escape(safe_url(settings.sql_url))}; it is shown only once:", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """List API keys (ids and prefixes; keys themselves are never stored)."""
    from sqlalchemy import select

    from migrations import upgrade
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.models import ApiKey, Tenant

    settings = load_settings(data_dir)
    upgrade(settings.sql_url)
    table = Table("id", "prefix", "tenant", "name", "created", "last used", "revoked")
    with session_scope(settings.sql_url) as session:
        query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
        if tenant is not None:
            query = query.where(Tenant.name == tenant)
        for key, tenant_name in session.execute(query).all():
            table.add_row(key.id, key.prefix, tenant_name, key.name or "", _when(key.created_at),
                          _when(key.last_used_at), _when(key.revoked_at))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id_or_prefix: Annotated[str, typer.Argument(help="Key id (key-…) or the prefix shown by `keys list`.")],
    data_dir: DataDirOption = None,
) -> None:
    """Revoke an API key: requests with it are refused from now on."""
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.keys import revoke_api_key

    settings = load_settings(data_dir)
    with session_scope(settings.sql_url) as session:
        count = revoke_api_key(session, key_id_or_prefix)
    if not count:
        raise fail(f"no API key with id or prefix {key_id_or_prefix!r}")
    console.print(f"revoked {count} key{'s' if count > 1 else ''}")


def worker(
    data_dir: DataDirOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs at once (keep 1: one job per GPU).")] = 1,
    queue: Annotated[str | None, typer.Option(help="Queue to consume (default SPARSEGRAD_TRAINING_QUEUE).")] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default worker@<host>).")] = None,
    print_command: Annotated[bool, typer.Option(hidden=True, help="Print the command instead of running it.")] = False,
) -> None:
    """Run a training worker on this machine (replaces this process with a Celery worker).

    A worker on another machine needs DATABASE_URL and REDIS_URL (the same as the API's), and either the
    API's artifact directory (SPARSEGRAD_ARTIFACT_DIR on a shared disk) or SPARSEGRAD_API_URL +
    SPARSEGRAD_WORKER_TOKEN to read uploads and deliver checkpoints and artifacts through the API.
    """
    from .launcher import celery_worker_command, service_env, training_worker_env

    settings = load_settings(data_dir)
    command = celery_worker_command(queue or settings.training_queue, hostname, concurrency)
    env = training_worker_env(settings, service_env(settings))
    if print_command:
        typer.echo(" ".join(command))
        return
    if not settings.redis_url and not settings.database_url:
        err_console.print("note: embedded setup (SQLite + filesystem broker): only processes on this machine "
                          "sharing --data-dir see the jobs; set DATABASE_URL and REDIS_URL for remote workers")
    err_console.print(f"starting a worker: {escape(_describe(settings))}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)
