"""Export a block-SparseGrad model as a standard PEFT LoRA adapter directory.

A block-selection layer's trained change is ``ΔW = u_out S u_inᵀ`` with ``u_out`` (out, r_out),
``S`` (r_out, r_in) and ``u_in`` (in, r_in): exactly a LoRA of rank ``r = min(r_out, r_in)``

* ``r_in ≤ r_out``: ``B = u_out S`` (out, r_in), ``A = u_inᵀ`` (r_in, in) (``B = S`` where the block
  spans every output row, in the standard basis);
* otherwise:       ``B = u_out`` (out, r_out),   ``A = S u_inᵀ`` (r_out, in);

with ``lora_alpha = r`` (scaling 1). Ranks differ per projection kind (``rank_pattern``). What else
trained travels the way PEFT carries it: a trained target bias as ``lora_B.bias`` (``lora_bias``,
holding the trained minus the base bias), every other module whose parameters all trained (the task
head; in the paper setting embeddings, attention, LayerNorms) in ``modules_to_save``. A module with
only some of its parameters trained cannot be carried, and the export says which.

``PeftModel.from_pretrained(base_model, directory)`` loads the result with no project code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .layer import SparseGradLinear
from .model import sparsegrad_layers

LORA_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


class LoraExportError(ValueError):
    """The model holds something a PEFT LoRA adapter cannot carry."""


def _task_type(model: nn.Module) -> str | None:
    name = type(model).__name__
    for suffix, task in (("ForSequenceClassification", "SEQ_CLS"), ("ForCausalLM", "CAUSAL_LM"),
                         ("ForTokenClassification", "TOKEN_CLS"), ("ForQuestionAnswering", "QUESTION_ANS")):
        if name.endswith(suffix):
            return task
    return None


def lora_factors(layer: SparseGradLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` with ``B @ A == u_out S u_inᵀ``: A (r, in), B (out, r), r = min(r_out, r_in)."""
    s = layer.sg_delta.view(layer.r_out, layer.r_in)
    if layer.r_in <= layer.r_out:
        return layer.u_in.T, layer.out_rotated(s)
    return s @ layer.u_in.T, layer.u_out


def _dense_modules(model: nn.Module, targets: dict[str, SparseGradLinear]) -> tuple[list[str], list[str]]:
    """Modules to save whole (every direct parameter trained) and targets whose bias trained."""
    target_bias = sorted(n for n, layer in targets.items() if layer.bias is not None and layer.bias.requires_grad)
    whole: list[str] = []
    partial: list[str] = []
    for name, module in model.named_modules():
        if name in targets or isinstance(module, SparseGradLinear):
            continue
        params = [p for n, p in module.named_parameters(recurse=False) if not n.endswith("sg_anchor")]
        trained = [p.requires_grad for p in params]
        if not params or not any(trained):
            continue
        (whole if all(trained) else partial).append(name)
    if partial:
        raise LoraExportError(
            f"{len(partial)} module(s) have only some of their parameters trained, which a PEFT adapter cannot "
            f"carry (modules_to_save saves whole modules): {partial[:5]}"
        )
    # A module nested in a saved module travels with it.
    whole = [n for n in whole if not any(n.startswith(o + ".") for o in whole if o != n)]
    return whole, target_bias


def export_lora(model: nn.Module, directory: str | Path, *, base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` of a PEFT LoRA adapter that
    reproduces ``model`` on its base model; returns the directory.

    Needs ``selection="block"`` (a dynamic or fixed SparseGrad delta is not low-rank: export a merged
    model instead). Raises :class:`LoraExportError` for what the format cannot carry.
    """
    from peft import LoraConfig

    targets = dict(sparsegrad_layers(model))
    if not targets:
        raise LoraExportError("the model has no SparseGradLinear layers; call apply_sparsegrad first")
    not_block = sorted({layer.selection for layer in targets.values() if layer.selection != "block"})
    if not_block:
        raise LoraExportError(
            f"only block selection trains a low-rank delta; this model uses selection {not_block}. "
            "Export a merged model instead (merge_adapter + save_pretrained)."
        )
    modules_to_save, biased = _dense_modules(model, targets)
    if any(t.base_layer_type == "conv1d" for t in targets.values()) and not all(
        t.base_layer_type == "conv1d" for t in targets.values()
    ):
        raise LoraExportError("a model mixing Conv1D and Linear targets cannot share one fan_in_fan_out setting")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for name, layer in targets.items():
        a, b = lora_factors(layer)
        ranks[layer.kind] = a.shape[0]
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = a.float()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = b.float()
        if name in biased:
            assert layer.bias is not None and layer.bias_base is not None
            tensors[f"{_PREFIX}{name}.lora_B.bias"] = (layer.bias.detach().float() - layer.bias_base.float())
    params = dict(model.named_parameters())
    for module in modules_to_save:
        for pname, _ in model.get_submodule(module).named_parameters(recurse=True):
            tensors[f"{_PREFIX}{module}.{pname}"] = params[f"{module}.{pname}"].detach().float()
    rank_pattern = {_escape(kind): r for kind, r in ranks.items()}
    top = max(ranks.values())
    config_kwargs: dict[str, Any] = {
        "r": top, "lora_alpha": top, "rank_pattern": rank_pattern, "alpha_pattern": dict(rank_pattern),
        "target_modules": sorted(targets), "lora_dropout": 0.0, "bias": "none", "lora_bias": bool(biased),
        "modules_to_save": modules_to_save or None, "init_lora_weights": True,
        "fan_in_fan_out": next(iter(targets.values())).base_layer_type == "conv1d",
        "task_type": _task_type(model), "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path
        or getattr(getattr(model, "config", None), "_name_or_path", None),
    }
    config = LoraConfig(**config_kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (LORA_WEIGHTS + ".tmp")
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / LORA_WEIGHTS)
    config.save_pretrained(str(directory))
    return directory


def _escape(kind: str) -> str:
    return kind.replace(".", r"\.")
