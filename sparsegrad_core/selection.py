"""Exact top-k selection of the rotated gradient G̃ = u_outᵀ G u_in.

The rotation is computed by the cheaper association for the number of token rows ``T`` kept
after the sparse-by-dense row drop:

* dense:    ``u_outᵀ (gᵀx) u_in``      — ``T·out·in + out·in·(out+in)`` multiply-adds;
* factored: ``(g u_out)ᵀ (x u_in)``    — ``T·(out² + in² + out·in)``;
* mixed:    ``((g u_out)ᵀ x) u_in``    — ``T·out² + T·out·in + out·in²``,
  or        ``u_outᵀ (gᵀ (x u_in))``   — ``T·in² + T·out·in + out²·in``.

Selecting exactly ``k`` of ``out·in`` magnitudes uses a sampled threshold that provably keeps the
top-k in a small candidate set (``torch.topk`` over a few thousand values instead of millions).
Bounding entries by column norms to skip part of the rotation was tried and rejected: a column's
residual energy sums thousands of entries below the k-th magnitude, so the bound almost never
prunes on real gradients.
"""

from __future__ import annotations

import math

import torch


def _prime_at_least(m: int) -> int:
    p = max(2, m)
    while any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        p += 1
    return p


def candidate_threshold(a: torch.Tensor, k: int) -> torch.Tensor:
    """A guess at a magnitude about ``2k`` entries of ``a`` (non-negative, 1-D) reach: a quantile of a sample.

    The sample takes every ``p``-th entry with ``p`` prime. The values are a matrix flattened row by row, and a
    stride sharing a factor with the row length samples a few columns only, whose magnitudes need not be typical
    (the rotated gradient's energy sits in its leading columns): stride 72 on 3072-wide rows kept too few candidates
    for half of a bert-base model's layers."""
    n = a.numel()
    sample = a[:: _prime_at_least(max(1, n // 32768))]
    q_rank = max(1, sample.numel() - math.ceil(2.0 * k * sample.numel() / n))
    return torch.kthvalue(sample, q_rank).values


def topk_abs_indices(values: torch.Tensor, k: int, *, sync_free: bool = False) -> torch.Tensor:
    """Indices of exactly ``k`` largest-magnitude entries of a 1-D tensor (any order).

    Exact: a threshold estimated from a sample at a prime stride keeps a candidate set that provably
    contains the top-k whenever it holds at least k entries; otherwise full ``topk`` is used.
    ``sync_free``: always the full ``topk`` (the candidate set has a data-dependent size, a host sync on CUDA).
    """
    a = values.abs()
    if sync_free:
        return torch.topk(a, k, sorted=False).indices
    return _topk_nonnegative(a, k)


def _topk_nonnegative(a: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`topk_abs_indices` of a non-negative 1-D tensor, through the candidate set where it is large enough."""
    n = a.numel()
    if n <= 8 * k or n < 1 << 16:
        return torch.topk(a, k, sorted=False).indices
    threshold = candidate_threshold(a, k)
    cand = (a >= threshold).nonzero().squeeze(1)
    if cand.numel() < k:
        return torch.topk(a, k, sorted=False).indices
    sub = torch.topk(a.index_select(0, cand), k, sorted=False).indices
    return cand.index_select(0, sub)


def topk_magnitude_rows(magnitudes: torch.Tensor, k: int, *, sync_free: bool = False) -> torch.Tensor:
    """Indices (L, k) of ``k`` largest entries of each row of ``magnitudes`` (L, n), non-negative: one ``torch.topk``
    over all rows where ``sync_free``, else :func:`topk_abs_indices`'s candidate set row by row (a few thousand
    values per row instead of ``n``)."""
    if sync_free or magnitudes.shape[1] <= 8 * k or magnitudes.shape[1] < 1 << 16:
        return torch.topk(magnitudes, k, dim=1, sorted=False).indices
    return torch.stack([_topk_nonnegative(row, k) for row in magnitudes])


def select_rotated_topk(
    u_out: torch.Tensor,
    u_in: torch.Tensor,
    k: int,
    *,
    grad: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
    sync_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k entries of ``G̃ = u_outᵀ G u_in`` with ``G = grad`` or ``G = gᵀ x`` (g: (T, out), x: (T, in)).

    Returns ``(flat row-major indices into (out, in), values, total energy ‖G̃‖² = ‖G‖²)``.
    """
    rot = rotate_gradient(u_out, u_in, grad=grad, g=g, x=x).reshape(-1).float()
    idx = topk_abs_indices(rot, k, sync_free=sync_free)
    return idx, rot.index_select(0, idx), torch.dot(rot, rot)


def rotate_gradient(
    u_out: torch.Tensor,
    u_in: torch.Tensor,
    *,
    grad: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
) -> torch.Tensor:
    """``u_outᵀ G u_in`` (out, in), by the cheaper association."""
    out_f, in_f = u_out.shape[0], u_in.shape[0]
    if grad is None:
        assert g is not None and x is not None
        t = g.shape[0]
        costs = {
            "dense": t * out_f * in_f + out_f * in_f * (out_f + in_f),
            "factored": t * (out_f * out_f + in_f * in_f + out_f * in_f),
            "out_first": t * out_f * out_f + t * out_f * in_f + out_f * in_f * in_f,
            "in_first": t * in_f * in_f + t * out_f * in_f + out_f * out_f * in_f,
        }
        best = min(costs, key=costs.__getitem__)
        if best == "factored":
            return (g @ u_out).T @ (x @ u_in)
        if best == "out_first":
            return ((g @ u_out).T @ x) @ u_in
        if best == "in_first":
            return u_out.T @ (g.T @ (x @ u_in))
        grad = g.T @ x
    if out_f >= in_f:
        return u_out.T @ (grad @ u_in)
    return (u_out.T @ grad) @ u_in
