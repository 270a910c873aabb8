"""The ``sparsegrad`` command line: ``train`` a model on a dataset file, ``merge`` an adapter, run the ``demo``.

Everything runs offline: models come from local folders or the bundled aliases (``minilm-l6``,
``smollm2-135m``), data from local JSONL/CSV/TSV files. Data errors print every problem found with
its line and exit with code 2.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sparsegrad_contract import defaults
from sparsegrad_contract import demo as demo_recipe
from sparsegrad_contract.defaults import JOB_SELECTION, Scheduler, Selection, Setting
from sparsegrad_contract.defaults import MethodType as Method
from sparsegrad_data import (
    ColumnMapping,
    Dataset,
    DatasetError,
    TaskType,
    glue_mapping,
    load_dataset,
    sample_path,
)

from .config import SparseGradConfig
from .methods import LoraOptions, MethodSpec, PreparedModel
from .recipe import DataTokenizationError, finetune
from .recipe import merge as merge_adapter_into
from .training import (
    GradientCheckpointingUnsupported,
    PeriodicRelease,
    TrainerCallback,
    TrainingArguments,
    TrainingCancelled,
)
from .training.console import RichProgress, metrics_table

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Fine-tune transformer models with SparseGrad (or LoRA, MeProp, full fine-tuning), offline.",
)
console = Console()
err_console = Console(stderr=True)


class PrintMethod(TrainerCallback):
    """Say which method trains and how many parameters, once it is installed."""

    def on_prepared(self, prepared: PreparedModel) -> None:
        spec = prepared.spec
        console.print(f"method {spec.type} ({spec.setting} setting): {prepared.trainable_params:,} trainable parameters")


class StopOnInterrupt(TrainerCallback):
    """The first Ctrl-C asks the trainer to checkpoint and stop (resumable); a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err_console.print("stopping after this step (a checkpoint will be written); Ctrl-C again to abort")

    def should_stop(self) -> bool:
        return self.requested


@dataclass
class DataFiles:
    train: Dataset
    eval: Dataset | None


def _quiet_transformers() -> None:
    """Load reports and weight-loading bars are noise on the terminal of a training run."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _column(value: str | None) -> str | int | None:
    """A column name, or a 0-based index when the value is all digits."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _read_data(
    train: Path, eval_file: Path | None, task: str | None, glue: str | None,
    text: str | None, text_pair: str | None, label: str | None, messages: str | None, no_header: bool,
) -> DataFiles:
    mapping: ColumnMapping | None = None
    task_type = TaskType(task) if task else None
    if glue:
        glue_task, mapping = glue_mapping(glue)
        task_type = task_type or glue_task
    if any(v is not None for v in (text, text_pair, label, messages)) or no_header:
        base = mapping or ColumnMapping()
        text_col, pair_col, label_col = _column(text), _column(text_pair), _column(label)
        mapping = ColumnMapping(
            text=base.text if text_col is None else text_col,
            text_pair=base.text_pair if pair_col is None else pair_col,
            label=base.label if label_col is None else label_col,
            messages=messages or base.messages,
            has_header=base.has_header and not no_header,
        )
    train_ds = load_dataset(train, task_type, mapping)
    eval_ds = None
    if eval_file is not None:
        eval_ds = load_dataset(eval_file, train_ds.task, mapping, label_names=train_ds.label_names)
    return DataFiles(train_ds, eval_ds)


def _build_config(spec_kwargs: dict[str, Any], args_kwargs: dict[str, Any]) -> tuple[MethodSpec, TrainingArguments]:
    """The method spec and training arguments; invalid values exit with code 2 and the field's name."""
    try:
        sg = SparseGradConfig(density=spec_kwargs.pop("density"), calibration_steps=spec_kwargs.pop("calibration_steps"),
                              selection=spec_kwargs.pop("selection"), recalibrate_every=spec_kwargs.pop("recalibrate_every"))
        rank = spec_kwargs.pop("lora_rank")
        options = LoraOptions(rank=rank) if spec_kwargs["type"] == Method.lora else None
        return MethodSpec(sparsegrad=sg, options=options, **spec_kwargs), TrainingArguments(**args_kwargs)
    except ValueError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from exc


