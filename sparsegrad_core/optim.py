"""Optimizers: a sparse Adam for SparseGrad entries (moments only where touched) + AdamW for the rest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .layer import SparseGradLinear
from .model import sparsegrad_layers


class SparseEntryAdam(torch.optim.Optimizer):
    """Lazy Adam over the selected entries of SparseGradLinear layers, with state of fixed shape.

    Per layer the moments are aligned with the trained delta ``sg_delta``: dense over the ``r_out × r_in``
    block for block selection, dense over the whole (out, in) matrix for dynamic selection (as in
    ``torch.optim.SparseAdam``), one per support entry for fixed selection. Only the selected entries' moments
    and deltas change in a step (lazy Adam); no step changes a shape, reads a value back to the host or grows
    the state (see :meth:`state_bytes`). Bias correction uses the step count of the layer, like SparseAdam.
    No weight decay is applied to ``ΔW̃``.
    """

    def __init__(
        self,
        layers: Iterable[SparseGradLinear],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self._layers = list(layers)
        if not self._layers:
            raise ValueError("SparseEntryAdam needs at least one SparseGradLinear")
        super().__init__([layer.sg_anchor for layer in self._layers], {"lr": lr, "betas": betas, "eps": eps})
        self._by_anchor = {id(layer.sg_anchor): layer for layer in self._layers}

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for anchor in group["params"]:
                layer = self._by_anchor[id(anchor)]
                if layer.selected is None:
                    continue
                idx, grad = layer.selected
                layer.selected = None
                state = self.state[anchor]
                n = layer.sg_delta.numel()
                if not state or state["exp_avg"].numel() != n:
                    # New, or resumed from a checkpoint of a version that kept sparse moments: start them at zero.
                    state["step"] = state.get("step", 0)
                    state["exp_avg"] = torch.zeros(n, device=grad.device)
                    state["exp_avg_sq"] = torch.zeros(n, device=grad.device)
                # Dense and block deltas are indexed by the flat entry; a fixed support by its sorted position.
                pos = torch.searchsorted(layer.sg_indices, idx) if layer.selection == "fixed" else idx
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m_sel = m.index_select(0, pos).mul_(b1).add_(grad, alpha=1 - b1)
                v_sel = v.index_select(0, pos).mul_(b2).addcmul_(grad, grad, value=1 - b2)
                m.index_copy_(0, pos, m_sel)
                v.index_copy_(0, pos, v_sel)
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                update = m_sel.div(v_sel.div(bc2).sqrt_().add_(eps)).mul_(-lr / bc1)
                layer.sg_delta.index_add_(0, pos, update)
                layer.add_rotated_delta(idx, update)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for layer in self._layers:
            layer.clear_step_state()

    def reset_state(self) -> None:
        """Forget every moment and step count (after re-calibration: moments of the old basis mean nothing in the
        new one); the next step starts them at zero, with fresh bias correction."""
        self.state.clear()

    def state_bytes(self) -> int:
        """Bytes of the sparse path's trained state: moments, indices and deltas of every layer."""
        tensors = [t for layer in self._layers for t in (layer.sg_indices, layer.sg_delta)]
        tensors += [t for s in self.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)


class CombinedOptimizer:
    """One object with ``step``/``zero_grad``/``state_dict`` over several torch optimizers.

    ``param_groups`` lists every group of every optimizer, so learning-rate schedules that scale
    ``group["lr"]`` from ``group["initial_lr"]`` apply uniformly.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)

    def reset_sparse_state(self) -> None:
        """:meth:`SparseEntryAdam.reset_state` of the sparse optimizer (re-calibration); dense moments stay."""
        for opt in self.optimizers:
            if isinstance(opt, SparseEntryAdam):
                opt.reset_state()

    def set_lr_scale(self, scale: float) -> None:
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * scale


def build_optimizer(
    model: nn.Module,
    lr: float = 1e-4,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    sparse_lr: float | None = None,
) -> CombinedOptimizer:
    """Sparse Adam on the SparseGrad entries and AdamW on every other trainable parameter.

    Works for any model: without SparseGradLinear layers it is plain AdamW (used by the baselines).
    Weight decay is not applied to biases and LayerNorm weights.
    """
    sg_layers = [layer for _, layer in sparsegrad_layers(model) if layer.sg_anchor.requires_grad]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name.endswith("sg_anchor"):
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizers: list[torch.optim.Optimizer] = []
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if groups:
        optimizers.append(torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True))
    if sg_layers:
        optimizers.append(SparseEntryAdam(sg_layers, lr=sparse_lr or lr, betas=betas, eps=eps))
    if not optimizers:
        raise ValueError("the model has no trainable parameters")
    return CombinedOptimizer(optimizers)


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip dense gradients and the pending SparseGrad selections together to ``max_norm``; returns the total
    norm before clipping as a 0-dim tensor. Nothing is read back to the host (no sync on CUDA): the scale
    ``min(1, max_norm / norm)`` is applied on the device."""
    dense = [p.grad for p in model.parameters() if p.grad is not None]
    layers = [layer for _, layer in sparsegrad_layers(model) if layer.selected is not None]
    sq = [g.detach().float().square().sum() for g in dense]
    sq += [layer.selected[1].square().sum() for layer in layers]  # type: ignore[index]
    if not sq:
        return torch.zeros(())
    total = torch.stack([t.to(sq[0].device) for t in sq]).sum().sqrt()
    if max_norm > 0:
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        if dense:
            torch._foreach_mul_(dense, scale.to(dense[0].device))
        for layer in layers:
            idx, vals = layer.selected  # type: ignore[misc]
            layer.selected = (idx, vals * scale.to(vals.device))
    return total
