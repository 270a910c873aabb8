"""Commands that talk to a running service over REST: ``submit``, ``jobs`` (list, show), ``watch``,
``download``, ``cancel``/``pause``/``resume`` and ``models``."""

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
from sparsegrad_contract.defaults import DEFAULT_METHOD, Selection, Setting
from sparsegrad_contract.defaults import MethodType as Method
from sparsegrad_data import TaskType as Task
from sparsegrad_service.enums import ArtifactKind
from sparsegrad_service.schemas import ArtifactPublic, FileObject, JobPublic

from .support import (
    DEFAULT_URL,
    ApiKeyOption,
    UrlOption,
    api_command,
    console,
    fail,
    format_time,
    make_client,
    transfer_progress,
)
from .watch import JobWatcher, describe_outcome

jobs_app = typer.Typer(help="List jobs (`sparsegrad jobs`), or show one (`sparsegrad jobs show ID`).")
LARGE_UPLOAD = 1024 * 1024


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _column(value: str | None) -> str | int | None:
    """A column name, or a 0-based index when the value is all digits."""
    return int(value) if value is not None and value.isdigit() else value


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


@api_command
def submit(
    model: Annotated[str, typer.Option(help="A base model the service registers (`sparsegrad models`).")],
    train: Annotated[Path, typer.Option("--train", exists=True, dir_okay=False, help="Training data (JSONL/CSV/TSV).")],
    eval_file: Annotated[Path | None, typer.Option("--eval", exists=True, dir_okay=False, help="Validation data.")] = None,
    method: Annotated[Method, typer.Option(help="How the MLP projections train.")] = DEFAULT_METHOD,
    setting: Annotated[Setting | None, typer.Option(help="paper: non-MLP parameters train densely; peft: only the head.")] = None,
    density: Annotated[float | None, typer.Option(help="SparseGrad/MeProp share of entries updated per step.")] = None,
    calibration_steps: Annotated[int | None, typer.Option(help="SparseGrad calibration backward passes.")] = None,
    selection: Annotated[Selection | None, typer.Option(help="SparseGrad: dynamic top-k, a fixed support, or top-k inside a leading block of the bases.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (default: as many parameters as SparseGrad).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (unless --max-steps).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    max_seq_length: Annotated[int | None, typer.Option(help="Tokens per row after truncation.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between resumable checkpoints.")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in the backward: much less activation memory, ~30% more compute. "
             "Default: the service's (off).")] = None,
    task: Annotated[Task | None, typer.Option(help="Default: inferred from the data and the model.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column or key (name or 0-based index).")] = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Second-sentence column (pair tasks).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column or key.")] = None,
    messages_column: Annotated[str | None, typer.Option(help="Chat messages key (causal_lm JSONL).")] = None,
    no_header: Annotated[bool, typer.Option(help="CSV/TSV without a header row (columns are indices).")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of initialization and data order.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Added to the fine-tuned model's name.")] = None,
    merge: Annotated[bool, typer.Option(help="Also produce a merged model artifact.")] = False,
    watch: Annotated[bool, typer.Option(help="Follow the job live after submitting it.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Resubmitting with the same key returns the same job.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload the data files, create a fine-tuning job and print its id (then follow it with --watch)."""
    columns = _given(text_column=_column(text_column), text_pair_column=_column(text_pair_column),
                     label_column=_column(label_column), messages_column=messages_column)
    if no_header:
        columns["has_header"] = False
    task_body = _given(type=task.value if task else None, **columns)
    sub: dict[str, Any] = {}
    if method == Method.sparsegrad:
        sub = _given(density=density, calibration_steps=calibration_steps,
                     selection=selection.value if selection else None)
    elif method == Method.lora:
        sub = _given(rank=lora_rank)
    elif method == Method.meprop:
        sub = _given(density=density)
    method_body: dict[str, Any] = {"type": method.value, **_given(setting=setting.value if setting else None)}
    if sub:
        method_body[method.value] = sub
    hyperparameters = _given(n_epochs=epochs, max_steps=max_steps, batch_size=batch_size, learning_rate=lr,
                             max_seq_length=max_seq_length, checkpoint_every=checkpoint_every,
                             gradient_checkpointing=gradient_checkpointing)
    extra = _given(seed=seed, suffix=suffix, merge_model=True if merge else None)
    mapping = _given(task=task.value if task else None, **columns)
    with make_client(url, api_key) as client:
        train_file = upload(client, train, mapping)
        eval_id = upload(client, eval_file, mapping).id if eval_file is not None else None
        job = client.create_job(model, train_file.id, eval_id, task=task_body or None, method=method_body,
                                hyperparameters=hyperparameters or None, idempotency_key=idempotency_key, **extra)
        queue = job.queue_position
        where = f", position {queue} in the queue" if queue is not None else ""
        console.print(f"created job {job.id} ({job.status}{where}); follow it with "
                      f"`sparsegrad watch {job.id}`", highlight=False)
        if watch:
            _, code = describe_outcome(watch_until_stopped(client, job.id))
            raise typer.Exit(code)
    typer.echo(job.id)


@jobs_app.callback(invoke_without_command=True)
@api_command
def jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only jobs with this status (queued, running, succeeded...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many of the newest jobs.")] = 20,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List your newest jobs."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"url": url, "api_key": api_key}
        return
    with make_client(url, api_key) as client:
        page = client.list_jobs(status=status, limit=limit)
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    for column in ("status", "phase", "progress", "method", "model", "created"):
        table.add_column(column)
    for job in page.data:
        table.add_row(job.id, job.status, job.phase or "", f"{100 * job.progress:.0f}%",
                      str(job.method.get("type", "")), job.model, format_time(job.created_at))
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
    parent = ctx.obj or {}
    if url == DEFAULT_URL and parent.get("url"):
        url = parent["url"]
    with make_client(url, api_key or parent.get("api_key")) as client:
        job = client.get_job(job_id)
    typer.echo(json.dumps(job.model_dump(mode="json"), indent=2))


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
    """List the base models the service fine-tunes."""
    with make_client(url, api_key) as client:
        data = client.list_models().data
    table = Table("id", "owned by", "description")
    for model in data:
        table.add_row(model.id, model.owned_by, model.description)
    console.print(table)