def _run_training(
    *, model_name: str, data: DataFiles, spec: MethodSpec, args: TrainingArguments,
    resume: Path | None, gguf_file: str | None = None,
) -> dict[str, Any]:
    """Load, prepare (calibrate), train, print before/after metrics; returns eval_summary."""
    _quiet_transformers()
    t0 = time.perf_counter()
    console.print(f"loading [bold]{model_name}[/] for {data.train.task.value} "
                  f"({len(data.train)} train / {0 if data.eval is None else len(data.eval)} eval examples)")
    with RichProgress(console) as progress, StopOnInterrupt() as interrupt:
        try:
            run = finetune(model_name, data.train, data.eval, spec, args, callbacks=[progress, interrupt, PrintMethod(), PeriodicRelease()],
                           resume_from=resume, run_info={"model": model_name}, gguf_file=gguf_file)
        except TrainingCancelled as exc:
            err_console.print(str(exc))
            raise typer.Exit(130) from exc
        except (GradientCheckpointingUnsupported, DataTokenizationError) as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from exc
    result = run.result
    if result.stopped:
        err_console.print(f"stopped at step {result.global_step}; checkpoint {result.checkpoint}; "
                          f"continue with --resume {args.output_dir}")
        raise typer.Exit(130)
    if result.before_eval or result.final_eval:
        console.print(metrics_table(result.before_eval, result.final_eval))
    console.print(f"{result.global_step} steps in {result.train_time_s:.1f}s of training, "
                  f"{time.perf_counter() - t0:.1f}s in all; wrote {args.output_dir}")
    return result.summary


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Bundled alias (minilm-l6, smollm2-135m) or a local model folder.")],
    train_file: Annotated[Path, typer.Option("--train", exists=True, dir_okay=False, help="Training data (JSONL/CSV/TSV).")],
    output: Annotated[Path, typer.Option(help="Run folder: adapter/ or model/, metrics.jsonl, eval_summary.json, checkpoints/.")],
    eval_file: Annotated[Path | None, typer.Option("--eval", exists=True, dir_okay=False, help="Evaluation data.")] = None,
    task: Annotated[str | None, typer.Option(help="classification | regression | causal_lm (default: inferred).")] = None,
    glue: Annotated[str | None, typer.Option(help="Use the column mapping of a GLUE task: sst2, cola, mrpc, stsb...")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column (name, or 0-based index).")] = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Second-sentence column for pair tasks.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column.")] = None,
    messages_column: Annotated[str | None, typer.Option(help="Chat messages key (causal_lm JSONL).")] = None,
    no_header: Annotated[bool, typer.Option(help="CSV/TSV without a header row (columns are indices).")] = False,
    method: Annotated[Method, typer.Option(help="How the MLP projections train.")] = defaults.DEFAULT_METHOD,
    setting: Annotated[Setting, typer.Option(help="paper: all non-MLP parameters train densely; peft: only the head.")] = defaults.DEFAULT_SETTING,
    density: Annotated[float, typer.Option(help="SparseGrad/MeProp share of entries updated per step.")] = defaults.DENSITY,
    calibration_steps: Annotated[int, typer.Option(help="SparseGrad calibration backward passes.")] = defaults.CALIBRATION_STEPS,
    selection: Annotated[Selection, typer.Option(help="SparseGrad: dynamic top-k per step (the paper's exact method, the default), top-k inside a leading block of the bases (about half the step time), or a fixed support.")] = JOB_SELECTION,
    recalibrate_every: Annotated[int | None, typer.Option(help=f"SparseGrad dynamic selection: new bases every N steps; 0: never (default: {defaults.JOB_RECALIBRATE_EVERY} with dynamic selection, 0 otherwise).")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (default: equal trainable parameters to SparseGrad).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs (unless --max-steps).")] = defaults.N_EPOCHS,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per micro-batch.")] = defaults.BATCH_SIZE,
    lr: Annotated[float | None, typer.Option(help=f"Peak learning rate (default: {defaults.PEFT_LEARNING_RATE:g} in the peft setting, {defaults.LEARNING_RATE:g} in the paper one and for full FT).")] = None,
    sparse_lr: Annotated[float | None, typer.Option(help="Learning rate of SparseGrad entries (default: --lr).")] = None,
    max_seq_length: Annotated[int, typer.Option(help="Tokens per row after truncation.")] = defaults.MAX_SEQ_LENGTH,
    scheduler: Annotated[Scheduler, typer.Option(help="Learning-rate schedule after warmup.")] = defaults.LR_SCHEDULER,
    warmup_ratio: Annotated[float, typer.Option(help="Warmup share of the steps.")] = defaults.WARMUP_RATIO,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = defaults.GRADIENT_ACCUMULATION_STEPS,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every N steps (default: before and after).")] = None,
    early_stopping_patience: Annotated[int | None, typer.Option(help="Stop after N evaluations without improvement.")] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = defaults.WEIGHT_DECAY,
    max_grad_norm: Annotated[float | None, typer.Option(help="Clip the gradient norm.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Write a resumable checkpoint every N steps.")] = None,
    group_by_length: Annotated[bool, typer.Option(help="Batch rows of similar length (less padding).")] = defaults.GROUP_BY_LENGTH,
    gradient_checkpointing: Annotated[bool, typer.Option(
        help="Recompute activations in the backward: much less activation memory, ~30% more compute.")] = defaults.GRADIENT_CHECKPOINTING,
    original_share_every: Annotated[int | None, typer.Option(
        help="SparseGrad: every N steps also log the top-k energy share in the original basis; 0 turns it off.")] = defaults.ORIGINAL_SHARE_EVERY,
    cuda_graphs: Annotated[bool, typer.Option(
        help="CUDA only: capture the training step in a CUDA graph and replay it (batches padded to "
             "--max-seq-length; not with --gradient-checkpointing).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of initialization, data order and dropout.")] = defaults.SEED,
    resume: Annotated[Path | None, typer.Option(help="Resume from a checkpoint or a run folder.")] = None,
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside the --model folder.")] = None,
) -> None:
    """Fine-tune a model on a dataset file and write the adapter, metrics.jsonl and eval_summary.json."""
    import torch

    if cuda_graphs and not torch.cuda.is_available():
        err_console.print("error: --cuda-graphs needs a CUDA device, and this machine has none", markup=False,
                          highlight=False)
        raise typer.Exit(2)
    try:
        data = _read_data(train_file, eval_file, task, glue, text_column, text_pair_column, label_column,
                          messages_column, no_header)
    except DatasetError as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from exc
    except ValueError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    spec, args = _build_config(
        {"type": method.value, "setting": setting.value, "lora_rank": lora_rank, "density": density,
                     "calibration_steps": calibration_steps, "selection": selection.value,
                     "recalibrate_every": defaults.job_recalibrate_every(selection) if recalibrate_every is None else recalibrate_every},
        args_kwargs={
            "learning_rate": defaults.default_learning_rate(method, setting) if lr is None else lr,
            "sparse_learning_rate": sparse_lr, "batch_size": batch_size, "n_epochs": epochs,
            "max_steps": max_steps, "gradient_accumulation_steps": grad_accum, "lr_scheduler": scheduler.value,
            "warmup_ratio": warmup_ratio, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm,
            "eval_every": eval_every, "early_stopping_patience": early_stopping_patience, "seed": seed,
            "checkpoint_every": checkpoint_every, "output_dir": output, "max_seq_length": max_seq_length,
            "group_by_length": group_by_length, "gradient_checkpointing": gradient_checkpointing,
            "log_every": 1, "original_share_every": original_share_every or None, "cuda_graphs": cuda_graphs,
        },
    )
    _run_training(model_name=model, data=data, spec=spec, args=args, resume=resume, gguf_file=gguf_file)


