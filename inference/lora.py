"""Fine-tuned models as PEFT LoRA adapters, for engines that serve many adapters over one base model (vLLM).

:func:`lora_form` writes the LoRA form of a stored adapter export, or says why there is none:

* a block SparseGrad adapter is a LoRA of rank ``min(r_out, r_in)`` per projection: loaded onto its base with
  :func:`sparsegrad_core.load_adapter` and exported with :func:`sparsegrad_core.export_lora`, exactly as a job
  exports it (the worker's ``lora`` artifact);
* a LoRA adapter (the ``lora`` method) that trained nothing besides its LoRA matrices is one already;
* anything else (dynamic or fixed SparseGrad, a densely trained head or paper-setting blocks, a rank above what
  the engine serves) is served merged instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import safe_open
from torch import nn

from sparsegrad_core import LoraExportError, export_lora, load_adapter
from sparsegrad_core.adapter import ADAPTER_CONFIG, ADAPTER_FORMAT, read_adapter_config
from sparsegrad_core.methods.lora import TRAINED_TENSORS


class NoLoraForm(ValueError):
    """The adapter has no LoRA form an engine can serve; the message says why."""


def _stored_tensors(path: Path) -> int:
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as f:
        return len(list(f.keys()))


def lora_rank(folder: Path) -> int:
    """The largest rank of a PEFT LoRA folder (``r`` and every ``rank_pattern`` value)."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    return max([int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def lora_form(adapter_dir: Path, base_model: nn.Module, out_dir: Path, *, max_rank: int) -> Path:
    """Write the LoRA form of the adapter export ``adapter_dir`` to ``out_dir`` and return it. ``base_model`` is a
    fresh copy of the model the adapter was trained from (a SparseGrad adapter is applied to it). Raises
    :class:`NoLoraForm` saying why there is none."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    if config.get("format") == ADAPTER_FORMAT:
        if config.get("selection") != "block":
            raise NoLoraForm(f"a {config.get('selection')}-selection SparseGrad delta is not low-rank")
        model = load_adapter(base_model, adapter_dir)
        trained = set(read_adapter_config(adapter_dir).get("dense_modules") or [])
        for name, parameter in model.named_parameters():  # mark what the run trained, as the trainer left it
            parameter.requires_grad_(name in trained or name.endswith("sg_anchor"))
        try:
            export_lora(model, out_dir)
        except LoraExportError as exc:
            raise NoLoraForm(str(exc)) from exc
    elif str(config.get("peft_type", "")).upper() == "LORA":
        if _stored_tensors(adapter_dir / TRAINED_TENSORS):
            raise NoLoraForm("the LoRA run also trained dense tensors (a head or paper-setting blocks)")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (ADAPTER_CONFIG, "adapter_model.safetensors"):
            shutil.copyfile(adapter_dir / name, out_dir / name)
    else:
        raise NoLoraForm("not an adapter of a known format")
    exported = json.loads((out_dir / ADAPTER_CONFIG).read_text())
    if exported.get("modules_to_save"):
        raise NoLoraForm(f"it trains whole modules too ({exported['modules_to_save'][:3]})")
    if exported.get("lora_bias"):
        raise NoLoraForm("it trains LoRA biases")
    if lora_rank(out_dir) > max_rank:
        raise NoLoraForm(f"its rank {lora_rank(out_dir)} is above the served maximum {max_rank}")
    return out_dir
