"""Put SparseGradLinear into a model (apply_sparsegrad) and take it out again (merge_adapter)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import SparseGradConfig
from .hosvd import SparseGradBasis
from .layer import SparseGradLinear


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


FINGERPRINT_VERSION = 2
"""How :func:`weight_fingerprint` hashes: 2, every value; 1 (adapters written before), a strided sample."""


def weight_fingerprint(weight: torch.Tensor, version: int = FINGERPRINT_VERSION) -> str:
    """A stable fingerprint of a weight: SHA-256 of its shape and every value (as float32), so a base that differs
    in a single entry has another fingerprint. ``version=1`` is the fingerprint adapters written before kept: the
    shape and a strided sample of ~64k values (it misses most entries of a large weight)."""
    flat = weight.detach().reshape(-1)
    if version == 1:
        flat = flat[:: max(1, flat.numel() // 65536)]
    elif version != FINGERPRINT_VERSION:
        raise ValueError(f"unknown fingerprint version {version} (this version knows 1 and {FINGERPRINT_VERSION})")
    h = hashlib.sha256(str(tuple(weight.shape)).encode())
    h.update(flat.to(torch.float32).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def apply_sparsegrad(model: nn.Module, basis: SparseGradBasis, cfg: SparseGradConfig) -> nn.Module:
    """Replace every calibrated target linear by a :class:`SparseGradLinear`, in place.

    Bases are shared by reference between the layers of one kind. The original weight storage is
    reused for ``nn.Linear`` (no copy). Trainability of every other parameter (bias included) is left
    as the caller set it; call this after freezing what you want frozen.
    """
    for name, kind in basis.layers.items():
        module = model.get_submodule(name)
        if isinstance(module, SparseGradLinear):
            raise ValueError(f"{name} is already a SparseGradLinear")
        kb = basis.kinds[kind]
        if isinstance(module, Conv1D):
            weight, layer_type = module.weight.detach().T.contiguous(), "conv1d"
        elif isinstance(module, nn.Linear):
            weight, layer_type = module.weight.detach(), "linear"
        else:
            raise TypeError(f"{name} is {type(module).__name__}, expected nn.Linear or Conv1D")
        out_f, in_f = weight.shape
        device = weight.device
        layer = SparseGradLinear(
            weight,
            module.bias,
            None if kb.u_out is None else kb.u_out.to(device),
            kb.u_in.to(device),
            cfg.k_for(out_f, in_f),
            selection=cfg.selection,
            support=basis.supports.get(name),
            kind=kind,
            base_layer_type=layer_type,  # type: ignore[arg-type]
        )
        layer.base_fingerprint = weight_fingerprint(weight)
        _set_submodule(model, name, layer)
    _share_bases(model)
    if cfg.selection == "block":  # record the sizes the bases were truncated to
        cfg = dataclasses.replace(cfg, block_sizes={kind: kb.ranks for kind, kb in basis.kinds.items()})
    for _, layer in sparsegrad_layers(model):
        layer.config = cfg
    return model


def _share_bases(model: nn.Module) -> None:
    """Make all layers of one kind point at the same basis tensors (one copy per kind in memory)."""
    seen: dict[tuple[str, torch.device], tuple[torch.Tensor | None, torch.Tensor]] = {}
    for _, layer in sparsegrad_layers(model):
        key = (layer.kind, layer.weight.device)
        if key in seen:
            layer.out_basis, layer.u_in = seen[key]
        else:
            seen[key] = (layer.out_basis, layer.u_in)


def sparsegrad_layers(model: nn.Module) -> Iterator[tuple[str, SparseGradLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, SparseGradLinear):
            yield name, module


def merge_adapter(model: nn.Module) -> nn.Module:
    """Replace every SparseGradLinear by a plain ``nn.Linear`` (``Conv1D`` for GPT-2) holding the
    trained weight, in place; outputs are unchanged and ``save_pretrained`` gives a standard model."""
    for name, layer in list(sparsegrad_layers(model)):
        requires_grad = layer.bias.requires_grad if layer.bias is not None else False
        plain: nn.Module
        if layer.base_layer_type == "conv1d":
            plain = Conv1D(layer.out_features, layer.in_features)
            plain.weight = nn.Parameter(layer.weight.detach().T.contiguous(), requires_grad=requires_grad)
            if layer.bias is not None:
                plain.bias = layer.bias
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
            plain.weight = nn.Parameter(layer.weight.detach(), requires_grad=requires_grad)
            if layer.bias is not None:
                plain.bias = layer.bias
        _set_submodule(model, name, plain)
    return model


@contextlib.contextmanager
def accumulating_gradients(model: nn.Module, active: bool = True) -> Iterator[None]:
    """Within this block, backward passes add to the pending rotated gradient instead of selecting;
    the first backward outside it selects the top-k of the summed gradient (exact accumulation)."""
    layers = [layer for _, layer in sparsegrad_layers(model)]
    for layer in layers:
        layer.accumulating = active
    try:
        yield
    finally:
        for layer in layers:
            layer.accumulating = False


def energy_share(model: nn.Module) -> dict[str, float]:
    """Share of the gradient energy kept by the last step's top-k (all layers pooled), and, when layers
    track it, what the same k would have kept in the original basis. Block selection computes only the
    block, so there the share of the whole gradient is known only on tracked steps; every step gives
    ``topk_block_energy_share`` (the top-k's share of the block's energy)."""
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in ("kept", "total", "original_kept", "block_kept", "block_total")}
    for _, layer in sparsegrad_layers(model):
        e = layer.last_energy
        if "kept" in e and "total" in e:
            parts["kept"].append(e["kept"])
            parts["total"].append(e["total"])
        if "original_kept" in e:
            parts["original_kept"].append(e["original_kept"])
        if "kept" in e and "block_total" in e:
            parts["block_kept"].append(e["kept"])
            parts["block_total"].append(e["block_total"])
    present = [key for key, ts in parts.items() if ts]
    seen = set(present)
    # One transfer for every layer's sums (one host sync on CUDA, not one per layer).
    device = parts[present[0]][0].device if present else None
    values = torch.stack([torch.stack([t.float().to(device) for t in parts[key]]).sum() for key in present]).tolist() if present else []
    sums = dict.fromkeys(parts, 0.0) | dict(zip(present, values, strict=True))
    out: dict[str, float] = {}
    if sums["total"] > 0:
        out["topk_energy_share"] = sums["kept"] / sums["total"]
        if "original_kept" in seen:
            out["original_basis_topk_energy_share"] = sums["original_kept"] / sums["total"]
    if sums["block_total"] > 0:
        out["topk_block_energy_share"] = sums["block_kept"] / sums["block_total"]
    return out


def count_trainable(model: nn.Module) -> int:
    """Trainable parameter count with each SparseGradLinear counted as its k entries per step."""
    n = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("sg_anchor"):
            continue
        n += p.numel()
    for _, layer in sparsegrad_layers(model):
        if layer.sg_anchor.requires_grad:
            n += layer.k
    return n
