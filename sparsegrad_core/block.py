"""Block-restricted SparseGrad: choosing the leading ``r_out × r_in`` block of the HOSVD bases, and
computing the rotated gradient inside it.

The HOSVD bases are ordered by calibration gradient energy, so the exact top-k entries of
``G̃ = u_outᵀ G u_in`` sit mostly in the leading rows and columns. Block selection takes the top-k of

    ``G̃_B = (g u_out[:, :r_out])ᵀ (x u_in[:, :r_in])``        (r_out, r_in)

only, at a cost of ``T·(out·r_out + in·r_in + r_out·r_in)`` instead of a full rotation.

**A block over every output row** (``r_out = out``) uses the standard output basis instead of the HOSVD one:
both span the whole output space, so the block holds the same subspace of updates, but the identity costs
nothing (no ``out²·r_in`` rotation in the gradient and the push-back, no ``out × out`` basis to store) and,
on the measured models, its top-k keeps as much of the gradient energy or more
(bench/results/block_fidelity_*.json). The rule measures that variant, not the fully rotated one.

**The rule** (:class:`BlockShareGrid`, :func:`choose_block`): over the calibration gradients of one
projection kind, for every block on a grid of sizes (per side the full size, then down by factors of
``2^(1/3)`` to 1/128 of it), the mean share of the exact top-k energy of ``G̃`` that the top-k inside the
block keeps. Among the blocks that hold at least ``k`` entries and whose step cost
(:func:`block_step_cost`) is at most ``block_max_cost`` times a dense weight gradient, the chosen block is
the cheapest keeping at least ``block_energy_share``, or, when none within the budget does, the one
keeping the most. The in-block top-k is found among the gradient's ``8k`` largest entries: exact
whenever the block holds ``k`` of them, a lower bound otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class BlockChoice:
    """The block chosen for one projection kind, and the share of the top-k energy it keeps on calibration."""

    r_out: int
    r_in: int
    kept_share: float | None
    """Mean share of the exact top-k energy that the in-block top-k keeps on the calibration gradients;
    None for a block given by the user."""
    grid: dict[str, Any] | None = None
    """The measured grid (``r_out``, ``r_in``, ``shares``, ``tokens``), to re-choose under another rule."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"r_out": self.r_out, "r_in": self.r_in, "kept_share": self.kept_share}
        if self.grid is not None:
            out["grid"] = self.grid
        return out


def size_grid(n: int, steps: int = 21) -> list[int]:
    """Candidate ranks for a side of ``n``: ``n``, then down by factors of ``2^(1/3)`` (to ``n/128``)."""
    return sorted({max(1, round(n * 2.0 ** (-j / 3))) for j in range(steps + 1)})


