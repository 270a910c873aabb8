"""Block-restricted SparseGrad: choosing the leading ``r_out × r_in`` block of the HOSVD bases, and
computing the rotated gradient inside it.

The HOSVD bases are ordered by calibration gradient energy, so the exact top-k entries of
``G̃ = u_outᵀ G u_in`` sit mostly in the leading rows and columns. Block selection takes the top-k of

    ``G̃_B = (g u_out[:, :r_out])ᵀ (x u_in[:, :r_in])``        (r_out, r_in)

only, at a cost of ``T·(out·r_out + in·r_in + r_out·r_in)`` instead of a full rotation.

**The rule** (:func:`choose_block`): over the calibration gradients of one projection kind, let ``M`` be
the mean, per entry of ``G̃``, of (energy of that entry if it is among the exact top-k, else 0) divided
by the exact top-k energy of its gradient. For a block, the sum of ``M`` over the block is the share of
the exact top-k energy whose entries lie inside the block; the in-block top-k keeps at least that much
(it may swap an outside entry for a smaller inside one, never lose an inside one). The chosen block is
the one with the smallest per-step cost ``out·r_out + in·r_in + r_out·r_in`` among those whose share is
at least ``block_energy_share`` and which hold at least ``k`` entries. Evaluated for every
``(r_out, r_in)`` at once from the 2-D prefix sums of ``M``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockChoice:
    """The block chosen for one projection kind, and the guaranteed share it keeps on calibration."""

    r_out: int
    r_in: int
    kept_share_bound: float | None
    """Mean share of the exact top-k energy that the exact top-k entries inside the block carry
    (a lower bound of what the in-block top-k keeps); None for a block given by the user."""

    def as_dict(self) -> dict[str, float | int | None]:
        return {"r_out": self.r_out, "r_in": self.r_in, "kept_share_bound": self.kept_share_bound}


class TopkEnergyMap:
    """Accumulates ``M``: per entry of ``G̃``, its mean share of the exact top-k energy (float64)."""

    def __init__(self, out_features: int, in_features: int, k: int, device: torch.device) -> None:
        self.map = torch.zeros(out_features * in_features, dtype=torch.float64, device=device)
        self.shape = (out_features, in_features)
        self.k = k
        self.count = 0

    def add(self, rotated: torch.Tensor) -> None:
        """``rotated``: one calibration gradient in the HOSVD basis, ``u_outᵀ G u_in`` (out, in)."""
        flat = rotated.reshape(-1).to(torch.float64)
        top = torch.topk(flat.abs(), self.k, sorted=False)
        energy = top.values.square()
        total = energy.sum()
        if float(total) > 0:
            self.map.index_add_(0, top.indices, energy / total)
        self.count += 1

    def choose(self, target: float) -> BlockChoice:
        return choose_block(self.map.view(self.shape) / max(1, self.count), self.k, target)


def choose_block(share_map: torch.Tensor, k: int, target: float) -> BlockChoice:
    """The cheapest leading block whose summed ``share_map`` reaches ``target`` and that holds ``k`` entries."""
    out_f, in_f = share_map.shape
    prefix = share_map.to(torch.float64).cumsum(0).cumsum(1)  # prefix[i, j]: block (i+1) × (j+1)
    r_out = torch.arange(1, out_f + 1, dtype=torch.float64, device=share_map.device).unsqueeze(1)
    r_in = torch.arange(1, in_f + 1, dtype=torch.float64, device=share_map.device).unsqueeze(0)
    cost = out_f * r_out + in_f * r_in + r_out * r_in
    # A tiny tolerance: a target of 1.0 must be reachable by the full block despite rounding.
    feasible = (prefix >= target - 1e-9) & (r_out * r_in >= k)
    cost = torch.where(feasible, cost, torch.full_like(cost, float("inf")))
    flat = int(torch.argmin(cost))
    i, j = divmod(flat, in_f)
    if not bool(feasible.view(-1)[flat]):
        i, j = out_f - 1, in_f - 1
    return BlockChoice(r_out=i + 1, r_in=j + 1, kept_share_bound=float(prefix[i, j]))


def block_gradient(g: torch.Tensor, xu: torch.Tensor, u_out: torch.Tensor) -> torch.Tensor:
    """``(g u_out)ᵀ xu`` (r_out, r_in) for ``g`` (T, out), ``xu = x u_in`` (T, r_in), ``u_out`` (out, r_out),
    by the cheaper association: ``T·r_out·(out + r_in)`` or ``r_in·(T·out + out·r_out)`` multiply-adds."""
    t, out_f = g.shape
    r_out, r_in = u_out.shape[1], xu.shape[1]
    if t * r_out * (out_f + r_in) <= r_in * (t * out_f + out_f * r_out):
        return (g @ u_out).T @ xu
    return u_out.T @ (g.T @ xu)


def low_rank_product(a: torch.Tensor, s: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(p, q)`` with ``p @ q.T == a @ s @ b.T`` for ``a`` (m, r), ``s`` (r, c), ``b`` (n, c), choosing
    the cheaper side to multiply ``s`` into (the caller adds ``p @ q.T`` with one ``addmm``)."""
    m, r = a.shape
    n, c = b.shape
    if m * r * c + m * c * n <= r * c * n + m * r * n:
        return a @ s, b
    return a, b @ s.T
