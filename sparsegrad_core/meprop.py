"""MeProp baseline as the paper ran it: top-k of |G| in the original basis, same k, dense AdamW."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import SparseGradConfig
from .targets import linear_shape


def sparsify_topk(grad: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest-magnitude entries of ``grad``; zero the rest."""
    flat = grad.reshape(-1)
    idx = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[idx] = flat[idx]
    return out.view_as(grad)


def attach_meprop(targets: Mapping[str, nn.Module], cfg: SparseGradConfig) -> None:
    """Register a gradient hook on every target weight that keeps only its top-k entries."""
    for module in targets.values():
        out_f, in_f = linear_shape(module)
        k = cfg.k_for(out_f, in_f)
        weight = module.weight
        if getattr(weight, "_meprop_hooked", False):
            continue
        weight.register_hook(lambda g, k=k: sparsify_topk(g, k))
        weight._meprop_hooked = True  # type: ignore[attr-defined]
        module._meprop_k = k  # type: ignore[assignment]
        assert isinstance(module, nn.Linear | Conv1D)
