"""LoRA through peft on the MLP projections, at the rank that gives SparseGrad's trainable parameters unless one
is given.

Exports a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
``PeftModel.from_pretrained``) plus ``trained_tensors.safetensors`` holding every other tensor the run trained
densely (task head; in the paper setting all non-MLP parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from sparsegrad_contract import defaults
from sparsegrad_contract.defaults import MethodType

from ..config import SparseGradConfig
from ..targets import linear_shape
from .base import Attached, CalibrationInputs, MethodSpec, PreparedModel, TrainingMethod

if TYPE_CHECKING:
    from peft import LoraConfig

TRAINED_TENSORS = "trained_tensors.safetensors"
PEFT_PREFIX = "base_model.model."


@dataclass
class LoraOptions:
    rank: int | None = None
    """None: the rank giving the same trainable MLP parameters as SparseGrad at ``MethodSpec.sparsegrad.density``."""
    alpha: float | None = None
    """None: ``2 * rank``."""
    dropout: float = defaults.LORA_DROPOUT

    def __post_init__(self) -> None:
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"lora rank must be >= 1; got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1); got {self.dropout}")


def equal_param_lora_rank(targets: Mapping[str, nn.Module], density: float) -> int:
    """LoRA rank with the trainable parameters of SparseGrad at ``density``: ``r ≈ Σk / Σ(in+out)``."""
    cfg = SparseGradConfig(density=density)
    k_total = sum(cfg.k_for(*linear_shape(m)) for m in targets.values())
    io_total = sum(sum(linear_shape(m)) for m in targets.values())
    return max(1, round(k_total / io_total))


class LoraMethod(TrainingMethod):
    name: ClassVar[str] = MethodType.lora.value
    options_type = LoraOptions
    exports_adapter = True

    def attach(
        self, model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module], calibration: CalibrationInputs
    ) -> Attached:
        from peft import LoraConfig, inject_adapter_in_model

        options: LoraOptions = spec.options
        rank = options.rank or equal_param_lora_rank(targets, spec.sparsegrad.density)
        alpha = options.alpha if options.alpha is not None else 2.0 * rank
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        config = LoraConfig(
            r=rank, lora_alpha=alpha,  # type: ignore[arg-type]  # peft accepts float scaling
            lora_dropout=options.dropout, target_modules=list(targets), bias="none",
        )
        model = inject_adapter_in_model(config, model)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
            else:
                # peft renames "x.weight" to "x.base_layer.weight"; keep the flag chosen before injection.
                p.requires_grad_(flags.get(name.replace(".base_layer.", "."), False))
        return Attached(model, state=config)

    def export(
        self, prepared: PreparedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, info: dict[str, Any]
    ) -> dict[str, Any]:
        save_lora_adapter(prepared.model, prepared.state, directory)
        return info

    def reads_adapter(self, adapter_config: Mapping[str, Any]) -> bool:
        return str(adapter_config.get("peft_type", "")).upper() == "LORA"

    def merge(self, base_model: nn.Module, directory: Path) -> nn.Module:
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


def save_lora_adapter(model: nn.Module, config: LoraConfig, directory: Path) -> Path:
    """PEFT-format LoRA adapter of a model injected with ``config``, plus the other trained tensors."""
    from peft import get_peft_model_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    config.base_model_name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None)
    config.save_pretrained(str(directory))
    lora = {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(lora, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    dense = {n.replace(".base_layer.", "."): p.detach().cpu().contiguous()
             for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    save_file(dense, str(directory / TRAINED_TENSORS), metadata={"format": "pt"})
    return directory
