"""Calibration: streaming HOSVD of the MLP weight gradients, one pair of bases per projection kind.

For gradients ``G_s ∈ R^{out×in}`` of all layers of one kind over all calibration steps, the
HOSVD mode factors of the stacked tensor ``[N, out, in]`` are the eigenvectors (by descending
eigenvalue) of ``C_out = Σ G Gᵀ`` (out×out) and ``C_in = Σ Gᵀ G`` (in×in). We accumulate those
two Gram matrices in float64 as gradients arrive and eigendecompose once, so memory per kind is
``out² + in²`` numbers whatever the number of steps and blocks; nothing is stacked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .block import BlockChoice, BlockShareGrid
from .config import SparseGradConfig
from .targets import find_target_modules, linear_shape, module_weight, projection_kind


@dataclass
class KindBasis:
    """Orthogonal bases of one projection kind: ``W̃ = u_outᵀ W u_in``."""

    u_out: torch.Tensor | None
    """(out, r_out), columns = eigenvectors of C_out by descending eigenvalue; None: the standard basis
    (a block over every output row, see :mod:`sparsegrad_core.block`)."""
    u_in: torch.Tensor  # (in, r_in), columns = eigenvectors of C_in by descending eigenvalue
    eig_out: torch.Tensor  # (out,) float64, descending
    eig_in: torch.Tensor  # (in,) float64, descending
    num_gradients: int = 0
    out_features: int | None = None
    """Rows of the weight; needed only when ``u_out`` is None."""

    @property
    def ranks(self) -> tuple[int, int]:
        """``(r_out, r_in)``: the leading directions kept (the full sizes unless block selection truncated them)."""
        r_out = self.u_out.shape[1] if self.u_out is not None else self.out_features
        assert r_out is not None, "KindBasis without u_out needs out_features"
        return int(r_out), int(self.u_in.shape[1])

    def truncated(self, r_out: int, r_in: int) -> KindBasis:
        """The leading ``r_out`` / ``r_in`` directions (the spectra stay whole); ``r_out = out``: the
        standard output basis."""
        assert self.u_out is not None, "truncating an already truncated basis"
        out_f = int(self.u_out.shape[0])
        return KindBasis(
            u_out=None if r_out == out_f else self.u_out[:, :r_out].contiguous(),
            u_in=self.u_in[:, :r_in].contiguous(),
            eig_out=self.eig_out, eig_in=self.eig_in, num_gradients=self.num_gradients, out_features=out_f,
        )


@dataclass
class SparseGradBasis:
    """Result of :func:`calibrate`: bases per kind, the target layers, and (fixed selection) supports."""

    kinds: dict[str, KindBasis]
    layers: dict[str, str]  # module name -> kind
    supports: dict[str, torch.Tensor] = field(default_factory=dict)  # module name -> sorted flat int64 indices
    stats: dict[str, Any] = field(default_factory=dict)

    def spectra(self) -> dict[str, dict[str, list[float]]]:
        """Eigenvalue spectra per kind (for reports and the dashboard)."""
        return {
            k: {"out": b.eig_out.tolist(), "in": b.eig_in.tolist()} for k, b in self.kinds.items()
        }


class GramAccumulator:
    """Accumulates ``Σ G Gᵀ`` and ``Σ Gᵀ G`` for one kind, in float64."""

    def __init__(self, out_features: int, in_features: int, device: torch.device) -> None:
        self.c_out = torch.zeros(out_features, out_features, dtype=torch.float64, device=device)
        self.c_in = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, grad: torch.Tensor) -> None:
        """``grad``: (out, in) in nn.Linear convention."""
        g = grad.detach().to(torch.float32)
        self.c_out += (g @ g.T).to(torch.float64)
        self.c_in += (g.T @ g).to(torch.float64)
        self.count += 1

    def finish(self) -> KindBasis:
        eig_out, u_out = _sorted_eigh(self.c_out)
        eig_in, u_in = _sorted_eigh(self.c_in)
        return KindBasis(
            u_out=u_out.to(torch.float32).contiguous(),
            u_in=u_in.to(torch.float32).contiguous(),
            eig_out=eig_out,
            eig_in=eig_in,
            num_gradients=self.count,
        )


def _sorted_eigh(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a symmetric PSD matrix, descending, with a deterministic sign per vector."""
    evals, evecs = torch.linalg.eigh(c)
    evals, evecs = evals.flip(0), evecs.flip(1)
    # Sign convention: the largest-magnitude component of each eigenvector is positive.
    idx = evecs.abs().argmax(dim=0)
    signs = torch.sign(evecs[idx, torch.arange(evecs.shape[1], device=evecs.device)])
    signs[signs == 0] = 1
    return evals.clamp_min(0), evecs * signs


