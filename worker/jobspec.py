"""Convert a job's typed spec (:class:`sparsegrad_service.job_spec.JobSpec`, read once from ``Job.spec``) into
``sparsegrad_core`` objects. Invalid values raise ``ValueError`` naming the field (the core classes validate
where values are set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sparsegrad_contract.defaults import MethodType
from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import LoraOptions, MethodSpec
from sparsegrad_core.training import TrainingArguments
from sparsegrad_data import ColumnMapping, TaskType
from sparsegrad_service.job_spec import JobSpec, LoraMethod, MePropMethod, SparseGradMethod


@dataclass(frozen=True)
class TaskSpec:
    """What the files hold and how their columns map to examples."""

    task: TaskType
    mapping: ColumnMapping
    num_labels: int | None
    label_names: list[str] | None


def task_spec(spec: JobSpec) -> TaskSpec:
    task = spec.task
    if task.type != TaskType.CLASSIFICATION:
        return TaskSpec(task.type, task.mapping(), None, None)
    return TaskSpec(task.type, task.mapping(), task.num_labels, list(task.label_names) if task.label_names else None)


def method_spec(spec: JobSpec) -> MethodSpec:
    method = spec.method
    sg = SparseGradConfig()
    if isinstance(method, SparseGradMethod):
        sg = SparseGradConfig(density=method.density, calibration_steps=method.calibration_steps,
                              selection=method.selection.value, block_energy_share=method.block_energy_share,
                              block_max_cost=method.block_max_cost, recalibrate_every=method.recalibrate_every)
    elif isinstance(method, MePropMethod | LoraMethod):  # MeProp's k, LoRA's equal-parameter rank
        sg = SparseGradConfig(density=method.density)
    options = LoraOptions(method.rank, method.alpha, method.dropout) if isinstance(method, LoraMethod) else None
    return MethodSpec(type=method.type.value, setting=method.setting.value, sparsegrad=sg, options=options)


def training_arguments(
    spec: JobSpec, *, seed: int, output_dir: Path, default_checkpoint_every: int, bf16: bool,
    cuda_graphs: bool = False,
) -> TrainingArguments:
    """The trainer's arguments: hyperparameters from the spec, logging every step, checkpoints under
    ``output_dir`` (the two newest kept locally), SparseGrad's original-basis share when configured; CUDA graphs
    when the worker captures them and the job does not recompute activations (``gradient_checkpointing``)."""
    hp = spec.hyperparameters
    return TrainingArguments(
        learning_rate=hp.learning_rate,
        sparse_learning_rate=hp.sparse_learning_rate,
        batch_size=hp.batch_size,
        n_epochs=None if hp.max_steps else hp.n_epochs,
        max_steps=hp.max_steps,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        lr_scheduler=hp.lr_scheduler.value,
        warmup_ratio=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        eval_every=hp.eval_every,
        early_stopping_patience=hp.early_stopping_patience,
        seed=seed,
        checkpoint_every=hp.checkpoint_every or default_checkpoint_every,
        keep_checkpoints=2,
        output_dir=output_dir,
        max_seq_length=hp.max_seq_length,
        group_by_length=hp.group_by_length,
        gradient_checkpointing=hp.gradient_checkpointing,
        log_every=1,
        original_share_every=hp.original_share_every if spec.method.type is MethodType.sparsegrad else None,
        bf16=bf16,
        cuda_graphs=cuda_graphs and not hp.gradient_checkpointing,
    )
