"""SparseGrad: the MLP projections become :class:`~sparsegrad_core.layer.SparseGradLinear` in the calibrated HOSVD
bases and train their top-k entries (dynamic, fixed or block selection, ``MethodSpec.sparsegrad``).

Exports the SparseGrad adapter (:func:`~sparsegrad_core.adapter.save_adapter`: deltas, bases, dense tensors); with
block selection also its PEFT LoRA form (:func:`~sparsegrad_core.lora_export.export_lora`) in the sibling folder
:func:`lora_export_dir` (``<directory>-lora``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from transformers import PreTrainedTokenizerBase

from sparsegrad_contract.defaults import MethodType, Selection

from ..adapter import ADAPTER_FORMAT, load_adapter, save_adapter
from ..hosvd import calibrate
from ..lora_export import LoraExportError, export_lora
from ..model import accumulating_gradients, apply_sparsegrad, merge_adapter
from .base import Attached, CalibrationInputs, MethodSpec, PreparedModel, TrainingMethod


def lora_export_dir(export_dir: str | Path) -> Path:
    """Where a block-selection SparseGrad export puts its PEFT LoRA form."""
    export_dir = Path(export_dir)
    return export_dir.with_name(export_dir.name + "-lora")


class SparseGradMethod(TrainingMethod):
    name: ClassVar[str] = MethodType.sparsegrad.value
    exports_adapter = True
    needs_calibration = True

    def attach(
        self, model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module], calibration: CalibrationInputs
    ) -> Attached:
        basis = calibration.basis
        if basis is None:
            if calibration.batches is None:
                raise ValueError("SparseGrad needs calibration batches or a basis")
            basis = calibrate(model, calibration.batches, spec.sparsegrad, progress=calibration.progress,
                              loss_fn=calibration.loss_fn)
        apply_sparsegrad(model, basis, spec.sparsegrad)
        return Attached(model, basis=basis, info={"calibration": basis.stats})

    def accumulating(self, prepared: PreparedModel, active: bool) -> contextlib.AbstractContextManager[None]:
        return accumulating_gradients(prepared.model, active=active)

    def export(
        self, prepared: PreparedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, info: dict[str, Any]
    ) -> dict[str, Any]:
        save_adapter(prepared.model, directory, metadata=info)
        if prepared.spec.sparsegrad.selection == Selection.block:
            try:
                export_lora(prepared.model, lora_export_dir(directory))
            except LoraExportError as exc:
                info = {**info, "lora_export_error": str(exc)}
        return info

    def reads_adapter(self, adapter_config: Mapping[str, Any]) -> bool:
        return adapter_config.get("format") == ADAPTER_FORMAT

    def merge(self, base_model: nn.Module, directory: Path) -> nn.Module:
        return merge_adapter(load_adapter(base_model, directory))