def linear_grad(module: nn.Module) -> torch.Tensor | None:
    """The weight gradient of a target in nn.Linear (out, in) convention."""
    g = module_weight(module).grad
    if g is None:
        return None
    return g.T if isinstance(module, Conv1D) else g


ProgressFn = Callable[[int, int, float], None]


def calibrate(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    cfg: SparseGradConfig,
    *,
    progress: ProgressFn | None = None,
    loss_fn: Callable[[nn.Module, Mapping[str, Any]], torch.Tensor] | None = None,
) -> SparseGradBasis:
    """Run ``cfg.calibration_steps`` backward passes and return the HOSVD bases per projection kind.

    The model is never stepped: every parameter is bit-identical afterwards, ``requires_grad``
    flags, existing ``.grad`` tensors and train/eval mode are restored. Each batch's own gradient is
    used (no running sums). Fixed selection, and block selection without ``block_sizes``, make a second
    pass over the same batches once the bases are known. ``progress(step, total, loss)`` is called after
    every backward pass of either, ``total`` counting both (it shrinks if ``batches`` ends early).
    """
    targets = find_target_modules(
        model, cfg.target_modules, layer_stride=cfg.layer_stride, projections=cfg.projections
    )
    layers = {name: projection_kind(name) for name in targets}
    fixed = cfg.selection == "fixed"
    probe_block = cfg.selection == "block" and cfg.block_sizes is None
    steps = int(cfg.calibration_steps)

    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    saved_grads = {n: p.grad for n, p in model.named_parameters()}
    was_training = model.training
    accs: dict[str, GramAccumulator] = {}
    device = next(model.parameters()).device
    for name, module in targets.items():
        kind = layers[name]
        if kind not in accs:
            out_f, in_f = linear_shape(module)
            accs[kind] = GramAccumulator(out_f, in_f, device)

    kept: list[Mapping[str, Any]] = []
    t0 = time.perf_counter()
    losses: list[float] = []
    passes_per_batch = 2 if fixed or probe_block else 1
    passes_done, passes_total = 0, steps * passes_per_batch

    def backward_pass(batch: Mapping[str, Any], on_grad: Callable[[str, torch.Tensor], None]) -> float:
        nonlocal passes_done
        hooks = []
        for name, module in targets.items():
            def hook(p: torch.Tensor, name: str = name, module: nn.Module = module) -> None:
                g = linear_grad(module)
                if g is not None:
                    on_grad(name, g)
                p.grad = None  # never accumulate across steps; never keep more than one at a time
            hooks.append(module_weight(module).register_post_accumulate_grad_hook(hook))
        try:
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            loss.backward()
        finally:
            for h in hooks:
                h.remove()
        value = float(loss.detach())
        passes_done += 1
        if progress is not None:
            progress(passes_done, passes_total, value)
        return value

    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for module in targets.values():
            module_weight(module).requires_grad_(True)
        model.train()
        it = iter(batches)
        for step in range(steps):
            try:
                batch = next(it)
            except StopIteration:
                if step == 0:
                    raise ValueError("calibrate() got no batches") from None
                passes_total = step * passes_per_batch
                break
            if fixed or probe_block:
                kept.append(batch)
            losses.append(backward_pass(batch, lambda n, g: accs[layers[n]].add(g)))
        kinds = {kind: acc.finish() for kind, acc in accs.items()}
        accs.clear()  # the float64 Gram matrices (out² + in² per kind): not needed by a second pass
        supports: dict[str, torch.Tensor] = {}
        if fixed:
            supports = _fixed_supports(targets, layers, kinds, kept, cfg, backward_pass)
        block: dict[str, BlockChoice] = {}
        if cfg.selection == "block":
            block = _block_choices(targets, layers, kinds, kept, cfg, backward_pass)
            kinds = {kind: kb.truncated(block[kind].r_out, block[kind].r_in) for kind, kb in kinds.items()}
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
            p.grad = saved_grads[n]
        model.train(was_training)

    stats = {
        "steps": len(losses),
        "losses": losses,
        "seconds": time.perf_counter() - t0,
        "num_layers": len(layers),
    }
    if block:
        stats["block"] = {"rule": f"cheapest block keeping >= {cfg.block_energy_share} of the top-k energy "
                                  f"at a step cost <= {cfg.block_max_cost} x a dense weight gradient"
                          if cfg.block_sizes is None else "given block_sizes",
                          "kinds": {kind: choice.as_dict() for kind, choice in block.items()}}
    return SparseGradBasis(kinds=kinds, layers=layers, supports=supports, stats=stats)


