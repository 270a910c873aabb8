"""Top-k selections of several layers run as one batched top-k (the GPU path's kernel launches).

On a GPU a SparseGrad step is bound by kernel launches, not arithmetic, and ``torch.topk`` over a block of a
million entries is a dozen launches (four radix passes). Layers whose gradients have the same size and ``k``
(one projection kind) can share them: on the sync-free path, backward hands its flattened rotated gradient to
:data:`PENDING` instead of selecting at once, and once :func:`batch_layers` such layers wait (or a layer's
``selected`` or ``last_energy`` is read, or the step ends) they are stacked and selected together along one
dimension. Each layer gets exactly what its own top-k would give (the same entries, in another order, when no
two magnitudes tie at the k-th place). At most :data:`BATCH_BYTES` of gradients per size wait at a time.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from .selection import topk_magnitude_rows

if TYPE_CHECKING:
    from .layer import SparseGradLinear

BATCH_BYTES = 64 << 20
"""The most bytes of per-layer tensors batched into one operation: the top-k's waiting gradients here, the
sparse optimizer's stacked layers (``optim.SparseEntryAdam``). 64 MiB holds every block of a BERT-base kind
(12 layers, 768 × r_in) or six of its exact-mode gradients (768 × 3072); a LLaMA-7B layer's exceeds it and goes
alone."""


def batch_layers(item_bytes: int) -> int:
    """How many layers of ``item_bytes`` each one batched operation takes (at least one)."""
    return max(1, BATCH_BYTES // max(1, item_bytes))


class PendingTopK:
    """Layers waiting for their selection, grouped by (entries, k, device). One per process, not per thread:
    autograd runs a CUDA backward on a thread of its own, and the step that reads the selections on another."""

    def __init__(self, group_size: int | None = None) -> None:
        self.group_size = group_size
        """Layers selected together; None: as many as :data:`BATCH_BYTES` holds."""
        self.lock = threading.RLock()
        self.groups: dict[tuple[int, int, torch.device], list[tuple[SparseGradLinear, torch.Tensor, str]]] = {}

    def defer(self, layer: SparseGradLinear, flat: torch.Tensor, total_key: str) -> None:
        """Select the top ``layer.k`` of ``flat`` later; ``total_key`` names the energy ``flat·flat`` in
        ``layer.last_energy`` (``block_total`` for block selection, ``total`` for the exact one)."""
        with self.lock:
            self.discard(layer)  # a newer gradient of the same layer replaces one never selected
            key = (flat.numel(), layer.k, flat.device)
            group = self.groups.setdefault(key, [])
            group.append((layer, flat, total_key))
            layer._pending_topk = True
            if len(group) >= (self.group_size or batch_layers(flat.numel() * flat.element_size())):
                self._select(self.groups.pop(key))

    def discard(self, layer: SparseGradLinear) -> None:
        if not layer._pending_topk:
            return
        with self.lock:
            for key, group in list(self.groups.items()):
                kept = [item for item in group if item[0] is not layer]
                if len(kept) != len(group):
                    if kept:
                        self.groups[key] = kept
                    else:
                        del self.groups[key]
            layer._pending_topk = False

    def flush(self) -> None:
        """Select every waiting layer now."""
        with self.lock:
            groups, self.groups = list(self.groups.values()), {}
            for group in groups:
                self._select(group)

    @staticmethod
    @torch.no_grad()
    def _select(group: list[tuple[SparseGradLinear, torch.Tensor, str]]) -> None:
        layers = [layer for layer, _, _ in group]
        total_keys = [total_key for _, _, total_key in group]
        stacked = torch.stack([flat for _, flat, _ in group])  # (L, n)
        group.clear()  # the gradients live on in `stacked` only: free them before the top-k's temporaries
        k = layers[0].k
        # The fewest full-size temporaries (the stacked gradients of a kind are the step's largest): energies by
        # reduction, then the magnitudes in place, the signs kept as one byte per entry.
        totals = torch.linalg.vector_norm(stacked, dim=1).square()
        negative = stacked.signbit()
        magnitudes = stacked.abs_()
        idx = topk_magnitude_rows(magnitudes, k, sync_free=not layers[0].drops_rows(magnitudes))  # (L, k)
        kept_abs = magnitudes.gather(1, idx)
        vals = torch.where(negative.gather(1, idx), -kept_abs, kept_abs)
        kept = kept_abs.square().sum(1)
        for i, (layer, total_key) in enumerate(zip(layers, total_keys, strict=True)):
            layer._pending_topk = False
            layer.selected = (idx[i], vals[i])
            layer.last_energy = {"kept": kept[i], total_key: totals[i]}


PENDING = PendingTopK()
"""The process's waiting selections (one training runs per process)."""
