"""Export what a run trained in its method's format, and merge an exported adapter back into a plain model.

The method decides the format (:meth:`~sparsegrad_core.methods.TrainingMethod.export`): SparseGrad and LoRA write
adapters, the others the whole model (``save_pretrained`` + tokenizer). Every export also gets
``training_info.json`` (method, task, label names, base model), which callers read to load the right base model
class before :func:`merge_exported`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..adapter import ADAPTER_CONFIG
from ..methods import PreparedModel, registered_methods

TRAINING_INFO = "training_info.json"


def export_trained(
    prepared: PreparedModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path, info: dict[str, Any]
) -> Path:
    """Write the trained result of ``prepared`` to ``directory`` in the method's format."""
    directory = Path(directory)
    info = prepared.method.export(prepared, tokenizer, directory, info)
    (directory / TRAINING_INFO).write_text(json.dumps({"method": prepared.spec.type, **info}, indent=2, default=str))
    return directory


def read_training_info(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / TRAINING_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_exported(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """The base model with an exported adapter (of any registered method) merged in: plain modules only."""
    directory = Path(directory)
    config_path = directory / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} holds no {ADAPTER_CONFIG} (a merged export needs no merge)")
    config = json.loads(config_path.read_text())
    for method in registered_methods():
        if method.reads_adapter(config):
            return method.merge(base_model, directory)
    raise ValueError(f"{config_path}: not an adapter of any method ({', '.join(m.name for m in registered_methods())})")
