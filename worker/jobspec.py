"""Translate a job's normalized ``Job.spec`` (see the service contract) into ``sparsegrad_core`` objects.

The API fills every default before a job is queued; for an older or hand-written spec missing a value, the
default is the contract's (:mod:`sparsegrad_contract.defaults`). Invalid values raise ``ValueError`` naming the
field (the core classes validate where values are set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsegrad_contract import defaults as D
from sparsegrad_contract.defaults import MethodType, resolve_method
from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.training import TrainingArguments
from sparsegrad_data import ColumnMapping, TaskType

ADAPTER_METHODS = (MethodType.sparsegrad.value, MethodType.lora.value)
"""Methods whose export is an adapter; the others export the whole trained model."""


@dataclass(frozen=True)
class TaskSpec:
    """What the files hold and how their columns map to examples."""

    task: TaskType
    mapping: ColumnMapping
    num_labels: int | None
    label_names: list[str] | None


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    value = spec.get(name)
    return value if isinstance(value, dict) else {}


def _given(section: dict[str, Any], key: str, default: Any) -> Any:
    """``section[key]``, or ``default`` when it is missing, null or OpenAI's ``"auto"``."""
    value = section.get(key)
    return default if value is None or value == "auto" else value


def task_spec(spec: dict[str, Any]) -> TaskSpec:
    task = _section(spec, "task")
    mapping = ColumnMapping(
        text=_given(task, "text_column", "text"),
        text_pair=task.get("text_pair_column"),
        label=_given(task, "label_column", "label"),
        messages=_given(task, "messages_column", "messages"),
        has_header=bool(_given(task, "has_header", True)),
    )
    task_type = TaskType(_given(task, "type", TaskType.CLASSIFICATION.value))
    names = task.get("label_names")
    num_labels = task.get("num_labels")
    if task_type != TaskType.CLASSIFICATION:
        names, num_labels = None, None
    return TaskSpec(task_type, mapping, num_labels, list(names) if names else None)


def method_type(spec: dict[str, Any]) -> str:
    """The training method (OpenAI's ``supervised`` means the default method)."""
    return resolve_method(str(_given(_section(spec, "method"), "type", D.DEFAULT_METHOD.value))).value


def method_spec(spec: dict[str, Any]) -> MethodSpec:
    method = _section(spec, "method")
    kind = method_type(spec)
    sg, lora, meprop = _section(method, "sparsegrad"), _section(method, "lora"), _section(method, "meprop")
    density = _given(meprop if kind == MethodType.meprop else sg, "density", D.DENSITY)
    rule = {k: sg[k] for k in ("block_energy_share", "block_max_cost") if sg.get(k) is not None}
    config = SparseGradConfig(
        density=density,
        calibration_steps=_given(sg, "calibration_steps", D.CALIBRATION_STEPS),
        selection=_given(sg, "selection", D.STORED_SPEC_SELECTION.value),
        **rule,
    )
    return MethodSpec(
        type=kind,  # type: ignore[arg-type]  # validated by MethodSpec
        setting=_given(method, "setting", D.DEFAULT_SETTING.value),
        sparsegrad=config,
        lora_rank=lora.get("rank"),
        lora_alpha=lora.get("alpha"),
        lora_dropout=float(_given(lora, "dropout", D.LORA_DROPOUT)),
    )


def training_arguments(
    spec: dict[str, Any], *, seed: int, output_dir: Path, default_checkpoint_every: int, bf16: bool
) -> TrainingArguments:
    """The trainer's arguments: hyperparameters from the spec, logging every step, checkpoints under
    ``output_dir`` (the two newest kept locally), SparseGrad's original-basis share when configured."""
    hp = _section(spec, "hyperparameters")
    max_steps = hp.get("max_steps")
    return TrainingArguments(
        learning_rate=float(_given(hp, "learning_rate", D.LEARNING_RATE)),
        sparse_learning_rate=hp.get("sparse_learning_rate"),
        batch_size=int(_given(hp, "batch_size", D.BATCH_SIZE)),
        n_epochs=None if max_steps else int(_given(hp, "n_epochs", D.N_EPOCHS)),
        max_steps=max_steps,
        gradient_accumulation_steps=int(_given(hp, "gradient_accumulation_steps", D.GRADIENT_ACCUMULATION_STEPS)),
        lr_scheduler=_given(hp, "lr_scheduler", D.LR_SCHEDULER.value),
        warmup_ratio=float(_given(hp, "warmup_ratio", D.WARMUP_RATIO)),
        weight_decay=float(_given(hp, "weight_decay", D.WEIGHT_DECAY)),
        max_grad_norm=hp.get("max_grad_norm"),
        eval_every=hp.get("eval_every"),
        early_stopping_patience=hp.get("early_stopping_patience"),
        seed=seed,
        checkpoint_every=int(_given(hp, "checkpoint_every", default_checkpoint_every)),
        keep_checkpoints=2,
        output_dir=output_dir,
        max_seq_length=int(_given(hp, "max_seq_length", D.MAX_SEQ_LENGTH)),
        group_by_length=bool(_given(hp, "group_by_length", D.GROUP_BY_LENGTH)),
        gradient_checkpointing=bool(_given(hp, "gradient_checkpointing", D.GRADIENT_CHECKPOINTING)),
        log_every=1,
        # A normalized spec stores None for "off" (the request's 0); a spec without the key gets the default.
        original_share_every=hp.get("original_share_every", D.ORIGINAL_SHARE_EVERY) if method_type(spec) == MethodType.sparsegrad else None,
        bf16=bf16,
    )


def validation_split(spec: dict[str, Any]) -> float:
    """The held-out share; a spec that stored none (null) holds nothing out."""
    value = spec.get("validation_split", 0.0)
    return 0.0 if value is None else float(value)


def merge_requested(spec: dict[str, Any]) -> bool:
    return bool(spec.get("merge_model"))