class BlockShareGrid:
    """Accumulates, for every block on the size grid, the share of the exact top-k energy that the
    in-block top-k keeps, averaged over calibration gradients."""

    def __init__(self, out_features: int, in_features: int, k: int, device: torch.device, oversample: int = 8) -> None:
        self.shape = (out_features, in_features)
        self.k = k
        self.m = min(out_features * in_features, max(oversample * k, 4096))
        self.r_out = size_grid(out_features)
        self.r_in = size_grid(in_features)
        self._r_in = torch.tensor(self.r_in, device=device).unsqueeze(1)  # (Gi, 1)
        self.sum = torch.zeros(len(self.r_out), len(self.r_in), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, g_in: torch.Tensor, u_out: torch.Tensor) -> None:
        """One calibration gradient rotated on the input side, ``G u_in`` (out, in), and the HOSVD output
        basis: shares of ``G̃ = u_outᵀ G u_in``'s top-k energy for the grid's blocks, the last grid row
        (``r_out = out``) measured in the standard output basis."""
        top = torch.topk((u_out.T @ g_in).reshape(-1).abs(), self.m, sorted=True)
        energy = top.values.to(torch.float64).square()
        exact = energy[: self.k].sum()
        if float(exact) <= 0:
            return
        rows, cols = top.indices // self.shape[1], top.indices % self.shape[1]
        for i, r_out in enumerate(self.r_out[:-1]):
            self.sum[i] += self._kept(rows < r_out, cols, energy) / exact
        top_id = torch.topk(g_in.reshape(-1).abs(), self.m, sorted=True)
        self.sum[-1] += self._kept(None, top_id.indices % self.shape[1], top_id.values.to(torch.float64).square()) / exact
        self.count += 1

    R_IN_CHUNK = 4
    """Grid columns measured at once: the working set is a few bytes per largest entry (``8k`` of them) and grid
    column, so measuring all columns at once made the calibration's second pass peak above the training step at
    BERT-base's shapes (``prepare_peak_bytes`` in ``bench/results/step_bert-base-4l_epyc_peft*.json``)."""

    def _kept(self, in_rows: torch.Tensor | None, cols: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Per ``r_in`` on the grid: the energy of the top-k inside the ``r_out × r_in`` block, from the largest
        entries (descending) given by their columns ``cols``, whether their row is below ``r_out`` (``in_rows``;
        None: every row) and their ``energy``."""
        kept = torch.empty(len(self.r_in), dtype=torch.float64, device=energy.device)
        for lo in range(0, len(self.r_in), self.R_IN_CHUNK):
            inside = cols.unsqueeze(0) < self._r_in[lo: lo + self.R_IN_CHUNK]  # (chunk, m)
            if in_rows is not None:
                inside &= in_rows.unsqueeze(0)
            take = inside & (inside.cumsum(1, dtype=torch.int32) <= self.k)
            kept[lo: lo + self.R_IN_CHUNK] = torch.where(take, energy, 0.0).sum(1)
        return kept

    def shares(self) -> torch.Tensor:
        """Mean kept share per grid block, (len(r_out), len(r_in))."""
        return self.sum / max(1, self.count)

    def choose(self, target: float, *, tokens: float, max_cost: float) -> BlockChoice:
        shares = self.shares()
        choice = choose_block(shares, self.r_out, self.r_in, self.shape, self.k, target, tokens=tokens,
                              max_cost=max_cost)
        grid = {"r_out": self.r_out, "r_in": self.r_in, "shares": [[round(float(v), 5) for v in row] for row in shares],
                "tokens": tokens, "k": self.k}
        return replace(choice, grid=grid)


def block_step_cost(shape: tuple[int, int], r_out: int, r_in: int, tokens: float) -> float:
    """Multiply-adds per step of one block layer with ``tokens`` rows: ``x u_in`` in the forward, the block
    gradient by its cheaper association, and the push-back ``W += u_out S u_inᵀ`` by its cheaper one (with
    no output rotation when ``r_out = out``), with a dense ``S`` (faster than a sparse one at these sizes, also
    on CPU: measured 6 vs 8 ms for a 3072×384 block with k = 23.6 k)."""
    out_f, in_f = shape
    xu = tokens * in_f * r_in
    if r_out == out_f:
        return xu + tokens * out_f * r_in + out_f * r_in * in_f
    grad = min(tokens * r_out * (out_f + r_in), r_in * (tokens * out_f + out_f * r_out))
    push = min(out_f * r_out * r_in + out_f * r_in * in_f, r_out * r_in * in_f + out_f * r_out * in_f)
    return xu + grad + push


def choose_block(
    shares: torch.Tensor,
    r_out_grid: list[int],
    r_in_grid: list[int],
    shape: tuple[int, int],
    k: int,
    target: float,
    *,
    tokens: float,
    max_cost: float,
) -> BlockChoice:
    """The cheapest grid block keeping ``target`` of the top-k energy and holding ``k`` entries, among
    those whose step cost is at most ``max_cost`` times a dense weight gradient (``tokens·out·in``).
    When no block within that budget reaches the target, the one keeping the most within it."""
    out_f, in_f = shape
    budget = max_cost * tokens * out_f * in_f
    # Ranked by (short of the target?, cost if not else -share, r_out, r_in): any block reaching the
    # target beats every block short of it.
    best: tuple[int, float, int, int] | None = None
    for i, r_out in enumerate(r_out_grid):
        for j, r_in in enumerate(r_in_grid):
            cost = block_step_cost(shape, r_out, r_in, tokens)
            if r_out * r_in < k or cost > budget:
                continue
            share = float(shares[i, j])
            # A tiny tolerance: a target of 1.0 must be reachable by the full block despite rounding.
            key = (0, cost, r_out, r_in) if share >= target - 1e-9 else (1, -share, r_out, r_in)
            if best is None or key < best:
                best = key
    if best is None:  # not even k entries fit the budget: the smallest block that holds them
        r_out, r_in = min(((a, b) for a in r_out_grid for b in r_in_grid if a * b >= k),
                          key=lambda ab: block_step_cost(shape, ab[0], ab[1], tokens))
        return BlockChoice(r_out, r_in, float(shares[r_out_grid.index(r_out), r_in_grid.index(r_in)]))
    _, _, r_out, r_in = best
    return BlockChoice(r_out, r_in, float(shares[r_out_grid.index(r_out), r_in_grid.index(r_in)]))


def block_gradient(g: torch.Tensor, xu: torch.Tensor, u_out: torch.Tensor | None) -> torch.Tensor:
    """``(g u_out)ᵀ xu`` (r_out, r_in) for ``g`` (T, out), ``xu = x u_in`` (T, r_in), ``u_out`` (out, r_out),
    by the cheaper association: ``T·r_out·(out + r_in)`` or ``r_in·(T·out + out·r_out)`` multiply-adds.
    ``u_out`` None: the standard output basis, ``gᵀ xu`` (out, r_in)."""
    if u_out is None:
        return g.T @ xu
    t, out_f = g.shape
    r_out, r_in = u_out.shape[1], xu.shape[1]
    if t * r_out * (out_f + r_in) <= r_in * (t * out_f + out_f * r_out):
        return (g @ u_out).T @ xu
    return u_out.T @ (g.T @ xu)


def low_rank_product(a: torch.Tensor, s: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(p, q)`` with ``p @ q.T == a @ s @ b.T`` for ``a`` (m, r), ``s`` (r, c), ``b`` (n, c), choosing
    the cheaper side to multiply ``s`` into (the caller adds ``p @ q.T`` with one ``addmm``). A stack of ``s``,
    (L, r, c), gives the stacked factor, (L, m, c) or (L, n, r), and the other one shared."""
    m, r = a.shape
    n, c = b.shape
    if m * r * c + m * c * n <= r * c * n + m * r * n:
        return a @ s, b
    return a, b @ s.mT