def _block_choices(
    targets: dict[str, nn.Module],
    layers: dict[str, str],
    kinds: dict[str, KindBasis],
    batches: list[Mapping[str, Any]],
    cfg: SparseGradConfig,
    backward_pass: Callable[[Mapping[str, Any], Callable[[str, torch.Tensor], None]], float],
) -> dict[str, BlockChoice]:
    """Block selection: per kind, the block given in ``cfg.block_sizes`` or the one the rule of
    :mod:`sparsegrad_core.block` picks from a second pass over the calibration batches."""
    if cfg.block_sizes is not None:
        missing = sorted(set(kinds) - set(cfg.block_sizes))
        if missing:
            raise ValueError(f"block_sizes has no entry for projection kind(s) {missing}; it has {sorted(cfg.block_sizes)}")
        choices = {}
        for kind, kb in kinds.items():
            r_out, r_in = cfg.block_sizes[kind]
            assert kb.u_out is not None
            out_f, in_f = kb.u_out.shape[0], kb.u_in.shape[0]
            if r_out > out_f or r_in > in_f:
                raise ValueError(f"block_sizes[{kind!r}] = {(r_out, r_in)} exceeds the weight shape {(out_f, in_f)}")
            if r_out * r_in < cfg.k_for(out_f, in_f):
                raise ValueError(f"block_sizes[{kind!r}] = {(r_out, r_in)} holds fewer than k = "
                                 f"{cfg.k_for(out_f, in_f)} entries (density {cfg.density})")
            choices[kind] = BlockChoice(r_out=r_out, r_in=r_in, kept_share=None)
        return choices
    maps: dict[str, BlockShareGrid] = {}
    for name, module in targets.items():
        kind = layers[name]
        if kind not in maps:
            out_f, in_f = linear_shape(module)
            maps[kind] = BlockShareGrid(out_f, in_f, cfg.k_for(out_f, in_f), kinds[kind].u_in.device)

    def add(name: str, g: torch.Tensor) -> None:
        b = kinds[layers[name]]
        assert b.u_out is not None
        maps[layers[name]].add(g.to(torch.float32) @ b.u_in, b.u_out)

    for batch in batches:
        backward_pass(batch, add)
    tokens = sum(_token_rows(b) for b in batches) / max(1, len(batches))
    return {kind: m.choose(cfg.block_energy_share, tokens=tokens, max_cost=cfg.block_max_cost)
            for kind, m in maps.items()}


def _token_rows(batch: Mapping[str, Any]) -> int:
    """Token rows of a batch that carry a gradient: the attention mask's ones, else every position."""
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        return int(mask.sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 1


def _fixed_supports(
    targets: dict[str, nn.Module],
    layers: dict[str, str],
    kinds: dict[str, KindBasis],
    batches: list[Mapping[str, Any]],
    cfg: SparseGradConfig,
    backward_pass: Callable[[Mapping[str, Any], Callable[[str, torch.Tensor], None]], float],
) -> dict[str, torch.Tensor]:
    """Fixed-selection variant: per layer, the top-k entries of the calibration energy Σ G̃²
    (a second pass over the same calibration batches, once the bases are known)."""
    energy: dict[str, torch.Tensor] = {}

    def add(name: str, g: torch.Tensor) -> None:
        b = kinds[layers[name]]
        assert b.u_out is not None
        rot = b.u_out.T @ g.to(torch.float32) @ b.u_in
        e = rot.square()
        if name in energy:
            energy[name] += e
        else:
            energy[name] = e

    for batch in batches:
        backward_pass(batch, add)
    supports = {}
    for name, module in targets.items():
        out_f, in_f = linear_shape(module)
        k = cfg.k_for(out_f, in_f)
        idx = torch.topk(energy[name].flatten(), k, sorted=False).indices
        supports[name] = torch.sort(idx).values
    return supports
