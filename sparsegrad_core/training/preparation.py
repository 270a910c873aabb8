"""Build the PreparedModel for a training run from the training data, calibrating SparseGrad on it.

``prepare_model`` needs calibration batches for SparseGrad; :func:`prepare_for_training` takes them
from the training data itself (the first ``calibration_steps`` micro-batches of a dedicated seeded
shuffle, independent of the training order), reports each backward pass to the callbacks
(:class:`~sparsegrad_core.training.callbacks.CalibrationProgress`: pass, total, loss, elapsed and left), and stores
the bases once under ``<output_dir>/checkpoints/basis``. Resuming loads those bases instead of
calibrating again. With ``gradient_checkpointing`` the calibration passes already recompute activations
(and a model that cannot is refused before any work).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batch_order import CALIBRATION_STREAM, BatchOrder
from ..methods import MethodSpec, PreparedModel, prepare_model
from ..tokenization import TokenizedDataset
from .callbacks import CalibrationProgress, CallbackList, TrainerCallback
from .checkpoint import BASIS_DIR, CHECKPOINTS_DIR, basis_dir_for, find_checkpoint, load_basis, save_basis
from .gradient_checkpointing import cache_disabled, enable_gradient_checkpointing


class TrainingCancelled(RuntimeError):
    """``should_stop`` returned True during calibration; the model's weights are unchanged."""


def calibration_batches(
    data: TokenizedDataset, steps: int, batch_size: int, seed: int, device: torch.device, *, skip: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """``steps`` collated micro-batches from a shuffle of their own (cycling epochs if the data is short), after
    the first ``skip`` of that stream (re-calibration ``r`` takes the stream's ``r``-th run of ``steps``)."""
    order = BatchOrder(len(data), batch_size, seed, stream=CALIBRATION_STREAM)
    position, epoch = 0, 0
    while position < skip + steps:
        for indices in order.micro_batches(epoch):
            if position == skip + steps:
                return
            if position >= skip:
                yield {k: v.to(device) for k, v in data.collate(indices).items()}
            position += 1
        epoch += 1


def prepare_for_training(
    model: nn.Module,
    spec: MethodSpec,
    train_data: TokenizedDataset,
    *,
    batch_size: int,
    seed: int = 42,
    output_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    gradient_checkpointing: bool = False,
) -> PreparedModel:
    """Set trainability and install ``spec``'s method on ``model`` (in place) for training on ``train_data``.

    SparseGrad is calibrated on ``spec.sparsegrad.calibration_steps`` micro-batches of ``batch_size``
    rows (never stepping the model), unless ``resume_from`` names a checkpoint whose run stored its
    bases, which are then reused exactly. With ``output_dir`` the new bases are saved there once.
    Raises :class:`TrainingCancelled` if a callback asks to stop during calibration.
    ``gradient_checkpointing`` (pass ``TrainingArguments.gradient_checkpointing``) switches it on first,
    raising :class:`~sparsegrad_core.training.gradient_checkpointing.GradientCheckpointingUnsupported` for a
    model without it, so calibration needs no more activation memory than training.
    """
    cb = CallbackList(callbacks)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if not spec.method.needs_calibration:
        return prepare_model(model, spec)
    if resume_from is not None:
        basis_dir = basis_dir_for(find_checkpoint(resume_from))
        if not (basis_dir / "basis.json").is_file():
            raise FileNotFoundError(f"resuming SparseGrad needs the calibrated bases at {basis_dir}")
        basis = load_basis(basis_dir)
        prepared = prepare_model(model, spec, basis=basis)
        prepared.info["basis_loaded_from"] = str(basis_dir)
        cb.on_calibration_done(basis.spectra())
        return prepared

    device = next(model.parameters()).device
    cb.on_phase("calibrating")
    started = time.monotonic()

    def progress(step: int, total: int, loss: float) -> None:
        cb.on_calibration_step(CalibrationProgress(step, total, loss, time.monotonic() - started))
        if cb.should_stop():
            raise TrainingCancelled(f"stopped during calibration after {step} of {total} passes")

    batches: Iterable[dict[str, Any]] = calibration_batches(
        train_data, spec.sparsegrad.calibration_steps, batch_size, seed, device
    )
    with cache_disabled(model, active=gradient_checkpointing):
        prepared = prepare_model(model, spec, batches, progress=progress)
    assert prepared.basis is not None
    if output_dir is not None:
        prepared.info["basis_dir"] = str(save_basis(prepared.basis, Path(output_dir) / CHECKPOINTS_DIR / BASIS_DIR))
    cb.on_calibration_done(prepared.basis.spectra())
    return prepared
