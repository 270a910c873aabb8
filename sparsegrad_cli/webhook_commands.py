"""``sparsegrad webhooks``: register, list, test and delete the tenant's webhook endpoints and read their
deliveries over REST, and run a webhook worker on this machine (``sparsegrad up`` starts one itself)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from .launcher import WEBHOOK_WORKER_THREADS, service_env, webhook_worker_command
from .support import (
    DEFAULT_URL,
    ApiKeyOption,
    DataDirOption,
    UrlOption,
    api_command,
    console,
    err_console,
    format_time,
    load_settings,
    make_client,
)

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints: where the service POSTs your jobs' "
                                                      "succeeded, failed and cancelled events, signed.")
WebhookId = Annotated[str, typer.Argument(help="Webhook endpoint id (wh-…).")]


@webhooks_app.command("create")
@api_command
def create(
    target: Annotated[str, typer.Argument(metavar="URL", help="The https:// URL to POST events to.")],
    event: Annotated[list[str] | None, typer.Option(help="An event type to send (repeat it); default: all.")] = None,
    description: Annotated[str | None, typer.Option(help="A label.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Register a URL; its signing secret is printed once, alone on the last line."""
    with make_client(url, api_key) as client:
        created = client.webhooks.create(target, event or None, description)
    console.print(f"webhook {created.id} → {escape(created.url)} ({', '.join(created.events or ['all events'])})",
                  highlight=False)
    console.print("signing secret (shown only now; verify deliveries with sparsegrad_client.verify_webhook):")
    typer.echo(created.secret)


@webhooks_app.command("list")
@api_command
def list_(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """List your webhook endpoints."""
    with make_client(url, api_key) as client:
        page = client.webhooks.list()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True)
    for column in ("url", "events", "created"):
        table.add_column(column, overflow="fold")
    for hook in page.data:
        table.add_row(hook.id, hook.url, ", ".join(hook.events or ["all"]), format_time(hook.created_at))
    console.print(table)


@webhooks_app.command("delete")
@api_command
def delete(webhook_id: WebhookId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """Delete an endpoint; its pending deliveries are never sent."""
    with make_client(url, api_key) as client:
        client.webhooks.delete(webhook_id)
    console.print(f"deleted webhook {webhook_id}", highlight=False)


@webhooks_app.command("test")
@api_command
def test(webhook_id: WebhookId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """Send a webhook.test event to an endpoint (see it arrive with `sparsegrad webhooks deliveries ID`)."""
    with make_client(url, api_key) as client:
        delivery = client.webhooks.test(webhook_id)
    console.print(f"queued {delivery.event_type} event {delivery.event_id} (delivery {delivery.id})", highlight=False)


@webhooks_app.command("deliveries")
@api_command
def deliveries(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many of the newest deliveries.")] = 20,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """An endpoint's newest deliveries and their attempts (status code or error of each)."""
    with make_client(url, api_key) as client:
        page = client.webhooks.deliveries(webhook_id, limit=limit)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("created", "type", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("attempts", overflow="fold")
    for d in page.data:
        tries = " ".join(str(a.status_code or a.error) for a in d.attempts)
        table.add_row(format_time(d.created_at), d.event_type, d.status, tries)
    console.print(table)


@webhooks_app.command("worker")
def worker(
    data_dir: DataDirOption = None,
    threads: Annotated[int, typer.Option(min=1, help="Deliveries at once.")] = WEBHOOK_WORKER_THREADS,
    print_command: Annotated[bool, typer.Option(hidden=True, help="Print the command instead of running it.")] = False,
) -> None:
    """Run a webhook worker on this machine (replaces this process with a Celery worker on the webhook queue).
    It needs the API's DATABASE_URL and REDIS_URL; `sparsegrad up` already runs one."""
    settings = load_settings(data_dir)
    command = webhook_worker_command(settings.webhook_queue, None, threads)
    if print_command:
        typer.echo(" ".join(command))
        return
    err_console.print(f"starting a webhook worker on queue {escape(settings.webhook_queue)}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, service_env(settings))
