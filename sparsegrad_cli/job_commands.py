"""Commands that talk to a running service over REST: ``jobs`` (list, show, delete), ``watch``, ``download``,
``cancel``/``pause``/``resume`` and ``models``, and the upload and watch steps ``submit`` shares."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparsegrad_client import SparseGradClient
from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.schemas import ArtifactPublic, FileObject, JobPublic

from .support import (
    DEFAULT_URL,
    ApiKeyOption,
    UrlOption,
    api_command,
    console,
    fail,
    format_age,
    make_client,
    transfer_progress,
)
from .watch import JobWatcher, describe_outcome

jobs_app = typer.Typer(help="List jobs (`sparsegrad jobs`), show one (`sparsegrad jobs show ID`) or delete a "
                            "finished one (`sparsegrad jobs delete ID`).")
LARGE_UPLOAD = 1024 * 1024


def upload(client: SparseGradClient, path: Path, mapping: dict[str, Any], out: Console = console) -> FileObject:
    """Upload one dataset file (a progress bar when it is large) and print what the service found."""
    size = path.stat().st_size
    with transfer_progress(f"uploading {path.name}", size, enabled=size > LARGE_UPLOAD) as progress:
        file = client.upload_file(path, progress=progress, **mapping)
    out.print(f"uploaded {escape(path.name)} → {file.id} ({file.format}, {file.num_examples} examples)",
              highlight=False)
    return file


def watch_until_stopped(client: SparseGradClient, job_id: str, out: Console = console) -> JobPublic:
    """Follow the job live, print its outcome, and return the final job object."""
    final = JobWatcher(client, job_id, out).run()
    message, _ = describe_outcome(final)
    out.print(message, highlight=False)
    return final


def _request_merged_model(client: SparseGradClient, job_id: str, out: Console, timeout_s: float = 3600) -> list[ArtifactPublic]:
    """Ask a worker to merge the job's adapter into its base model and wait for the artifact."""
    latest = client.list_events(job_id, limit=1).data
    newest = latest[0].id if latest else None
    client.request_merge(job_id)
    deadline = time.monotonic() + timeout_s
    with out.status(f"a worker is merging the adapter of {job_id} into its base model"):
        while time.monotonic() < deadline:
            found = [a for a in client.list_artifacts(job_id).data if a.kind == "merged_model"]
            if found:
                return found
            for event in client.list_events(job_id, limit=20).data:  # newest first; stop at what was there before
                if event.id == newest:
                    break
                if event.type == "error" and event.message.startswith("Merging the model failed"):
                    raise fail(event.message)
            time.sleep(2.0)
    raise fail(f"no merged model for {job_id} after {timeout_s:.0f} s; is a worker running?")


def download_artifact_of(
    client: SparseGradClient, job_id: str, kind: str, out_dir: Path | None, out: Console = console
) -> Path:
    """Download a job's artifact of ``kind``; archives are unpacked (safely) into ``out_dir`` (default
    ``./<job>-<kind>``), a metrics CSV is saved into ``out_dir`` (default ``.``). Returns the path."""
    from sparsegrad_service.store import unpack_archive

    artifacts = client.list_artifacts(job_id).data
    found = [a for a in artifacts if a.kind == kind]
    if not found and kind == "merged_model" and any(a.kind == "adapter" for a in artifacts):
        found = _request_merged_model(client, job_id, out)
    if not found:
        kinds = ", ".join(sorted({a.kind for a in artifacts})) or "none yet"
        raise fail(f"job {job_id} has no {kind} artifact; available: {kinds}")
    artifact = found[0]
    archive = kind != "metrics"
    target = out_dir if out_dir is not None else (Path(f"{job_id}-{kind}") if archive else Path("."))
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp, \
            transfer_progress(f"downloading {kind}", artifact.bytes) as progress:
        path = client.download_artifact(artifact.id, Path(tmp), progress, expected_sha256=artifact.sha256,
                                        expected_bytes=artifact.bytes)
        if archive:
            unpack_archive(path, target)
            result = target
        else:
            result = target / path.name
            shutil.move(str(path), result)
    out.print(f"{kind} of {job_id} ({artifact.bytes:,} bytes, sha256 verified) → {escape(str(result))}",
              highlight=False)
    return result


