"""``sparsegrad submit``: the job request is built from the options and checked (the model against the
service's list, every setting against the job request schema) before any file is uploaded; the data files
are uploaded and the job created; when the service refuses the job, the uploads are deleted again. Refusals
name the command's own options (``--no-header``, ``--lr``), never the API's fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from sparsegrad_client import ApiError, SparseGradClient
from sparsegrad_contract.defaults import (
    DEFAULT_METHOD,
    GRADIENT_CHECKPOINTING,
    JOB_RECALIBRATE_EVERY,
    Selection,
    Setting,
)
from sparsegrad_contract.defaults import MethodType as Method
from sparsegrad_data import TaskType as Task
from sparsegrad_service.model_names import parse_model_name
from sparsegrad_service.schemas import JobCreate

from .job_commands import upload, watch_until_stopped
from .support import DEFAULT_URL, ApiKeyOption, UrlOption, api_command, console, fail, make_client
from .watch import describe_outcome

UPLOAD_FIELDS = {
    "task": "task", "text_column": "text_column", "text_pair_column": "text_pair_column",
    "label_column": "label_column", "messages_column": "messages_column", "prompt_column": "prompt_column",
    "completion_column": "completion_column", "has_header": "no_header",
}
"""Each field of the upload form → the ``submit`` parameter that sets it."""
JOB_FIELDS = {
    "model": "model", "training_file": "train", "validation_file": "eval_file",
    **{f"task.{'type' if field == 'task' else field}": name for field, name in UPLOAD_FIELDS.items()},
    "method.type": "method", "method.setting": "setting",
    "method.sparsegrad.density": "density", "method.sparsegrad.calibration_steps": "calibration_steps",
    "method.sparsegrad.selection": "selection", "method.sparsegrad.recalibrate_every": "recalibrate_every",
    "method.lora.rank": "lora_rank", "method.meprop.density": "density",
    "hyperparameters.n_epochs": "epochs", "hyperparameters.max_steps": "max_steps",
    "hyperparameters.batch_size": "batch_size", "hyperparameters.learning_rate": "lr",
    "hyperparameters.max_seq_length": "max_seq_length", "hyperparameters.checkpoint_every": "checkpoint_every",
    "hyperparameters.gradient_checkpointing": "gradient_checkpointing",
    "seed": "seed", "suffix": "suffix", "merge_model": "merge",
}
"""Each field of the job request → the ``submit`` parameter that sets it (``method.<m>.*`` only for the
chosen method). The request is built from this table, and refusals are translated with it."""
_PENDING_FILE = "file-pending-upload"


def _choices(enum: type[Any]) -> str:
    names = [member.value for member in enum]
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def _column(value: str | None) -> str | int | None:
    """A column name, or a 0-based index when the value is all digits."""
    return int(value) if value is not None and value.isdigit() else value


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        body = body.setdefault(key, {})
    body[last] = value


def job_request(values: dict[str, Any]) -> dict[str, Any]:
    """The job request (without its files) from the parameters' request values (None: not given)."""
    method = values["method"]
    body: dict[str, Any] = {}
    for path, name in JOB_FIELDS.items():
        parts = path.split(".")
        if name in ("train", "eval_file") or values.get(name) is None:
            continue
        if parts[0] == "method" and len(parts) == 3 and parts[1] != method:
            continue
        _set(body, path, values[name])
    return body


class OptionNames:
    """The ``submit`` command's option names, to say a refusal in them instead of the API's field names."""

    def __init__(self, command: Any) -> None:
        by_parameter = {p.name: p.opts[0] for p in command.params if p.param_type_name == "option"}
        self.of: dict[str, str] = {field: by_parameter[name] for table in (UPLOAD_FIELDS, JOB_FIELDS)
                                   for field, name in table.items()}
        self.flags = {field for field, name in {**UPLOAD_FIELDS, **JOB_FIELDS}.items() if name in ("no_header", "merge")}
        fields = sorted(self.of, key=len, reverse=True)  # task.text_column before text_column
        self._pattern = re.compile(r"(?<![\w.\-])'?(" + "|".join(map(re.escape, fields)) + r")'?(=(?:'[^']*'|\w+))?"
                                   r"(?![\w])")

    def say(self, message: str) -> str:
        """``message`` with each API field (quoted, ``field=value`` or a dotted/underscored name) in option names."""

        def rename(match: re.Match[str]) -> str:
            field, value = match[1], match[2]
            quoted = match[0].startswith("'") and match[0].endswith("'")
            if not (quoted or value or "_" in field or "." in field):
                return match[0]  # a plain word ("model", "seed") in a sentence
            option = self.of[field]
            if value is None or field in self.flags:
                return option
            return f"{option} {value[1:]}"

        return self._pattern.sub(rename, message)


def check_request(client: SparseGradClient, body: dict[str, Any], names: OptionNames) -> None:
    """Refuse (exit 2) a model the service does not offer or a setting the job request schema refuses,
    before anything is uploaded."""
    listed = client.list_models().data  # base models, then the tenant's fine-tuned ones (continued training)
    name = parse_model_name(body["model"])
    if body["model"] not in {m.id for m in listed} and not (
            name is not None and name.step is not None and name.fine_tuned_model in {m.id for m in listed}):
        offered = [m.id for m in listed if m.parent is None]
        raise fail(f"{names.of['model']} {body['model']!r} is not offered by this service; choose one of "
                   f"{', '.join(offered)}, one of your fine-tuned models or a checkpoint of one "
                   "(`sparsegrad models`)", 2)
    try:
        JobCreate.model_validate({**body, "training_file": _PENDING_FILE})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        option = names.of.get(field, field)
        shown = repr(error.get("input"))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise fail(f"invalid {option} {shown}: {error['msg'].removeprefix('Value error, ')}", 2) from exc


