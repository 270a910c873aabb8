"""The autograd function of :class:`~sparsegrad_core.layer.SparseGradLinear`: the forward of a frozen linear, and a
backward that hands the layer its output gradient (and saved input) to select from instead of forming a dense
weight gradient. The ``anchor`` argument is the parameter that makes autograd call the backward at all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .precision import basis_as

if TYPE_CHECKING:
    from .layer import SparseGradLinear



class SparseGradFunction(torch.autograd.Function):
    """Exact and fixed selection save ``x``. Block selection, where backward drops zero-gradient rows (CPU), also
    saves ``x`` and forms ``x u_in`` from the kept rows only; where it keeps every row (CUDA, ``sync_free``), it
    saves ``x u_in`` (T, r_in) instead of ``x`` (T, in): less activation memory for the same arithmetic."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        anchor: torch.Tensor,
        layer: SparseGradLinear,
    ) -> torch.Tensor:
        ctx.layer = layer
        kind = x.device.type
        if torch.is_autocast_enabled(kind) and x.is_floating_point():
            x = x.to(torch.get_autocast_dtype(kind))  # what autocast feeds a dense linear, and what it saves
        x2 = x.reshape(-1, layer.in_features)
        w = weight.to(x.dtype)  # under autocast a cast copy, kept for the backward as autocast keeps a dense layer's
        ctx.cast_weight = w if w is not weight else None
        if layer.selection == "block" and not (layer.drops_rows(x) or layer.track_original_share):
            ctx.save_for_backward(x2 @ basis_as(layer.u_in, x.dtype), None)
        else:
            ctx.save_for_backward(None, x2)
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        xu, x2 = ctx.saved_tensors
        layer: SparseGradLinear = ctx.layer
        grad_x = grad_b = None
        if ctx.needs_input_grad[0]:
            w = ctx.cast_weight if ctx.cast_weight is not None else layer.weight
            grad_x = grad_out @ w.to(grad_out.dtype)  # (..., in), the dense layer's ∂L/∂x
        g2 = grad_out.reshape(-1, layer.out_features)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(layer.bias.dtype)  # type: ignore[union-attr]
        if ctx.needs_input_grad[3]:
            if layer.selection == "block":
                layer.record_block_gradient(g2, xu, x2)
            else:
                layer.record_gradient(g2, x2)
        return grad_x, None, grad_b, None, None