@jobs_app.callback(invoke_without_command=True)
@api_command
def jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only jobs with this status (queued, running, succeeded...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many of the newest jobs.")] = 20,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List your newest jobs (a running job shows its phase as its status; age: since it was created)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"url": url, "api_key": api_key}
        return
    with make_client(url, api_key) as client:
        page = client.list_jobs(status=status, limit=limit)
    # Fits 80 columns with whole values; a longer status or model name wraps rather than being cut.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("id", no_wrap=True)
    table.add_column("status", overflow="fold")
    table.add_column("done", justify="right", no_wrap=True)
    for column in ("method", "model"):
        table.add_column(column, overflow="fold")
    table.add_column("age", justify="right", no_wrap=True)
    now = time.time()
    for job in page.data:
        shown_status = job.phase if job.status == "running" and job.phase else job.status
        table.add_row(job.id, shown_status, f"{100 * job.progress:.0f}%", str(job.method.get("type", "")),
                      job.model, format_age(now - job.created_at))
    console.print(table)
    if page.has_more:
        console.print("[dim]more jobs exist: raise --limit (at most 100) or filter with --status[/]")


@jobs_app.command("show")
@api_command
def jobs_show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-…).")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Print one job as JSON."""
    with _subcommand_client(ctx, url, api_key) as client:
        job = client.get_job(job_id)
    typer.echo(json.dumps(job.model_dump(mode="json"), indent=2))


@jobs_app.command("delete")
@api_command
def jobs_delete(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-…) of a succeeded, failed or cancelled job.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a finished job with its checkpoints, artifacts (its fine-tuned model too), events and metrics;
    its files stay."""
    with _subcommand_client(ctx, url, api_key) as client:
        client.delete_job(job_id)
    console.print(f"deleted job {job_id}", highlight=False)


def _subcommand_client(ctx: typer.Context, url: str, api_key: str | None) -> SparseGradClient:
    """The client of a `jobs` subcommand: its own --url/--api-key, else those given to `jobs`."""
    parent = ctx.obj or {}
    if url == DEFAULT_URL and parent.get("url"):
        url = parent["url"]
    return make_client(url, api_key or parent.get("api_key"))


@api_command
def watch(
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-…).")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Follow a job live (phase, step, loss, ETA, events) until it ends, also through pauses. Exit code:
    0 succeeded, 1 failed or cancelled, 130 on Ctrl-C (the job keeps running)."""
    with make_client(url, api_key) as client:
        try:
            final = watch_until_stopped(client, job_id)
        except KeyboardInterrupt:
            console.print(f"\nstopped watching; the job keeps running (`sparsegrad watch {job_id}` "
                          f"to follow it again, `sparsegrad cancel {job_id}` to stop it)")
            raise typer.Exit(130) from None
    raise typer.Exit(describe_outcome(final)[1])


@api_command
def download(
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-…).")],
    kind: Annotated[ArtifactKind, typer.Option(help="Which artifact.")] = ArtifactKind.adapter,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder to unpack or save into.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a job's adapter (unpacked into a folder `load_adapter` reads), merged model or metrics CSV."""
    with make_client(url, api_key) as client:
        download_artifact_of(client, job_id, kind.value, output)


def _control(action: str, job_id: str, url: str, api_key: str | None) -> None:
    with make_client(url, api_key) as client:
        change = {"cancel": client.cancel_job, "pause": client.pause_job, "resume": client.resume_job}[action]
        job = change(job_id)
    console.print(f"job {job.id}: {job.status}", highlight=False)


@api_command
def cancel(job_id: Annotated[str, typer.Argument(help="Job id.")], url: UrlOption = DEFAULT_URL,
           api_key: ApiKeyOption = None) -> None:
    """Cancel a job (a running job stops after its current step)."""
    _control("cancel", job_id, url, api_key)


@api_command
def pause(job_id: Annotated[str, typer.Argument(help="Job id.")], url: UrlOption = DEFAULT_URL,
          api_key: ApiKeyOption = None) -> None:
    """Pause a job: it checkpoints and stops; `resume` continues from there."""
    _control("pause", job_id, url, api_key)


@api_command
def resume(job_id: Annotated[str, typer.Argument(help="Job id.")], url: UrlOption = DEFAULT_URL,
           api_key: ApiKeyOption = None) -> None:
    """Resume a paused job from its last checkpoint."""
    _control("resume", job_id, url, api_key)


@api_command
def models(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """List the base models the service fine-tunes, then your fine-tuned models."""
    with make_client(url, api_key) as client:
        data = client.list_models().data
    table = Table("id", "owned by", "description")
    for model in data:
        table.add_row(model.id, model.owned_by, model.description)
    console.print(table)
