"""Export what a run trained, and merge an exported adapter back into a plain model.

* SparseGrad — :func:`~sparsegrad_core.adapter.save_adapter` (sparse deltas + bases + dense tensors);
  with block selection also a PEFT LoRA adapter (:func:`~sparsegrad_core.lora_export.export_lora`) in the
  sibling folder :func:`lora_export_dir` (``<directory>-lora``);
* LoRA — a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
  ``PeftModel.from_pretrained``) plus ``trained_tensors.safetensors`` holding every other tensor the
  run trained densely (task head; in the paper setting all non-MLP parameters);
* full / MeProp / frozen-MLP — the whole model, ``save_pretrained`` + tokenizer.

Every export also gets ``training_info.json`` (method, task, label names, base model), which
:func:`merge_exported` uses to load the right base model class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..adapter import load_adapter, save_adapter
from ..lora_export import LoraExportError, export_lora
from ..methods import PreparedModel
from ..model import merge_adapter

TRAINING_INFO = "training_info.json"
TRAINED_TENSORS = "trained_tensors.safetensors"
PEFT_PREFIX = "base_model.model."


def export_trained(
    prepared: PreparedModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path, info: dict[str, Any]
) -> Path:
    """Write the trained result of ``prepared`` to ``directory`` in the method's format."""
    directory = Path(directory)
    method = prepared.spec.type
    model = prepared.model
    if method == "sparsegrad":
        save_adapter(model, directory, metadata=info)
        if prepared.spec.sparsegrad.selection == "block":
            try:
                export_lora(model, lora_export_dir(directory))
            except LoraExportError as exc:
                info = {**info, "lora_export_error": str(exc)}
    elif method == "lora":
        save_lora_adapter(model, directory)
    else:
        if not isinstance(model, PreTrainedModel):
            raise TypeError("full/meprop export needs a transformers PreTrainedModel")
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    (directory / TRAINING_INFO).write_text(json.dumps({"method": method, **info}, indent=2, default=str))
    return directory


def lora_export_dir(export_dir: str | Path) -> Path:
    """Where :func:`export_trained` puts the PEFT LoRA form of a block-selection SparseGrad adapter."""
    export_dir = Path(export_dir)
    return export_dir.with_name(export_dir.name + "-lora")


def save_lora_adapter(model: nn.Module, directory: Path) -> Path:
    """PEFT-format LoRA adapter of a model injected by ``prepare_model``, plus the other trained tensors."""
    from peft import get_peft_model_state_dict

    config = getattr(model, "_sparsegrad_lora_config", None)
    if config is None:
        raise ValueError("model has no LoRA adapter (prepare it with MethodSpec(type='lora'))")
    directory.mkdir(parents=True, exist_ok=True)
    config.base_model_name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None)
    config.save_pretrained(str(directory))
    lora = {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(lora, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    dense = {n.replace(".base_layer.", "."): p.detach().cpu().contiguous()
             for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    save_file(dense, str(directory / TRAINED_TENSORS), metadata={"format": "pt"})
    return directory


def read_training_info(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / TRAINING_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_exported(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """The base model with an exported SparseGrad or LoRA adapter merged in: plain modules only."""
    directory = Path(directory)
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} holds no adapter_config.json (a merged export needs no merge)")
    config = json.loads(config_path.read_text())
    if config.get("format") == "sparsegrad":
        return merge_adapter(load_adapter(base_model, directory))
    if str(config.get("peft_type", "")).upper() == "LORA":
        from peft import PeftModel

        merged = PeftModel.from_pretrained(base_model, str(directory)).merge_and_unload()
        tensors_path = directory / TRAINED_TENSORS
        if tensors_path.is_file():
            params = dict(merged.named_parameters())
            with torch.no_grad():
                for name, t in load_file(str(tensors_path)).items():
                    if name not in params or params[name].shape != t.shape:
                        raise ValueError(f"adapter tensor {name} {tuple(t.shape)} does not fit the base model")
                    params[name].copy_(t)
        return merged  # type: ignore[no-any-return]
    raise ValueError(f"{config_path}: neither a SparseGrad nor a PEFT LoRA adapter")
