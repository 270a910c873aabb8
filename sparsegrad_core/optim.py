"""Optimizers: a sparse Adam for SparseGrad entries (moments only where touched) + AdamW for the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layer import SparseGradLinear, add_rotated_deltas
from .model import sparsegrad_layers
from .topk_batch import batch_layers


@dataclass
class _Unit:
    """Layers whose Adam update and push-back run as single stacked operations: one layer, or several of one
    :meth:`~SparseGradLinear.stack_key`. Every tensor is (L, ·); the moments and deltas are the stacked rows the
    layers' own tensors are views of (:func:`_stacked_rows`)."""

    layers: list[SparseGradLinear]
    idx: torch.Tensor  # (L, k) the selected flat indices into each layer's (r_out, r_in) block
    pos: torch.Tensor  # (L, k) their positions in the deltas and moments (a fixed support's sorted positions)
    grad: torch.Tensor  # (L, k) the selected gradient values
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    delta: torch.Tensor


def _stacked_rows(tensors: list[torch.Tensor], assign: Callable[[int, torch.Tensor], None]) -> torch.Tensor:
    """One (L, n) tensor whose rows are ``tensors``: their common base when they already are its rows, else a new
    stack, whose rows ``assign(i, row)`` puts in their place (once; later steps find the base). One tensor: a view."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    base = tensors[0]._base
    if base is not None and base.dim() == 2 and base.shape[0] == len(tensors):
        row_bytes = base.stride(0) * base.element_size()
        if all(t._base is base and t.data_ptr() == base.data_ptr() + i * row_bytes for i, t in enumerate(tensors)):
            return base
    base = torch.stack(tensors)
    for i in range(len(tensors)):
        assign(i, base[i])
    return base


class SparseEntryAdam(torch.optim.Optimizer):
    """Lazy Adam over the selected entries of SparseGradLinear layers, with state of fixed shape.

    Per layer the moments are aligned with the trained delta ``sg_delta``: dense over the ``r_out × r_in``
    block for block selection, dense over the whole (out, in) matrix for dynamic selection (as in
    ``torch.optim.SparseAdam``), one per support entry for fixed selection. Only the selected entries' moments
    and deltas change in a step (lazy Adam); no step changes a shape, reads a value back to the host or grows
    the state (see :meth:`state_bytes`). Bias correction uses the step count of the layer, like SparseAdam.
    No weight decay is applied to ``ΔW̃``.

    Layers of one :meth:`~SparseGradLinear.stack_key` (one projection kind's block layers) keep their moments and
    deltas as rows of one tensor per kind, so that a step updates them with a few stacked operations whatever
    the number of layers (on a GPU a step is bound by kernel launches), :data:`~.topk_batch.BATCH_BYTES` of
    temporaries at a time.

    ``capturable``: each layer's step count is also kept on the device (``step_t``) and the bias correction computed
    there, so that a step captured in a CUDA graph stays right when it is replayed (as ``torch.optim.AdamW``'s
    ``capturable``). The learning rate is read when the step is captured: give it as a 0-dim device tensor and
    change it in place (:meth:`CombinedOptimizer.set_lr_scale`) for a schedule to reach a replayed step.
    :meth:`state_dict` brings the host's step counts up to the device's, so that a checkpoint of replayed steps
    resumes with the right bias correction in either mode.
    """

    def __init__(
        self,
        layers: Iterable[SparseGradLinear],
        lr: float | torch.Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        capturable: bool = False,
    ) -> None:
        self._layers = list(layers)
        if not self._layers:
            raise ValueError("SparseEntryAdam needs at least one SparseGradLinear")
        super().__init__([layer.sg_anchor for layer in self._layers], {"lr": lr, "betas": betas, "eps": eps})
        self._by_anchor = {id(layer.sg_anchor): layer for layer in self._layers}
        self.capturable = capturable

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """One lazy Adam step on every layer's selected entries. The arithmetic runs as multi-tensor (``_foreach``)
        operations over all units (:class:`_Unit`) with the same step count; the results are those of the
        per-layer formulas."""
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            members: dict[tuple[object, ...], list[tuple[SparseGradLinear, dict[str, Any], torch.Tensor, torch.Tensor]]] = {}
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
                state["step"] += 1
                if self.capturable and "step_t" not in state:
                    state["step_t"] = torch.tensor(float(state["step"] - 1), device=grad.device)
                key = layer.stack_key()
                members.setdefault((state["step"], key if key is not None else id(layer)), []).append(
                    (layer, state, idx, grad))
            by_step: dict[int, list[_Unit]] = {}
            counters: dict[Any, list[torch.Tensor]] = {}
            for (t, _), items in members.items():
                size = batch_layers(items[0][0].pushback_bytes())
                for i in range(0, len(items), size):
                    by_step.setdefault(t, []).append(self._unit(items[i : i + size]))  # type: ignore[arg-type]
                if self.capturable:
                    counters.setdefault(t, []).extend(state["step_t"] for _, state, *_ in items)
            for t, units in by_step.items():
                if self.capturable:  # every counter of this group holds t - 1: one kernel counts them all
                    torch._foreach_add_(counters[t], 1.0)
                    t_dev = counters[t][0]
                    bias = (1 - torch.pow(b1, t_dev), 1 - torch.pow(b2, t_dev))
                else:
                    bias = (1 - b1**t, 1 - b2**t)
                self._update(units, lr, b1, b2, eps, bias)

    @staticmethod
    def _unit(items: list[tuple[SparseGradLinear, dict[str, Any], torch.Tensor, torch.Tensor]]) -> _Unit:
        layers = [layer for layer, *_ in items]
        states = [state for _, state, *_ in items]
        if len(items) == 1:
            layer, _, idx, grad = items[0]
            # Dense and block deltas are indexed by the flat entry; a fixed support by its sorted position.
            pos = torch.searchsorted(layer.sg_indices, idx) if layer.selection == "fixed" else idx
            idx, pos, grad = idx.unsqueeze(0), pos.unsqueeze(0), grad.unsqueeze(0)
        else:  # one stack key: never a fixed support
            idx = pos = torch.stack([i for *_, i, _ in items])
            grad = torch.stack([g for *_, g in items])

        def into_state(name: str) -> Callable[[int, torch.Tensor], None]:
            return lambda i, row: states[i].__setitem__(name, row)

        return _Unit(
            layers, idx, pos, grad,
            exp_avg=_stacked_rows([s["exp_avg"] for s in states], into_state("exp_avg")),
            exp_avg_sq=_stacked_rows([s["exp_avg_sq"] for s in states], into_state("exp_avg_sq")),
            delta=_stacked_rows([layer.sg_delta for layer in layers], lambda i, row: setattr(layers[i], "sg_delta", row)),
        )

    @staticmethod
    def _update(units: list[_Unit], lr: float | torch.Tensor, b1: float, b2: float, eps: float,
                bias: tuple[float, float] | tuple[torch.Tensor, torch.Tensor]) -> None:
        """The Adam arithmetic of one step count's units; ``bias`` = ``(1 - b1^t, 1 - b2^t)``, numbers or 0-dim
        device tensors (``capturable``)."""
        grads = [u.grad for u in units]
        m_sel = [u.exp_avg.gather(1, u.pos) for u in units]
        v_sel = [u.exp_avg_sq.gather(1, u.pos) for u in units]
        torch._foreach_mul_(m_sel, b1)
        torch._foreach_add_(m_sel, grads, alpha=1 - b1)
        torch._foreach_mul_(v_sel, b2)
        torch._foreach_addcmul_(v_sel, grads, grads, value=1 - b2)
        for u, m, v in zip(units, m_sel, v_sel, strict=True):
            u.exp_avg.scatter_(1, u.pos, m)
            u.exp_avg_sq.scatter_(1, u.pos, v)
        bc1, bc2 = bias
        denom = torch._foreach_div(v_sel, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        updates = torch._foreach_div(m_sel, denom)
        torch._foreach_mul_(updates, -lr / bc1)
        for u, update in zip(units, updates, strict=True):
            u.delta.scatter_add_(1, u.pos, update)
            if u.layers[0].pushes_back_densely():
                add_rotated_deltas(u.layers, u.idx, update)
            else:
                u.layers[0].add_rotated_delta(u.idx[0], update[0])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for layer in self._layers:
            layer.clear_step_state()

    def state_dict(self) -> dict[str, Any]:
        """Torch's state dict, after the host's step counts are set from the device's (``capturable``: a replayed
        CUDA graph counts on the device only; one host sync here, at checkpoint time)."""
        for state in self.state.values():
            if "step_t" in state:
                state["step"] = int(state["step_t"].item())
        return super().state_dict()

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
    ``group["lr"]`` from ``group["initial_lr"]`` apply uniformly. ``capturable``: every ``group["lr"]`` is a 0-dim
    tensor on the parameters' device, changed in place, so that a step captured in a CUDA graph follows the schedule.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer], capturable: bool = False) -> None:
        self.optimizers = optimizers
        self.capturable = capturable
        for group in self.param_groups:
            group.setdefault("initial_lr", float(group["lr"]))

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
            lr = group["initial_lr"] * scale
            if not self.capturable:
                group["lr"] = lr
            elif isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:  # a float loaded from a checkpoint of an eager run
                group["lr"] = torch.tensor(lr, device=group["params"][0].device)


def build_optimizer(
    model: nn.Module,
    lr: float = 1e-4,
    *,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    sparse_lr: float | None = None,
    capturable: bool = False,
) -> CombinedOptimizer:
    """Sparse Adam on the SparseGrad entries and AdamW on every other trainable parameter.

    Works for any model: without SparseGradLinear layers it is plain AdamW (used by the baselines).
    Weight decay is not applied to biases and LayerNorm weights. ``capturable``: both keep their step counts and
    learning rates on the device, so that a step can be captured in a CUDA graph and replayed along a schedule
    (AdamW's ``capturable`` needs CUDA parameters).
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

    def rate(value: float, device: torch.device) -> float | torch.Tensor:
        return torch.tensor(float(value), device=device) if capturable else value

    if groups:
        optimizers.append(torch.optim.AdamW(groups, lr=rate(lr, (decay or no_decay)[0].device), betas=betas, eps=eps, foreach=True,
                                            capturable=capturable))
    if sg_layers:
        optimizers.append(SparseEntryAdam(sg_layers, lr=rate(sparse_lr or lr, sg_layers[0].sg_delta.device), betas=betas,
                                          eps=eps, capturable=capturable))
    if not optimizers:
        raise ValueError("the model has no trainable parameters")
    combined = CombinedOptimizer(optimizers, capturable=capturable)
    for group in combined.param_groups:  # each group its own tensor: a schedule changes them in place
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = group["lr"].clone()
    return combined


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip dense gradients and the pending SparseGrad selections together to ``max_norm``; returns the total
    norm before clipping as a 0-dim tensor. Nothing is read back to the host (no sync on CUDA): the scale
    ``min(1, max_norm / norm)`` is applied on the device."""
    dense = [p.grad for p in model.parameters() if p.grad is not None]
    layers = [layer for _, layer in sparsegrad_layers(model) if layer.selected is not None]
    # float32 gradients and the selected values: multi-tensor norms (a few kernels for the whole model on a
    # GPU, not two per tensor); other dtypes summed in float32, as before.
    fp32 = [g for g in dense if g.dtype == torch.float32]
    selected = [layer.selected[1] for layer in layers]  # type: ignore[index]
    norms = [n for group in (fp32, selected) if group for n in torch._foreach_norm(group)]
    sq = [torch.stack([n.to(norms[0].device) for n in norms]).square().sum()] if norms else []
    sq += [g.detach().float().square().sum() for g in dense if g.dtype != torch.float32]
    if not sq:
        return torch.zeros(())
    total = torch.stack([t.to(sq[0].device) for t in sq]).sum().sqrt()
    if max_norm > 0:
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        if dense:
            torch._foreach_mul_(dense, scale.to(dense[0].device))
        if selected:  # in place: a stacked selection's rows are scaled with it
            torch._foreach_mul_(selected, scale.to(selected[0].device))
    return total
