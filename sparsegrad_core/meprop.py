"""MeProp baseline as the paper ran it: top-k of |G| in the original basis, same k, dense AdamW."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import SparseGradConfig
from .targets import linear_shape, module_weight


def sparsify_topk(grad: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest-magnitude entries of ``grad``; zero the rest."""
    flat = grad.reshape(-1)
    idx = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[idx] = flat[idx]
    return out.view_as(grad)


def attach_meprop(targets: Mapping[str, nn.Module], cfg: SparseGradConfig) -> None:
    """Make every target weight's accumulated gradient keep only its top-k entries.

    The hook runs after the gradient is accumulated into ``.grad``; inside
    ``accumulating_gradients(model)`` it waits, so with accumulation the top-k is taken of the sum.
    """
    for module in targets.values():
        assert isinstance(module, nn.Linear | Conv1D)
        out_f, in_f = linear_shape(module)
        k = cfg.k_for(out_f, in_f)
        weight = module_weight(module)
        if getattr(module, "_meprop_k", None) is not None:
            continue

        def hook(p: torch.Tensor, module: nn.Module = module, k: int = k) -> None:
            if p.grad is not None and not getattr(module, "_meprop_accumulating", False):
                p.grad.copy_(sparsify_topk(p.grad, k))

        weight.register_post_accumulate_grad_hook(hook)
        module._meprop_k = k  # type: ignore[assignment]
