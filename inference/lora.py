"""Fine-tuned models as PEFT LoRA adapters, for engines that serve many adapters over one base model (vLLM).

:func:`lora_form` writes the LoRA form of a stored adapter export, or says why there is none:

* a block SparseGrad adapter is a LoRA of rank ``min(r_out, r_in)`` per projection: loaded onto its base with
  :func:`sparsegrad_core.load_adapter` and exported with :func:`sparsegrad_core.export_lora`, exactly as a job
  exports it (the worker's ``lora`` artifact);
* a LoRA adapter (the ``lora`` method) that trained nothing besides its LoRA matrices is one already;
* anything else (dynamic or fixed SparseGrad, a densely trained head or paper-setting blocks, a rank above what
  the engine serves) is served merged instead.

:func:`with_uniform_rank` pads a LoRA folder whose ranks differ per module (a block SparseGrad export's
``rank_pattern``) to one rank, for engines that read only ``r``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
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


def with_uniform_rank(folder: Path) -> Path:
    """Pad every LoRA pair in ``folder`` with zeros to the folder's largest rank R, in place: ``A`` (r, in) gains
    rows and ``B`` (out, r) columns, so ``B @ A`` is unchanged; the config then says ``r = R`` with no
    ``rank_pattern``. Only for adapters whose every module has scaling 1 (``alpha = r``, as a SparseGrad export
    writes them); a folder without ``rank_pattern`` is left as it is."""
    config_path = folder / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    if not config.get("rank_pattern"):
        return folder
    alphas = config.get("alpha_pattern") or {}
    if any(float(alphas.get(k, -1)) != float(r) for k, r in config["rank_pattern"].items()) or \
            float(config.get("lora_alpha", 0)) != float(config.get("r", -1)):
        raise NoLoraForm("its modules do not all have scaling 1; padding would change them")
    top = lora_rank(folder)
    weights_path = folder / "adapter_model.safetensors"
    tensors = load_file(str(weights_path))
    for name, tensor in tensors.items():
        if name.endswith("lora_A.weight") and tensor.shape[0] < top:
            tensors[name] = torch.cat([tensor, tensor.new_zeros(top - tensor.shape[0], tensor.shape[1])], dim=0)
        elif name.endswith("lora_B.weight") and tensor.shape[1] < top:
            tensors[name] = torch.cat([tensor, tensor.new_zeros(tensor.shape[0], top - tensor.shape[1])], dim=1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(weights_path), metadata={"format": "pt"})
    config.update(r=top, lora_alpha=top, rank_pattern={}, alpha_pattern={})
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder
