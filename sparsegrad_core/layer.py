"""SparseGradLinear: an MLP linear trained through a sparse set of entries of its rotated weight.

Conventions (``nn.Linear``: ``y = x Wᵀ + b``, ``W ∈ R^{out×in}``):

* rotated weight ``W̃ = u_outᵀ W u_in``; rotated gradient ``G̃ = u_outᵀ G u_in`` with ``G = gᵀ x``;
* the dense weight is kept in the **original** basis, so forward and ``∂L/∂x`` cost exactly what a
  frozen ``nn.Linear`` costs and are equal to it to float32 rounding; the bias is an ordinary
  parameter whose gradient is the dense layer's;
* per step, exactly ``k`` entries of ``G̃`` are selected (dynamic top-k of ``|G̃|``, or a fixed
  support); the optimizer updates their values ``ΔW̃`` and pushes the update back to ``W`` as the
  low-rank correction ``W += u_out[:, R] · S · u_in[:, C]ᵀ`` over the touched rows ``R`` / cols ``C``;
* the trained delta ``ΔW̃`` (``sg_delta``) has a fixed shape: dense over (out, in) for dynamic selection
  (4 bytes per entry, like the dense moments of torch's SparseAdam), dense over the block for block
  selection, the k support values for fixed selection. No step changes a tensor's shape.

Token rows whose output gradient is exactly zero (padding, non-pooled positions of a classifier's
last block) are dropped before any gradient product (the sparse-by-dense backward); on CUDA (or with
``sync_free``) they are kept instead, since finding them needs a host synchronisation.

Block selection (``selection="block"``): ``u_out`` (out, r_out) and ``u_in`` (in, r_in) are the truncated
bases; the forward saves ``x u_in`` (T, r_in) instead of ``x``; backward computes only the block
``G̃_B = (g u_out)ᵀ (x u_in)`` and keeps its top-k; the trained delta ``S`` is dense over the block
(``sg_delta``, r_out·r_in values) and is pushed into ``W`` every step as ``u_out S_step u_inᵀ``. A block
over every output row (``r_out = out``) uses the standard output basis (``out_basis`` None, ``u_out`` the
identity): no output rotation anywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .block import block_gradient, low_rank_product
from .config import SELECTIONS, SparseGradConfig
from .layer_autograd import SparseGradFunction
from .precision import basis_as, basis_transposed, gradient_dtype
from .selection import rotate_gradient, select_rotated_topk
from .topk_batch import PENDING

SPARSE_PUSHBACK_MAX_DENSITY = 0.1
"""The fullest ``S`` (share of the block's entries) pushed back as a sparse matrix (:meth:`SparseGradLinear.pushes_back_sparsely`)."""
GATHER_MAX_SHARE = 0.9
"""An update touching at least this share of a basis's columns uses the whole basis instead of gathering them."""
SPARSE_PUSHBACK_MIN_MACS = 1 << 25
"""The smallest dense push-back (``out·r_in·in`` multiply-adds) replaced by a sparse one: below it the sparse
kernel's fixed cost outweighs its savings."""


class SparseGradLinear(nn.Module):
    """Drop-in replacement of an MLP ``nn.Linear`` (or GPT-2 ``Conv1D``) trained by SparseGrad.

    Attributes: ``weight`` (out, in) the current dense weight in the original basis (a buffer, never
    a dense gradient), ``bias`` (a parameter with the caller's trainability), ``u_out`` (out, r_out) and
    ``u_in`` (in, r_in) bases with orthonormal columns shared by all layers of one kind (square unless
    ``selection="block"``; ``out_basis`` holds ``u_out``, or None for the standard basis of a block over
    every output row), ``sg_indices``/``sg_delta`` the trained delta ``ΔW̃``: for fixed selection the
    support's flat row-major indices into (out, in), sorted, and their values; otherwise ``sg_indices`` is
    empty and ``sg_delta`` holds the whole (r_out, r_in) block row-major (for dynamic selection the block is
    the whole (out, in) matrix).
    """

    weight: torch.Tensor
    out_basis: torch.Tensor | None
    u_in: torch.Tensor
    sg_indices: torch.Tensor
    sg_delta: torch.Tensor
    bias_base: torch.Tensor | None
    config: SparseGradConfig | None = None
    """The configuration the layer was installed with (``apply_sparsegrad``); adapters record it."""
    base_fingerprint: str = ""
    """Fingerprint of the base weight the layer was built from; adapters check it when loading."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: nn.Parameter | None,
        u_out: torch.Tensor | None,
        u_in: torch.Tensor,
        k: int,
        *,
        selection: str = "dynamic",
        support: torch.Tensor | None = None,
        kind: str = "",
        base_layer_type: Literal["linear", "conv1d"] = "linear",
    ) -> None:
        super().__init__()
        out_f, in_f = weight.shape
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")
        if u_out is None and selection != "block":
            raise ValueError("only block selection can use the standard output basis (u_out None)")
        out_shape = (out_f, out_f) if u_out is None else tuple(u_out.shape)
        r_out, r_in = (out_shape[1], u_in.shape[1]) if selection == "block" else (out_f, in_f)
        if out_shape != (out_f, r_out) or tuple(u_in.shape) != (in_f, r_in) or r_out > out_f or r_in > in_f:
            raise ValueError(
                f"basis shapes {out_shape}/{tuple(u_in.shape)} do not match weight {tuple(weight.shape)}"
            )
        if selection == "block" and k > r_out * r_in:
            raise ValueError(f"k = {k} entries do not fit in the {r_out} x {r_in} block")
        self.out_features, self.in_features = int(out_f), int(in_f)
        self.r_out, self.r_in = int(r_out), int(r_in)
        self.k = int(k)
        self.selection = selection
        self.kind = kind
        self.base_layer_type = base_layer_type
        self.register_buffer("weight", weight.detach())
        self.bias = bias
        # The base model's bias: what a LoRA export's bias delta is taken against.
        self.register_buffer("bias_base", None if bias is None else bias.detach().clone(), persistent=False)
        self.register_buffer("out_basis", u_out, persistent=False)
        self.register_buffer("u_in", u_in, persistent=False)
        # Gradients flow into the sparse path only while this scalar requires grad.
        self.sg_anchor = nn.Parameter(torch.zeros((), device=weight.device))
        self.register_buffer("sg_indices", torch.empty(0, dtype=torch.long, device=weight.device), persistent=False)
        self.register_buffer("sg_delta", torch.empty(0, dtype=torch.float32, device=weight.device), persistent=False)
        # Per-step state (not part of the trained result).
        self.accumulating = False  # set for all but the last micro-batch of an accumulated step
        self.track_original_share = False
        self.sync_free: bool | None = None
        """Keep zero-gradient token rows instead of finding them, and push updates back with dense products
        instead of sparse ones (both need data-dependent shapes, a host sync on CUDA); None: on CUDA only."""
        self._pending_topk = False  # this step's top-k waits in topk_batch.PENDING
        self.selected = None
        self._acc: torch.Tensor | None = None
        self._acc_dense: torch.Tensor | None = None  # block selection, tracked share: the summed G
        self.last_energy = {}
        self.gradient_sink: Callable[[torch.Tensor], None] | None = None
        """While set (re-calibration), backward hands it the dense weight gradient ``G = gᵀx`` (out, in) and
        selects nothing."""
        self._support: dict[str, torch.Tensor] | None = None
        if selection == "fixed":
            if support is None or support.numel() != self.k:
                raise ValueError("selection='fixed' needs a support of exactly k flat indices")
            self._set_support(support.to(weight.device))
            # The support is the trained index set from the start (so an untrained adapter saves it).
            assert self._support is not None
            self.sg_indices = self._support["idx"].clone()
            self.sg_delta = torch.zeros(self.k, dtype=torch.float32, device=weight.device)
        else:
            self.sg_delta = torch.zeros(self.r_out * self.r_in, dtype=torch.float32, device=weight.device)

    _PER_STEP = frozenset({"selected", "_selected", "last_energy", "_last_energy", "_pending_topk", "_acc", "_acc_dense"})
    """Attributes every step sets, a dozen times per layer: plain attributes (never parameters, buffers or modules),
    so they skip ``nn.Module.__setattr__``'s bookkeeping (about 6 µs a time; 1.7 ms of host time per step of a
    24-layer model, with a GPU waiting on the host)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SparseGradLinear._PER_STEP:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> SparseGradLinear:
        """``.to()``, ``.cuda()`` and the like move the fixed support's index tensors with the buffers."""
        super()._apply(fn, recurse)
        if self._support is not None:
            self._support = {name: fn(t) for name, t in self._support.items()}
        return self

    @property
    def selected(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This step's selection ``(flat indices, values)``, or None (a deferred batched top-k runs first)."""
        if self._pending_topk:
            PENDING.flush()
        return self._selected

    @selected.setter
    def selected(self, value: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self._selected = value

    @property
    def last_energy(self) -> dict[str, torch.Tensor]:
        """The last selection's energies: ``kept`` (top-k), ``block_total`` or ``total``, and on tracked steps
        the original basis' (a deferred batched top-k runs first)."""
        if self._pending_topk:
            PENDING.flush()
        return self._last_energy

    @last_energy.setter
    def last_energy(self, value: dict[str, torch.Tensor]) -> None:
        self._last_energy = value

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.sg_anchor.requires_grad:
            return SparseGradFunction.apply(x, self.weight, self.bias, self.sg_anchor, self)  # type: ignore[no-any-return]
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"k={self.k}, selection={self.selection}, kind={self.kind!r}"
            + (f", block=({self.r_out}, {self.r_in})" if self.selection == "block" else "")
        )

    @property
    def u_out(self) -> torch.Tensor:
        """The output basis (out, r_out); the identity where ``out_basis`` is None (the standard basis)."""
        if self.out_basis is not None:
            return self.out_basis
        return torch.eye(self.out_features, dtype=self.u_in.dtype, device=self.u_in.device)

    def out_rotated(self, s: torch.Tensor) -> torch.Tensor:
        """``u_out @ s`` for ``s`` (r_out, c): ``s`` itself in the standard output basis."""
        return s if self.out_basis is None else self.out_basis @ s

    def merged_weight(self) -> torch.Tensor:
        """The current dense weight in the original basis, (out, in)."""
        return self.weight.detach()

    def delta_weight(self) -> torch.Tensor:
        """``u_out ΔW̃ u_inᵀ``: the trained change in the original basis, dense (out, in)."""
        if self.selection != "fixed":
            return self.out_rotated(self.sg_delta.view(self.r_out, self.r_in)) @ self.u_in.T
        d = torch.zeros(self.out_features * self.in_features, dtype=torch.float32, device=self.weight.device)
        d[self.sg_indices] = self.sg_delta
        d2 = d.view(self.out_features, self.in_features)
        return self.u_out @ d2 @ self.u_in.T

    def export_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The trained delta as ``(flat indices, values)`` into the (r_out, r_in) block (for dynamic selection
        the whole matrix): its non-zero entries, or, when at least half of it is non-zero (indices would cost
        more than they save), no indices and the whole block. Fixed selection: the support and its values."""
        if self.selection != "fixed":
            idx = self.sg_delta.nonzero().squeeze(1)
            if 2 * idx.numel() >= self.sg_delta.numel():
                return idx[:0], self.sg_delta.clone()  # not a view: the optimizer stacks a kind's deltas
            return idx, self.sg_delta.index_select(0, idx)
        return self.sg_indices, self.sg_delta

    def touched_entries(self) -> int:
        """Entries of ``ΔW̃`` the training has moved so far."""
        return int(self.sg_delta.count_nonzero()) if self.selection != "fixed" else int(self.sg_indices.numel())

    @torch.no_grad()
    def load_delta(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Set the trained delta from :meth:`export_delta`'s form and add it to ``weight``."""
        self.set_delta(indices, values)
        self.weight.add_(self.delta_weight().to(self.weight.dtype))

    @torch.no_grad()
    def set_delta(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Set the trained delta (``sg_indices``/``sg_delta``) from :meth:`export_delta`'s form, or from the
        sorted sparse form earlier versions kept for dynamic selection; ``weight`` is left as it is."""
        device = self.weight.device
        if self.selection != "fixed":
            size = self.r_out * self.r_in
            if indices.numel() == 0 and values.numel() == size:  # the whole block
                self.sg_delta = values.float().to(device).clone()
            else:
                self.sg_delta = torch.zeros(size, dtype=torch.float32, device=device)
                self.sg_delta[indices.long().to(device)] = values.float().to(device)
        else:
            self.sg_indices = indices.long().to(device)
            self.sg_delta = values.float().to(device)

    # ------------------------------------------------------------------ backward side
    def drops_rows(self, t: torch.Tensor) -> bool:
        """Whether backward drops zero-gradient rows for tensors on ``t``'s device (not where it must not sync)."""
        return not (self.sync_free if self.sync_free is not None else t.is_cuda)

    def _drop_zero_rows(self, g: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The sparse-by-dense row drop: rows of ``g`` (and ``others``) where ``g`` is non-zero."""
        if not self.drops_rows(g):
            return (g, *others)
        # One reduction pass (a third of the time of ``g.ne(0).any(1)``, which writes a mask as large as g); a row
        # with a NaN has a NaN maximum and is kept.
        nonzero = g.abs().amax(dim=1) != 0
        if bool(nonzero.all()):
            return (g, *others)
        rows = nonzero.nonzero().squeeze(1)
        return tuple(t.index_select(0, rows) for t in (g, *others))

    def record_block_gradient(self, g: torch.Tensor, xu: torch.Tensor | None, x: torch.Tensor | None) -> None:
        """Block selection, from backward with ``g`` (T, out) and ``xu = x u_in`` (T, r_in) or ``x`` (T, in):
        the top-k of ``G̃_B`` (summed over micro-batches). With ``x``, zero-gradient rows are dropped first
        and, when tracked, the original-basis share is measured."""
        if x is not None:
            g, x = self._drop_zero_rows(g, x)
            xu = x @ basis_as(self.u_in, x.dtype)
        assert xu is not None
        dt = gradient_dtype(g, xu)
        g = g.to(dt)
        if not self.track_original_share:
            x = None
        out_basis = None if self.out_basis is None else basis_as(self.out_basis, dt)
        block = block_gradient(g, xu.to(dt), out_basis).float()
        if self._acc is not None:
            block = block.add_(self._acc)
            self._acc = None
        if self.accumulating:
            self._acc = block
            if x is not None:
                self._acc_dense = (g.T @ x.to(dt)).float() + (self._acc_dense if self._acc_dense is not None else 0)
            return
        flat = block.reshape(-1)
        if x is None:  # the sync-free path, untracked: selected with other layers' (topk_batch)
            PENDING.defer(self, flat, "block_total")
            return
        idx = torch.topk(flat.abs(), self.k, sorted=False).indices
        vals = flat.index_select(0, idx)
        self.selected = (idx, vals)
        self.last_energy = {"kept": torch.dot(vals, vals), "block_total": torch.dot(flat, flat)}  # one kernel each
        if x is not None:
            dense = (g.T @ x.to(dt)).float()
            if self._acc_dense is not None:
                dense = dense.add_(self._acc_dense)
                self._acc_dense = None
            self.last_energy["total"] = dense.square().sum()
            kept = torch.topk(dense.flatten().abs(), self.k, sorted=False).values
            self.last_energy["original_kept"] = kept.square().sum()

    def record_gradient(self, g: torch.Tensor, x: torch.Tensor) -> None:
        """Called from backward with ``g`` (T, out) and ``x`` (T, in): select this step's entries."""
        g, x = self._drop_zero_rows(g, x)
        dt = gradient_dtype(g, x)
        g, x = g.to(dt), x.to(dt)
        if self.gradient_sink is not None:
            self.gradient_sink((g.T @ x).float())
            return
        if self.selection == "fixed":
            vals = self._rotated_at_support(g, x)
            if self._acc is not None:
                vals = vals + self._acc
                self._acc = None
            if self.accumulating:
                self._acc = vals
                return
            assert self._support is not None
            self.selected = (self._support["idx"], vals)
            return
        if self.accumulating or self._acc is not None:
            grad = (g.T @ x).float()  # (out, in), original basis: accumulate before rotating (exact top-k of the sum)
            if self._acc is not None:
                grad = grad.add_(self._acc)
                self._acc = None
            if self.accumulating:
                self._acc = grad
                return
            self._select(grad=grad)
        else:
            self._select(g=g, x=x)

    def _select(self, grad: torch.Tensor | None = None, g: torch.Tensor | None = None,
                x: torch.Tensor | None = None) -> None:
        ref = grad if grad is not None else g
        assert ref is not None
        sync_free = not self.drops_rows(ref)
        u_out, u_in = basis_as(self.u_out, ref.dtype), basis_as(self.u_in, ref.dtype)
        if sync_free and not self.track_original_share:  # selected with other layers' (topk_batch)
            PENDING.defer(self, rotate_gradient(u_out, u_in, grad=grad, g=g, x=x).reshape(-1).float(), "total")
            return
        idx, vals, total = select_rotated_topk(u_out, u_in, self.k, grad=grad, g=g, x=x, sync_free=sync_free)
        self.selected = (idx, vals)
        self.last_energy["kept"] = torch.dot(vals, vals)
        self.last_energy["total"] = total
        if self.track_original_share:
            if grad is not None:
                dense = grad
            else:
                assert g is not None and x is not None
                dense = (g.T @ x).float()
            kept = torch.topk(dense.flatten().abs(), self.k, sorted=False).values
            self.last_energy["original_kept"] = kept.square().sum()

    def _set_support(self, support: torch.Tensor) -> None:
        idx = torch.sort(support.long()).values
        rows, cols = idx // self.in_features, idx % self.in_features
        r_uniq, r_inv = torch.unique(rows, return_inverse=True)
        c_uniq, c_inv = torch.unique(cols, return_inverse=True)
        self._support = {
            "idx": idx,
            "r_inv": r_inv,
            "c_inv": c_inv,
            "rows": r_uniq,
            "cols": c_uniq,
        }

    def _support_bases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The basis columns the support touches, ``u_out[:, R]`` (out, |R|) and ``u_in[:, C]`` (in, |C|).

        Gathered per step rather than stored: a support usually touches most rows of the small side,
        so per-layer copies would cost nearly a full basis per layer instead of one per kind.
        """
        s = self._support
        assert s is not None
        rows, cols = s["rows"], s["cols"]
        u_out_r = self.u_out if rows.numel() == self.out_features else self.u_out.index_select(1, rows)
        u_in_c = self.u_in if cols.numel() == self.in_features else self.u_in.index_select(1, cols)
        return u_out_r, u_in_c

    def _rotated_at_support(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``G̃`` at the fixed support only: ``(g u_out[:, R])ᵀ (x u_in[:, C])`` gathered to k values."""
        s = self._support
        assert s is not None
        t = g.shape[0]
        nr, nc = s["rows"].numel(), s["cols"].numel()
        cost_factored = t * (self.out_features * nr + self.in_features * nc + nr * nc)
        cost_dense = t * self.out_features * self.in_features + nr * self.out_features * self.in_features + nr * self.in_features * nc
        u_out_r, u_in_c = (u.to(g.dtype) for u in self._support_bases())
        if cost_factored <= cost_dense:
            block = (g @ u_out_r).T @ (x @ u_in_c)  # (|R|, |C|)
        else:
            block = (u_out_r.T @ (g.T @ x)) @ u_in_c
        return block[s["r_inv"], s["c_inv"]].float()

    # ------------------------------------------------------------------ optimizer side
    def pushes_back_densely(self) -> bool:
        """Whether an update reaches ``weight`` through :func:`add_rotated_deltas`, stacked with its kind's, as ``S``
        over the (r_out, r_in) block (dense, or sparse where :meth:`pushes_back_sparsely`): block selection, and
        exact selection where zero rows are kept (its k entries
        touch nearly every row and most columns, so the product costs what the touched-rows/cols one does, and it
        has no data-dependent shapes, so no host sync on CUDA)."""
        return self.selection == "block" or (self.selection == "dynamic" and not self.drops_rows(self.weight))

    def pushes_back_sparsely(self) -> bool:
        """Whether :func:`add_rotated_deltas` multiplies the update ``S`` as a sparse (CSR) matrix of its k entries
        instead of a dense one (both without host synchronisation; ``S`` at most :data:`SPARSE_PUSHBACK_MAX_DENSITY`
        full):

        * exact selection where zero rows are kept (CUDA): ``W += u_out S u_inᵀ`` over the full bases costs
          ``k·max(out, in) + out·in·min(out, in)`` multiply-adds instead of the dense ``out·in·(out + in)``, a
          rotation fewer;
        * a block in the standard output basis, float32, where rows are dropped (CPU): ``W += S u_inᵀ`` costs
          ``c·k·in`` instead of ``out·r_in·in``, where the sparse kernel pays (``bench/pushback.py``: a dense product
          of at least :data:`SPARSE_PUSHBACK_MIN_MACS` multiply-adds)."""
        if self.k > SPARSE_PUSHBACK_MAX_DENSITY * self.r_out * self.r_in:
            return False
        if self.selection == "dynamic":
            return not self.drops_rows(self.weight)
        return (self.selection == "block" and self.out_basis is None and self.weight.dtype == torch.float32
                and self.drops_rows(self.weight)
                and self.out_features * self.r_in * self.in_features >= SPARSE_PUSHBACK_MIN_MACS)

    def stack_key(self) -> tuple[object, ...] | None:
        """Layers with one key (the same shapes, k, bases and weight dtype and device) take their optimizer update
        as one stacked operation (:func:`add_rotated_deltas`); None: this layer's update goes alone."""
        if not self.pushes_back_densely():
            return None
        out_basis = None if self.out_basis is None else self.out_basis.data_ptr()
        return (self.out_features, self.in_features, self.r_out, self.r_in, self.k, out_basis,
                self.u_in.data_ptr(), self.weight.dtype, self.weight.device)

    def pushback_bytes(self) -> int:
        """Bytes of the temporaries one update of this layer makes in :func:`add_rotated_deltas` (``S`` and the
        product of a basis with it)."""
        if self.selection == "dynamic" and self.pushes_back_sparsely():  # one layer at a time: the product only
            return self.out_features * self.in_features * self.u_in.element_size()
        n = self.r_out * self.r_in
        product = 0 if self.out_basis is None else min(self.out_features * self.r_in, self.in_features * self.r_out)
        return (n + product) * self.u_in.element_size()

    @torch.no_grad()
    def add_rotated_delta(self, idx: torch.Tensor, values: torch.Tensor) -> None:
        """``W += u_out[:, R] · S · u_in[:, C]ᵀ`` where ``S`` holds ``values`` at flat ``idx`` of W̃."""
        if self.pushes_back_densely():
            add_rotated_deltas([self], idx.unsqueeze(0), values.unsqueeze(0))
            return
        support = self._support
        if support is not None and idx.data_ptr() == support["idx"].data_ptr() and idx.shape == support["idx"].shape:
            r_inv, c_inv = support["r_inv"], support["c_inv"]
            a, b = self._support_bases()
        else:
            r_inv, a = self._touched(idx // self.in_features, self.u_out)
            c_inv, b = self._touched(idx % self.in_features, self.u_in)
        # The product is formed in the bases' precision (float32) and its factors are cast to the weight's.
        nr, nc = a.shape[1], b.shape[1]
        vals = values.to(a.dtype)
        if self.drops_rows(self.weight):
            p, q = self._sparse_product_factors(a, b, r_inv, c_inv, vals)
        else:
            s_mat = torch.zeros(nr, nc, dtype=a.dtype, device=self.weight.device)
            s_mat.index_put_((r_inv, c_inv), vals, accumulate=True)
            p, q = low_rank_product(a, s_mat, b)
        self.weight.addmm_(p.to(self.weight.dtype), q.T.to(self.weight.dtype))

    @staticmethod
    def _touched(positions: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The basis columns an update touches and each entry's place among them: ``(inverse, basis[:, touched])``;
        the whole basis, ungathered, where the update touches at least :data:`GATHER_MAX_SHARE` of its columns
        (the top-k of a rotated gradient touches 96–99% of the rows: a gather would copy nearly the whole basis)."""
        touched, inverse = torch.unique(positions, return_inverse=True)
        if touched.numel() >= GATHER_MAX_SHARE * basis.shape[1]:
            return positions, basis
        return inverse, basis.index_select(1, touched)

    def _sparse_product_factors(self, a: torch.Tensor, b: torch.Tensor, r_inv: torch.Tensor, c_inv: torch.Tensor,
                                vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p, q)`` with ``p qᵀ = a S bᵀ``, ``S`` (|R|, |C|) holding the k ``vals`` at ``(r_inv, c_inv)``,
        multiplied as a sparse matrix: ``out·k + out·|C|·in`` or ``k·in + out·|R|·in`` multiply-adds instead of a
        densified |R|×|C| block's ``out·|R|·|C|`` on top (|R|, |C| are nearly full sizes: that costs a rotation)."""
        nr, nc = a.shape[1], b.shape[1]
        out_f, in_f, k = self.out_features, self.in_features, vals.numel()
        if out_f * k + out_f * nc * in_f <= k * in_f + out_f * nr * in_f:
            st = csr_from_flat(c_inv * nr + r_inv, vals, (nc, nr))
            return torch.sparse.mm(st, self._transposed(a)).T, b  # (Sᵀ aᵀ)ᵀ = a S
        sm = csr_from_flat(r_inv * nc + c_inv, vals, (nr, nc))
        return a, torch.sparse.mm(sm, self._transposed(b)).T  # b Sᵀ, so that p qᵀ = a S bᵀ

    def _transposed(self, a: torch.Tensor) -> torch.Tensor:
        """``a.T`` for a sparse-by-dense product: a whole basis's contiguous transpose, kept (the CPU product would copy
        the transposed view at every call); a gathered one as a view."""
        return basis_transposed(a) if a is self.out_basis or a is self.u_in else a.T

    def clear_step_state(self) -> None:
        PENDING.discard(self)
        self.selected = None
        self._acc = None
        self._acc_dense = None


def csr_matrices(flat: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> list[torch.Tensor]:
    """One sparse CSR matrix of ``shape`` per row of ``flat`` and ``values`` (both (L, k)), holding the values at the
    distinct row-major flat indices (any order). Sorted and counted on the device for all rows at once (a handful of
    operations whatever L): no host synchronisation, no duplicate check."""
    key, order = torch.sort(flat, dim=1)
    bounds = torch.arange(shape[0] + 1, device=flat.device) * shape[1]
    crow = torch.searchsorted(key, bounds.expand(key.shape[0], -1).contiguous())
    col, vals = key % shape[1], values.gather(1, order)
    with warnings.catch_warnings():  # sparse CSR is "beta" in torch and says so once per process
        warnings.simplefilter("ignore", UserWarning)
        return [torch.sparse_csr_tensor(crow[i], col[i], vals[i], shape) for i in range(key.shape[0])]


def csr_from_flat(flat: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """:func:`csr_matrices` of one matrix: ``flat`` and ``values`` (k,)."""
    return csr_matrices(flat.unsqueeze(0), values.unsqueeze(0), shape)[0]


@torch.no_grad()
def add_rotated_deltas(layers: list[SparseGradLinear], idx: torch.Tensor, values: torch.Tensor) -> None:
    """``W_i += u_out S_i u_inᵀ`` for layers of one :meth:`~SparseGradLinear.stack_key`, ``S_i`` over the
    (r_out, r_in) block holding ``values[i]`` at the flat indices ``idx[i]`` (both (L, k)). Dense: one scatter and at
    most one batched product for all of them, then one ``addmm`` per layer, the product formed in the bases'
    precision (float32) and its factors cast to the weight's. Sparse (:meth:`~SparseGradLinear.pushes_back_sparsely`):
    one sparse-by-dense ``addmm`` per layer."""
    first = layers[0]
    if first.pushes_back_sparsely():
        values = values.to(first.u_in.dtype)
        if first.selection == "block":  # the standard output basis: W += S u_inᵀ
            u_in_t = first.u_in.T.contiguous()
            for layer, s_i in zip(layers, csr_matrices(idx, values, (first.r_out, first.r_in)), strict=True):
                torch.addmm(layer.weight, s_i, u_in_t, out=layer.weight)
            return
        # Exact selection over the full bases: the product with the smaller basis stays dense, the other is sparse.
        out_f, in_f, dtype = first.out_features, first.in_features, first.weight.dtype
        if out_f >= in_f:  # (u_out S) u_inᵀ, with u_out S = (Sᵀ u_outᵀ)ᵀ: Sᵀ (in, out) in CSR
            u_in_t = first.u_in.T.to(dtype)
            for layer, st in zip(layers, csr_matrices(idx % in_f * out_f + idx // in_f, values, (in_f, out_f)), strict=True):
                p = torch.sparse.mm(st, first.u_out.T).T  # a column-major operand: no copy on CUDA
                layer.weight.addmm_(p.to(dtype), u_in_t)
        else:  # u_out (S u_inᵀ): S (out, in) in CSR
            u_out = first.u_out.to(dtype)
            for layer, s_i in zip(layers, csr_matrices(idx, values, (out_f, in_f)), strict=True):
                layer.weight.addmm_(u_out, torch.sparse.mm(s_i, first.u_in.T).to(dtype))
        return
    s = torch.zeros(len(layers), first.r_out * first.r_in, dtype=first.u_in.dtype, device=first.weight.device)
    s.scatter_(1, idx, values.to(s.dtype))
    s_blocks = s.view(len(layers), first.r_out, first.r_in)
    if first.out_basis is None:
        p, q = s_blocks, first.u_in
    else:
        p, q = low_rank_product(first.out_basis, s_blocks, first.u_in)
    p, q = p.to(first.weight.dtype), q.to(first.weight.dtype)
    for i, layer in enumerate(layers):
        layer.weight.addmm_(p[i] if p.dim() == 3 else p, (q[i] if q.dim() == 3 else q).T)
