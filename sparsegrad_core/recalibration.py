"""Re-calibration: new HOSVD bases for a model already trained with SparseGrad, the trained delta kept exactly.

The bases of the first calibration describe the gradients of the base model; as training moves the weights, the
gradients' significant directions move too and the calibrated bases keep less of the top-k energy than fresh ones
(``docs/RESULTS.md``, "Basis drift"). :func:`recalibrate` runs backward passes through the installed
:class:`~sparsegrad_core.layer.SparseGradLinear` layers (their dense weight gradients ``G = gᵀx`` are collected
instead of selected; nothing is stepped), forms the new bases per projection kind as the first calibration does,
and re-expresses every layer's trained delta in them: with square orthogonal bases ``ΔW̃' = (U_out'ᵀ U_out) ΔW̃
(U_inᵀ U_in')`` gives the same dense delta ``U_out' ΔW̃' U_in'ᵀ = U_out ΔW̃ U_inᵀ``, so the dense weight, the
model's outputs and a merged model are unchanged. Only dynamic selection qualifies (a truncated block or a fixed
support cannot hold the re-expressed delta). The optimizer's moments of the old basis mean nothing in the new one:
restart them (``SparseEntryAdam.reset_state``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .hosvd import GramAccumulator, ProgressFn
from .layer import SparseGradLinear
from .model import sparsegrad_layers


def recalibrate(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    progress: ProgressFn | None = None,
    loss_fn: Callable[[nn.Module, Mapping[str, Any]], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Recompute the bases of every SparseGrad kind of ``model`` from the backward passes of ``batches`` and
    re-express the trained deltas in them (in place). Every parameter, ``requires_grad`` flag, ``.grad`` and the
    train/eval mode are as before; the dense weights are untouched. ``progress(pass, total, loss)`` follows each
    pass (``total``: the number of batches when they have a length, else the passes so far).

    Returns stats: ``steps``, ``losses``, ``seconds`` and, per kind, ``kept_share``: the share of the calibration
    gradients' top-k energy the new bases keep over what the old ones kept (above 1 when they drifted).
    """
    layers = [layer for _, layer in sparsegrad_layers(model)]
    if not layers:
        raise ValueError("recalibrate() needs a model with SparseGradLinear layers (apply_sparsegrad first)")
    wrong = sorted({layer.selection for layer in layers if layer.selection != "dynamic"})
    if wrong:
        raise ValueError(f"re-calibration needs dynamic selection; this model's layers use {', '.join(wrong)}")
    by_kind: dict[str, list[SparseGradLinear]] = {}
    for layer in layers:
        by_kind.setdefault(layer.kind, []).append(layer)
    accs = {kind: GramAccumulator(ls[0].out_features, ls[0].in_features, ls[0].weight.device)
            for kind, ls in by_kind.items()}
    samples: dict[str, list[torch.Tensor]] = {kind: [] for kind in by_kind}

    def sink(kind: str) -> Callable[[torch.Tensor], None]:
        def add(grad: torch.Tensor) -> None:
            accs[kind].add(grad)
            if len(samples[kind]) < len(by_kind[kind]):  # one batch's gradients per layer, to score the bases
                samples[kind].append(grad.detach().clone())
        return add

    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    saved_grads = {n: p.grad for n, p in model.named_parameters()}
    was_training = model.training
    total = len(batches) if hasattr(batches, "__len__") else 0  # type: ignore[arg-type]
    losses: list[float] = []
    started = time.perf_counter()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for layer in layers:
            layer.sg_anchor.requires_grad_(True)
            layer.gradient_sink = sink(layer.kind)
        model.train()
        for batch in batches:
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            loss.backward()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(len(losses), max(total, len(losses)), losses[-1])
    finally:
        for layer in layers:
            layer.gradient_sink = None
            layer.clear_step_state()
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
            p.grad = saved_grads[n]
        model.train(was_training)
    if not losses:
        raise ValueError("recalibrate() got no batches")

    kinds: dict[str, dict[str, float]] = {}
    for kind, kind_layers in by_kind.items():
        new = accs[kind].finish()
        assert new.u_out is not None  # a full basis: only block selection uses the standard one
        first = kind_layers[0]
        old_out, old_in = first.u_out, first.u_in
        new_out, new_in = new.u_out.to(old_in.device), new.u_in.to(old_in.device)
        kinds[kind] = {"kept_share": _kept_ratio(samples[kind], first.k, (old_out, old_in), (new_out, new_in))}
        rot_out, rot_in = new_out.T @ old_out, old_in.T @ new_in
        for layer in kind_layers:
            delta = layer.sg_delta.view(layer.out_features, layer.in_features)
            layer.sg_delta = (rot_out @ delta @ rot_in).reshape(-1).contiguous()
            layer.out_basis, layer.u_in = new_out, new_in  # shared by every layer of the kind, as installed
    return {"steps": len(losses), "losses": losses, "seconds": time.perf_counter() - started, "kinds": kinds}


def _kept_ratio(grads: list[torch.Tensor], k: int, old: tuple[torch.Tensor, torch.Tensor],
                new: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Top-k energy of ``grads`` rotated into ``new`` over the same in ``old`` (both summed over ``grads``)."""
    def kept(bases: tuple[torch.Tensor, torch.Tensor]) -> float:
        u_out, u_in = bases
        return sum(float(torch.topk((u_out.T @ g @ u_in).abs().flatten(), k).values.square().sum()) for g in grads)
    before = kept(old)
    return kept(new) / before if before > 0 else float("nan")
