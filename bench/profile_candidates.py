"""Candidate library changes that ``profile_sg.py`` measures (Part B): copies of library functions, changed,
defined here so that the library is not edited. Each is checked against the library's result before it is
timed.

* ``add_rotated_delta_sparse``: ``SparseGradLinear.add_rotated_delta`` multiplying by the sparse ``S``
  (k non-zeros) as CSR instead of a dense ``|R|×|C|`` block;
* ``rotate_gradient_best``: ``selection.rotate_gradient`` choosing among four associations of
  ``u_outᵀ gᵀ x u_in`` by FLOPs (the library chose between two).

This module writes nothing itself: ``profile_sg.py`` (Part B, ``profile_ab.py``) times these copies against the
library and writes the figures to ``bench/results/profile_<model>.json`` (``part_b_micro``, and
``part_b_end_to_end`` unless ``--skip-ab``). The committed files are from 2026-11-27 (commit a996e11). Both
changes went into the library on 2026-12-03 (commit 0e0ebca: the CPU push-back multiplies by the sparse S, and
``rotate_gradient`` considers all four associations), so a rerun now compares the copies with the library's own
versions of them; keep the committed files as the record of the change.
"""

from __future__ import annotations

from typing import Any

import torch


def add_rotated_delta_sparse(self: Any, idx: torch.Tensor, values: torch.Tensor) -> None:
    """Copy of ``SparseGradLinear.add_rotated_delta`` multiplying by the sparse S (k non-zeros) as CSR."""
    with torch.no_grad():
        if self._support is not None and idx is self._support["idx"]:
            s = self._support
            r_inv, c_inv = s["r_inv"], s["c_inv"]
            a, b = s["u_out_r"], s["u_in_c"]
        else:
            rows, r_inv = torch.unique(idx // self.in_features, return_inverse=True)
            cols, c_inv = torch.unique(idx % self.in_features, return_inverse=True)
            a, b = self.u_out.index_select(1, rows), self.u_in.index_select(1, cols)
        nr, nc = a.shape[1], b.shape[1]
        out_f, in_f, k = self.out_features, self.in_features, idx.numel()
        vals = values.to(self.weight.dtype)
        if out_f * k + out_f * nc * in_f <= k * in_f + out_f * nr * in_f:
            # (A S) Bᵀ with (A S)ᵀ = Sᵀ Aᵀ: sparse (nc × nr) @ dense (nr × out)
            st = (
                torch.sparse_coo_tensor(torch.stack([c_inv, r_inv]), vals, (nc, nr))
                .coalesce()
                .to_sparse_csr()
            )
            left_t = torch.sparse.mm(st, a.T.contiguous())  # (nc, out)
            self.weight.addmm_(left_t.T, b.T)
        else:
            sm = (
                torch.sparse_coo_tensor(torch.stack([r_inv, c_inv]), vals, (nr, nc))
                .coalesce()
                .to_sparse_csr()
            )
            right = torch.sparse.mm(sm, b.T.contiguous())  # (nr, in)
            self.weight.addmm_(a, right)


def rotate_gradient_best(
    u_out: torch.Tensor,
    u_in: torch.Tensor,
    *,
    grad: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``sparsegrad_core.selection.rotate_gradient``: ``u_outᵀ G u_in`` choosing among all the
    associations of ``u_outᵀ gᵀ x u_in`` by multiply-adds (the library chooses between the first two)."""
    o, i = u_out.shape[0], u_in.shape[0]
    if grad is not None:
        return u_out.T @ (grad @ u_in) if o >= i else (u_out.T @ grad) @ u_in
    assert g is not None and x is not None
    t = g.shape[0]
    costs = {
        "dense_then_rotate": t * o * i + o * i * (o + i),  # uoᵀ (gᵀx) ui
        "factored": t * (o * o + i * i + o * i),  # (g uo)ᵀ (x ui)
        "gu_then_in": t * o * o + t * o * i + o * i * i,  # ((g uo)ᵀ x) ui
        "xu_then_out": t * i * i + t * o * i + o * o * i,  # uoᵀ (gᵀ (x ui))
    }
    best = min(costs, key=costs.__getitem__)
    if best == "dense_then_rotate":
        grad = g.T @ x
        return u_out.T @ (grad @ u_in) if o >= i else (u_out.T @ grad) @ u_in
    if best == "factored":
        return (g @ u_out).T @ (x @ u_in)
    if best == "gu_then_in":
        return ((g @ u_out).T @ x) @ u_in
    return u_out.T @ (g.T @ (x @ u_in))