@app.command()
def merge(
    model: Annotated[str, typer.Option(help="The base model the adapter was trained from (alias or folder).")],
    adapter: Annotated[Path, typer.Option(exists=True, file_okay=False, help="An adapter folder written by train.")],
    output: Annotated[Path, typer.Option(help="Where to write the merged model (save_pretrained + tokenizer).")],
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside the --model folder.")] = None,
) -> None:
    """Merge an adapter into its base model: a plain folder that AutoModel*.from_pretrained loads."""
    _quiet_transformers()
    try:
        merge_adapter_into(model, adapter, output, gguf_file=gguf_file)
    except (FileNotFoundError, ValueError) as exc:  # includes AdapterMismatchError
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    console.print(f"merged {adapter} into {model}: wrote {output}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/demo"),
    max_steps: Annotated[int, typer.Option(help=f"Optimizer steps (batch {demo_recipe.BATCH_SIZE}).")] = demo_recipe.MAX_STEPS,
    sparse_lr: Annotated[float | None, typer.Option(help="Learning rate of the SparseGrad entries.")] = None,
) -> None:
    """Fine-tune the real MiniLM-L6 on the bundled SST-2 sample with SparseGrad (1% density), offline."""
    setting = defaults.DEFAULT_SETTING
    console.print("[bold]SparseGrad demo[/]: all-MiniLM-L6-v2, SST-2 sample (4,000 train / 872 dev), "
                  f"density 1%, {setting.value} setting")
    task, mapping = glue_mapping(demo_recipe.GLUE_TASK)
    train_ds = load_dataset(sample_path(f"{demo_recipe.GLUE_TASK}_train"), task, mapping)
    dev_ds = load_dataset(sample_path(f"{demo_recipe.GLUE_TASK}_dev"), task, mapping, label_names=train_ds.label_names)
    spec, args = _build_config(
        {"type": defaults.DEFAULT_METHOD.value, "setting": setting.value, "density": defaults.DENSITY,
         "calibration_steps": defaults.CALIBRATION_STEPS, "selection": JOB_SELECTION.value,
         "recalibrate_every": defaults.job_recalibrate_every(JOB_SELECTION), "lora_rank": None},
        {"learning_rate": defaults.default_learning_rate(defaults.DEFAULT_METHOD, setting), "sparse_learning_rate": sparse_lr, "batch_size": demo_recipe.BATCH_SIZE, "max_steps": max_steps,
         "max_seq_length": demo_recipe.MAX_SEQ_LENGTH, "output_dir": output, "log_every": 1},
    )
    summary = _run_training(model_name=demo_recipe.MODEL, data=DataFiles(train_ds, dev_ds), spec=spec, args=args, resume=None)
    before, after = summary.get("before") or {}, summary.get("after") or {}
    console.print(f"dev accuracy: {before.get('eval_accuracy', float('nan')):.3f} before → "
                  f"[bold]{after.get('eval_accuracy', float('nan')):.3f}[/] after")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
