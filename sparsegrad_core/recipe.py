"""The fine-tuning recipe every caller runs — the worker, the offline CLI, the demos and the quality benchmark:
:func:`finetune` (load → tokenize → install the method, calibrating SparseGrad → train → export) and :func:`merge`
(an exported adapter into its base model).

Callers differ only in their callbacks (progress, cancellation, checkpoint upload) and in what they do with the
result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparsegrad_data import Dataset

from .loading import load_base_model
from .methods import MethodSpec, PreparedModel
from .tokenization import TokenizedDataset, tokenize_dataset
from .training import (
    CallbackList,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    TrainResult,
    merge_exported,
    prepare_for_training,
    read_training_info,
)


class DataTokenizationError(ValueError):
    """The data cannot be tokenized for this model (e.g. no chat record fits ``max_seq_length``)."""


@dataclass
class FinetuneRun:
    """What :func:`finetune` trained: the prepared model, its tokenizer and data, the trainer's result."""

    prepared: PreparedModel
    tokenizer: PreTrainedTokenizerBase
    train_data: TokenizedDataset
    eval_data: TokenizedDataset | None
    result: TrainResult


def finetune(
    model_source: str | Path,
    train: Dataset,
    eval_data: Dataset | None,
    spec: MethodSpec,
    args: TrainingArguments,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    resume_from: str | Path | None = None,
    device: torch.device | str | None = None,
    run_info: dict[str, object] | None = None,
    gguf_file: str | None = None,
) -> FinetuneRun:
    """Fine-tune ``model_source`` (an alias, a local folder, or a folder holding ``gguf_file``) on ``train``.

    The task head is initialized from ``args.seed``. SparseGrad calibrates on the training data unless
    ``resume_from`` names a checkpoint whose run stored its bases; training resumes from it bit for bit. With
    ``args.output_dir`` the bases, checkpoints, metrics and the export land there. Callbacks hear every phase and
    :meth:`~sparsegrad_core.training.TrainerCallback.on_prepared` once the method is installed.

    Raises :class:`DataTokenizationError` for data the tokenizer cannot use,
    :class:`~sparsegrad_core.training.TrainingCancelled` when a callback stops calibration, and
    :class:`~sparsegrad_core.training.GradientCheckpointingUnsupported` for a model without it.
    """
    torch.manual_seed(args.seed)  # the task head's initialization
    model, tokenizer = load_base_model(model_source, train.task, num_labels=train.num_labels,
                                       label_names=train.label_names, gguf_file=gguf_file)
    if device is not None:
        nn.Module.to(model, device)
    try:
        train_tokens = tokenize_dataset(train, tokenizer, args.max_seq_length)
        eval_tokens = None if eval_data is None else tokenize_dataset(eval_data, tokenizer, args.max_seq_length)
    except ValueError as exc:
        raise DataTokenizationError(str(exc)) from exc
    prepared = prepare_for_training(
        model, spec, train_tokens, batch_size=args.batch_size, seed=args.seed, output_dir=args.output_dir,
        resume_from=resume_from, callbacks=callbacks, gradient_checkpointing=args.gradient_checkpointing,
    )
    CallbackList(callbacks).on_prepared(prepared)
    trainer = Trainer(prepared, train_tokens, eval_tokens, tokenizer, args, list(callbacks), run_info=run_info)
    result = trainer.train(resume_from=resume_from)
    return FinetuneRun(prepared, tokenizer, train_tokens, eval_tokens, result)


def load_base_for(
    model_source: str | Path, adapter_dir: str | Path, *, gguf_file: str | None = None, seed: int | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model an export of :func:`finetune` was trained from, loaded as training loaded it, and its
    tokenizer.

    ``model_source`` is the model's name as the run used it: a bundled model's name (the names the service's
    jobs use, ``"minilm-l6"``, ``"smollm2-135m"``: :data:`~sparsegrad_core.loading.BUNDLED_MODELS`), a local
    folder or a hub id. The task, head size and label names come from the export's ``training_info.json``;
    ``seed`` (default: the run's seed) initializes a head the adapter does not carry, as training did.
    """
    info = read_training_info(adapter_dir)
    if not info.get("task"):
        raise ValueError(f"{adapter_dir}: no training_info.json naming the task (not an export of finetune)")
    torch.manual_seed(int(info.get("seed", 0) if seed is None else seed))
    return load_base_model(model_source, info["task"], num_labels=info.get("num_labels"),
                           label_names=info.get("label_names"), gguf_file=gguf_file)


def merge(
    model_source: str | Path, adapter_dir: str | Path, output_dir: str | Path | None = None, *,
    gguf_file: str | None = None, seed: int | None = None,
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The base model with the adapter exported by :func:`finetune` merged in (plain modules), and its tokenizer;
    written with ``save_pretrained`` to ``output_dir`` when given. The base model is loaded by
    :func:`load_base_for` (``model_source``, ``seed``).

    Raises ``FileNotFoundError`` / ``ValueError`` (e.g. :class:`~sparsegrad_core.adapter.AdapterMismatchError`)
    for a folder that is not an adapter of this base model.
    """
    base, tokenizer = load_base_for(model_source, adapter_dir, gguf_file=gguf_file, seed=seed)
    merged = merge_exported(base, adapter_dir)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(output_dir)  # type: ignore[operator]
        tokenizer.save_pretrained(str(output_dir))
    return merged, tokenizer
