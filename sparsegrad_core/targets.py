"""Find the MLP projections SparseGrad reparametrizes, and name their projection kind."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

# Auto-detection patterns: full module name → (block index, projection).
_FAMILIES: dict[str, re.Pattern[str]] = {
    # BERT / RoBERTa / ELECTRA / XLM-R: the FFN, never attention.output.dense.
    "bert": re.compile(r"(?:^|\.)layer\.(\d+)\.(intermediate\.dense|output\.dense)$"),
    # LLaMA, Mistral, Qwen2, SmolLM, Gemma...: gated MLP.
    "llama": re.compile(r"(?:^|\.)layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)$"),
    # GPT-2 family: Conv1D c_fc / c_proj inside .mlp.
    "gpt2": re.compile(r"(?:^|\.)h\.(\d+)\.mlp\.(c_fc|c_proj)$"),
}

_BLOCK_INDEX = re.compile(r"\.(\d+)\.")


def projection_kind(module_name: str) -> str:
    """The name with everything up to the block index removed: ``encoder.layer.3.output.dense`` →
    ``output.dense``. All blocks' projections of one kind share one pair of bases."""
    m = re.match(r"^(?:.*?\.)?\d+\.(.+)$", module_name)
    return m.group(1) if m else module_name


def block_index(module_name: str) -> int | None:
    m = _BLOCK_INDEX.search("." + module_name + ".")
    return int(m.group(1)) if m else None


def is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear | Conv1D)


def find_target_modules(
    model: nn.Module,
    target_modules: Sequence[str] | None = None,
    *,
    layer_stride: int = 1,
    projections: Sequence[str] | None = None,
) -> dict[str, nn.Module]:
    """Return ``{module name: linear}`` for the linears to reparametrize, in model order.

    With ``target_modules=None`` the MLP projections of known families are detected; anything
    else raises with instructions. Entries of ``target_modules`` are name suffixes, or regexes
    when prefixed with ``re:``.
    """
    found: dict[str, nn.Module] = {}
    if target_modules is None:
        for pattern in _FAMILIES.values():
            for name, module in model.named_modules():
                m = pattern.search(name)
                if m is None or not is_linear_like(module):
                    continue
                idx, proj = int(m.group(1)), m.group(2)
                if idx % layer_stride != 0:
                    continue
                if projections is not None and not any(proj.endswith(p) for p in projections):
                    continue
                found[name] = module
            if found:
                break
        if not found:
            model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise ValueError(
                f"SparseGrad could not auto-detect the MLP projections of model type {model_type!r} "
                "(known: BERT/RoBERTa intermediate.dense/output.dense, LLaMA-family "
                "gate_proj/up_proj/down_proj, GPT-2 c_fc/c_proj). Pass them explicitly, e.g. "
                "SparseGradConfig(target_modules=['mlp.fc1', 'mlp.fc2']) — module-name suffixes, or "
                "regexes prefixed with 're:'."
            )
        return found

    patterns: list[re.Pattern[str] | None] = [re.compile(t[3:]) if t.startswith("re:") else None for t in target_modules]
    for name, module in model.named_modules():
        if not is_linear_like(module):
            continue
        for spec, regex in zip(target_modules, patterns, strict=True):
            hit = regex.search(name) if regex is not None else (name == spec or name.endswith("." + spec))
            if hit:
                block = block_index(name)
                if block is not None and block % layer_stride != 0:
                    break
                found[name] = module
                break
    if not found:
        raise ValueError(
            f"target_modules={list(target_modules)!r} matched no nn.Linear/Conv1D in the model; "
            "check the names with [n for n, _ in model.named_modules()]"
        )
    return found


def module_weight(module: nn.Module) -> torch.Tensor:
    """The ``weight`` parameter of a linear-like module, as stored."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight in nn.Linear (out, in) convention (a transposed view for GPT-2 ``Conv1D``)."""
    weight = module_weight(module)
    return weight.T if isinstance(module, Conv1D) else weight


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """``(out_features, in_features)`` in nn.Linear convention (Conv1D stores the transpose)."""
    out_f, in_f = linear_weight(module).shape
    return int(out_f), int(in_f)