def _discard(client: SparseGradClient, file_ids: list[str]) -> None:
    """Delete uploads no job uses (best effort: the refusal is what the user needs to read)."""
    for file_id in file_ids:
        try:
            client.delete_file(file_id)
        except Exception:  # a file that stays behind is listed by `files.list`
            continue


@api_command
def submit(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="A base model the service registers, or one of your fine-tuned models or "
                                            "their checkpoints to continue training (`sparsegrad models`).")],
    train: Annotated[Path, typer.Option("--train", exists=True, dir_okay=False, help="Training data (JSONL/CSV/TSV).")],
    eval_file: Annotated[Path | None, typer.Option("--eval", exists=True, dir_okay=False, help="Validation data.")] = None,
    method: Annotated[Method, typer.Option(metavar="<method>", help=f"How the MLP projections train: {_choices(Method)}.")] = DEFAULT_METHOD,
    setting: Annotated[Setting | None, typer.Option(metavar="<setting>", help="paper: non-MLP parameters train densely; peft: only the head.")] = None,
    density: Annotated[float | None, typer.Option(help="SparseGrad/MeProp share of entries updated per step.")] = None,
    calibration_steps: Annotated[int | None, typer.Option(help="SparseGrad calibration backward passes.")] = None,
    selection: Annotated[Selection | None, typer.Option(metavar="<selection>", help=f"SparseGrad's selection, {_choices(Selection)}: top-k every step, the calibration-time support, or top-k inside a leading block of the bases.")] = None,
    recalibrate_every: Annotated[int | None, typer.Option(help=f"SparseGrad dynamic selection: new bases every N steps; 0: never (default: {JOB_RECALIBRATE_EVERY} with dynamic selection, 0 otherwise).")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (default: as many parameters as SparseGrad).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (unless --max-steps).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    max_seq_length: Annotated[int | None, typer.Option(help="Tokens per row after truncation.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between resumable checkpoints.")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing",
        help="Recompute activations in the backward: much less activation memory, ~30% more compute. "
             f"Default: {'on' if GRADIENT_CHECKPOINTING else 'off'}.")] = False,
    task: Annotated[Task | None, typer.Option(metavar="<task>", help=f"{_choices(Task)}. Default: inferred from the data and the model.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column or key (name or 0-based index).")] = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Second-sentence column (pair tasks).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column or key.")] = None,
    messages_column: Annotated[str | None, typer.Option(help="Chat messages key (causal_lm JSONL).")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="Prompt key of prompt/completion JSONL (causal_lm).")] = None,
    completion_column: Annotated[str | None, typer.Option(help="Completion key of prompt/completion JSONL.")] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="CSV/TSV without a header row (columns are indices).")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of initialization and data order.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Added to the fine-tuned model's name.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also produce a merged model artifact.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job live after submitting it.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Resubmitting with the same key returns the same job.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Check the job, upload the data files, create the job and print its id (then follow it with --watch)."""
    values: dict[str, Any] = {
        "model": model, "method": method.value, "setting": setting.value if setting else None, "density": density,
        "calibration_steps": calibration_steps, "selection": selection.value if selection else None,
        "recalibrate_every": recalibrate_every, "lora_rank": lora_rank, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
        "max_seq_length": max_seq_length, "checkpoint_every": checkpoint_every,
        "gradient_checkpointing": True if gradient_checkpointing else None, "task": task.value if task else None,
        "text_column": _column(text_column), "text_pair_column": _column(text_pair_column),
        "label_column": _column(label_column), "messages_column": messages_column,
        "prompt_column": prompt_column, "completion_column": completion_column,
        "no_header": False if no_header else None, "seed": seed, "suffix": suffix, "merge": True if merge else None,
    }
    body = job_request(values)
    mapping = {field: values[name] for field, name in UPLOAD_FIELDS.items() if values[name] is not None}
    names = OptionNames(ctx.command)
    with make_client(url, api_key) as client:
        check_request(client, body, names)
        uploaded: list[str] = []
        try:
            for path in (train, eval_file):
                if path is not None:
                    uploaded.append(upload(client, path, mapping).id)
            job = client.create_job(model, uploaded[0], uploaded[1] if eval_file is not None else None,
                                    idempotency_key=idempotency_key,
                                    **{k: v for k, v in body.items() if k != "model"})
        except ApiError as exc:
            _discard(client, uploaded)
            raise fail(names.say(exc.message), 2 if exc.is_validation else 1) from exc
        _discard(client, [f for f in uploaded if f not in (job.training_file, job.validation_file)])  # a replay
        queue = job.queue_position
        where = f", position {queue} in the queue" if queue is not None else ""
        console.print(f"created job {job.id} ({job.status}{where}); follow it with "
                      f"`sparsegrad watch {job.id}`", highlight=False)
        if watch:
            _, code = describe_outcome(watch_until_stopped(client, job.id))
            raise typer.Exit(code)
    typer.echo(job.id)
