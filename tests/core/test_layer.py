"""SparseGradLinear against a dense nn.Linear, and its per-step selection of rotated-gradient entries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsegrad_core import SparseGradConfig, SparseGradLinear, build_optimizer
from sparsegrad_core.selection import candidate_threshold, topk_abs_indices


def _make_pair(out_f: int, in_f: int, bias: bool, orthogonal, k: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    dense = nn.Linear(in_f, out_f, bias=bias)
    layer = SparseGradLinear(
        dense.weight.detach().clone(),
        nn.Parameter(dense.bias.detach().clone()) if bias else None,
        orthogonal(out_f, seed + 1),
        orthogonal(in_f, seed + 2),
        k,
    )
    return dense, layer


def _rotated_reference(layer: SparseGradLinear, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``u_outᵀ (gᵀ x) u_in`` in float64, densely."""
    g64 = g.reshape(-1, layer.out_features).double()
    x64 = x.reshape(-1, layer.in_features).double()
    return layer.u_out.double().T @ (g64.T @ x64) @ layer.u_in.double()


def _backward_with(layer: nn.Module, x: torch.Tensor, gy: torch.Tensor) -> None:
    y = layer(x)
    y.backward(gy)


def _assert_topk_selection(layer: SparseGradLinear, rot64: torch.Tensor) -> None:
    """``layer.selected`` holds exactly k distinct entries, their values are G̃ there, and no
    unselected entry is larger in magnitude than a selected one (up to float32 rounding)."""
    assert layer.selected is not None, "backward did not record a selection"
    idx, vals = layer.selected
    flat = rot64.flatten()
    assert idx.numel() == layer.k
    assert vals.numel() == layer.k
    assert torch.unique(idx).numel() == layer.k, "selected indices are not distinct"
    scale = float(flat.abs().max())
    torch.testing.assert_close(vals.double(), flat[idx.long()], rtol=0, atol=1e-5 * scale)
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[idx.long()] = False
    smallest_selected = float(flat[idx.long()].abs().min())
    largest_unselected = float(flat[mask].abs().max())
    assert smallest_selected >= largest_unselected - 1e-5 * scale
    # and where the float64 ranking has a clear gap at k, the sets coincide exactly
    top = torch.topk(flat.abs(), layer.k + 1).values
    if float(top[-2] - top[-1]) > 1e-4 * scale:
        expected = torch.topk(flat.abs(), layer.k).indices
        assert set(idx.tolist()) == set(expected.tolist())


# --------------------------------------------------------------------------- exactness vs dense


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("lead", [(7,), (3, 5)], ids=["2d", "3d"])
@pytest.mark.parametrize("shape", [(24, 40), (40, 24)], ids=["wide", "tall"])
def test_matches_dense_linear(bias, lead, shape, orthogonal, rel_err):
    out_f, in_f = shape
    dense, layer = _make_pair(out_f, in_f, bias, orthogonal)
    x = torch.randn(*lead, in_f)
    x_dense = x.clone().requires_grad_(True)
    x_sg = x.clone().requires_grad_(True)
    y_dense, y_sg = dense(x_dense), layer(x_sg)
    assert y_sg.shape == y_dense.shape
    assert rel_err(y_sg, y_dense) <= 1e-5

    gy = torch.randn_like(y_dense)
    (y_dense * gy).sum().backward()
    (y_sg * gy).sum().backward()
    assert rel_err(x_sg.grad, x_dense.grad) <= 1e-5
    if bias:
        assert layer.bias.grad is not None
        assert rel_err(layer.bias.grad, dense.bias.grad) <= 1e-5  # NOT a rotated bias gradient
    # the sparse path ran and produced no dense weight gradient
    assert layer.selected is not None
    assert layer.weight.grad is None
    assert not layer.weight.requires_grad


def test_matches_dense_when_input_needs_no_grad(orthogonal, rel_err):
    dense, layer = _make_pair(16, 24, True, orthogonal)
    x = torch.randn(4, 6, 24)
    gy = torch.randn(4, 6, 16)
    (dense(x) * gy).sum().backward()
    (layer(x) * gy).sum().backward()
    assert rel_err(layer.bias.grad, dense.bias.grad) <= 1e-5
    _assert_topk_selection(layer, _rotated_reference(layer, gy, x))


def test_eval_and_no_grad_forward_match_dense(orthogonal, rel_err):
    dense, layer = _make_pair(24, 40, True, orthogonal)
    x = torch.randn(2, 3, 40)
    with torch.no_grad():
        assert rel_err(layer(x), dense(x)) <= 1e-6
    layer.sg_anchor.requires_grad_(False)  # a frozen SparseGrad layer records nothing
    x2 = x.clone().requires_grad_(True)
    layer(x2).sum().backward()
    assert layer.selected is None
    assert x2.grad is not None


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("rows", [2, 4000], ids=["tinyT-factored", "largeT-dense"])
@pytest.mark.parametrize("shape", [(24, 40), (40, 24)], ids=["wide", "tall"])
def test_selection_is_topk_of_rotated_gradient(rows, shape, orthogonal):
    """Both associations of ``_rotated_full`` (tiny T → ``(g u_out)ᵀ (x u_in)``, large T →
    ``u_outᵀ (gᵀx) u_in``, in both of its orders) select the float64 top-k of ``u_outᵀ G u_in``."""
    out_f, in_f = shape
    _, layer = _make_pair(out_f, in_f, True, orthogonal, k=37)
    layer.track_original_share = True
    x = torch.randn(rows, in_f)
    gy = torch.randn(rows, out_f)
    _backward_with(layer, x, gy)
    rot64 = _rotated_reference(layer, gy, x)
    _assert_topk_selection(layer, rot64)
    # energy bookkeeping: kept / total of G̃, and what top-k of the ORIGINAL G would keep
    g64 = gy.double().T @ x.double()
    total = float(rot64.square().sum())
    kept = float(torch.topk(rot64.abs().flatten(), layer.k).values.square().sum())
    orig = float(torch.topk(g64.abs().flatten(), layer.k).values.square().sum())
    assert float(layer.last_energy["total"]) == pytest.approx(total, rel=1e-4)
    assert float(layer.last_energy["kept"]) == pytest.approx(kept, rel=1e-4)
    assert float(layer.last_energy["original_kept"]) == pytest.approx(orig, rel=1e-4)


def test_selection_3d_input(orthogonal):
    _, layer = _make_pair(24, 40, False, orthogonal, k=50)
    x = torch.randn(3, 7, 40)
    gy = torch.randn(3, 7, 24)
    _backward_with(layer, x, gy)
    _assert_topk_selection(layer, _rotated_reference(layer, gy, x))


@pytest.mark.parametrize("density,out_f,in_f", [(0.01, 64, 32), (0.013, 48, 40), (0.5, 3, 5), (1e-6, 8, 8)])
def test_k_is_rounded_density(density, out_f, in_f):
    k = SparseGradConfig(density=density).k_for(out_f, in_f)
    assert k == max(1, round(density * out_f * in_f))


def test_exactly_k_with_all_ties():
    """A rank-one all-ones gradient with identity bases: every entry of G̃ has the same magnitude."""
    out_f, in_f, k = 12, 10, 17
    layer = SparseGradLinear(torch.zeros(out_f, in_f), None, torch.eye(out_f), torch.eye(in_f), k)
    x = torch.ones(1, in_f)
    gy = torch.ones(1, out_f)
    _backward_with(layer, x, gy)
    idx, vals = layer.selected
    assert idx.numel() == k == vals.numel()
    assert torch.unique(idx).numel() == k
    assert torch.all(vals == 1.0)


def test_exactly_k_with_partial_ties_and_signs():
    """Entries ±2 (ties across sign) above a sea of ±1: the k largest magnitudes are chosen, never more."""
    out_f, in_f = 6, 8
    layer = SparseGradLinear(torch.zeros(out_f, in_f), None, torch.eye(out_f), torch.eye(in_f), 5)
    # G = gᵀx with T = in_f rows: x = I, so G[:, j] = g[j, :]
    g = torch.ones(in_f, out_f)
    g[::2] *= -1
    big = [(0, 1), (2, 3), (5, 7), (4, 0), (1, 6), (3, 3), (0, 7)]  # 7 entries of magnitude 2 > k = 5
    for r, c in big:
        g[c, r] *= 2
    _backward_with(layer, torch.eye(in_f), g)
    idx, vals = layer.selected
    assert idx.numel() == 5 and torch.unique(idx).numel() == 5
    assert torch.all(vals.abs() == 2.0)
    assert set(idx.tolist()) <= {r * in_f + c for r, c in big}


def test_zero_gradient_still_selects_exactly_k(orthogonal):
    _, layer = _make_pair(16, 24, True, orthogonal, k=9)
    x = torch.randn(5, 24)
    _backward_with(layer, x, torch.zeros(5, 16))
    idx, vals = layer.selected
    assert idx.numel() == 9 and torch.unique(idx).numel() == 9
    assert torch.all(vals == 0)


def test_padding_rows_do_not_change_selection(orthogonal):
    """Zero rows of the output gradient (padding positions) with arbitrary inputs there change nothing."""
    _, layer = _make_pair(24, 40, True, orthogonal, k=30)
    x = torch.randn(10, 40)
    gy = torch.randn(10, 24)
    _backward_with(layer, x, gy)
    idx_ref, vals_ref = layer.selected
    layer.clear_step_state()

    # the same 10 rows scattered among 30 padding rows in a (4, 10) batch, with large garbage inputs
    x_pad = 100 * torch.randn(4, 10, 40)
    g_pad = torch.zeros(4, 10, 24)
    pos = torch.randperm(40)[:10].sort().values
    x_pad.view(-1, 40)[pos] = x
    g_pad.view(-1, 24)[pos] = gy
    _backward_with(layer, x_pad, g_pad)
    idx, vals = layer.selected
    o_ref, o = torch.argsort(idx_ref), torch.argsort(idx)
    assert torch.equal(idx_ref[o_ref], idx[o])
    torch.testing.assert_close(vals[o], vals_ref[o_ref], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- fixed support


@pytest.mark.parametrize("rows", [2, 4000], ids=["tinyT", "largeT"])
def test_fixed_support_returns_rotated_gradient_at_support(rows, orthogonal):
    out_f, in_f, k = 24, 40, 60
    gen = torch.Generator().manual_seed(3)
    support = torch.randperm(out_f * in_f, generator=gen)[:k]  # unsorted on purpose
    layer = SparseGradLinear(
        torch.randn(out_f, in_f),
        nn.Parameter(torch.zeros(out_f)),
        orthogonal(out_f, 1),
        orthogonal(in_f, 2),
        k,
        selection="fixed",
        support=support,
    )
    x = torch.randn(rows, in_f)
    gy = torch.randn(rows, out_f)
    gy[::3] = 0  # some padding rows too
    _backward_with(layer, x, gy)
    idx, vals = layer.selected
    assert torch.equal(idx, support.sort().values)
    rot64 = _rotated_reference(layer, gy, x).flatten()
    torch.testing.assert_close(vals.double(), rot64[idx], rtol=0, atol=1e-5 * float(rot64.abs().max()))


def test_fixed_support_moves_with_the_layer(orthogonal):
    """``.to(device)`` after building (a fixed-mode adapter loaded on the CPU, then moved to a GPU) moves the
    support's index tensors with the buffers: on CUDA a backward would otherwise index across devices. The
    ``meta`` device stands in for a GPU on the CPU."""
    layer = SparseGradLinear(
        torch.randn(6, 8), None, orthogonal(6, 0), orthogonal(8, 1), 5, selection="fixed",
        support=torch.tensor([0, 9, 17, 30, 47]),
    )
    layer.to("meta")
    assert layer._support is not None
    assert {name: t.device.type for name, t in layer._support.items()} == dict.fromkeys(layer._support, "meta")
    assert layer.weight.device.type == layer.sg_indices.device.type == "meta"
    layer.to(torch.float64)
    assert layer._support["idx"].dtype == torch.long  # index tensors keep their dtype


def test_fixed_support_must_have_k_entries(orthogonal):
    with pytest.raises(ValueError, match="support"):
        SparseGradLinear(
            torch.randn(4, 6),
            None,
            orthogonal(4, 0),
            orthogonal(6, 1),
            5,
            selection="fixed",
            support=torch.arange(4),
        )
    with pytest.raises(ValueError, match="support"):
        SparseGradLinear(torch.randn(4, 6), None, orthogonal(4, 0), orthogonal(6, 1), 5, selection="fixed")


def test_basis_shape_mismatch_raises(orthogonal):
    with pytest.raises(ValueError, match="basis shapes"):
        SparseGradLinear(torch.randn(4, 6), None, orthogonal(6, 0), orthogonal(4, 1), 3)


def test_add_rotated_delta_is_low_rank_correction(orthogonal, scatter_dense, rel_err):
    """``W += u_out[:, R] S u_in[:, C]ᵀ`` equals ``u_out D u_inᵀ`` with D the dense scatter."""
    for out_f, in_f in [(24, 40), (40, 24), (64, 8)]:
        w0 = torch.randn(out_f, in_f)
        layer = SparseGradLinear(w0.clone(), None, orthogonal(out_f, 5), orthogonal(in_f, 6), 10)
        idx = torch.randperm(out_f * in_f)[:23]
        vals = torch.randn(23)
        layer.add_rotated_delta(idx, vals)
        d = scatter_dense(idx, vals, out_f, in_f)
        expected = layer.u_out.double() @ d @ layer.u_in.double().T
        assert rel_err(layer.weight - w0, expected) <= 1e-5


# --------------------------------------------------------------------------- large layers (≥ 65536 entries)
# Selection on large weights may take a sampled-threshold shortcut before topk; it must stay exact.


@pytest.mark.parametrize("rows", [3, 3000], ids=["tinyT", "largeT"])
def test_selection_exact_on_large_layer(rows, orthogonal):
    out_f, in_f = 384, 192  # 73728 entries, k = 737
    layer = SparseGradLinear(
        torch.randn(out_f, in_f),
        None,
        orthogonal(out_f, 1),
        orthogonal(in_f, 2),
        SparseGradConfig(density=0.01).k_for(out_f, in_f),
    )
    x = torch.randn(rows, in_f)
    gy = torch.randn(rows, out_f)
    _backward_with(layer, x, gy)
    _assert_topk_selection(layer, _rotated_reference(layer, gy, x))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_exactly_k_with_massive_ties_on_large_layer(levels):
    """Identity bases, G = gᵀx with g, x taking few values: |G| has 1-6 distinct levels, each held
    by thousands of entries, so the k-th magnitude is tied many times over."""
    out_f, in_f, k = 512, 256, 1311
    layer = SparseGradLinear(torch.zeros(out_f, in_f), None, torch.eye(out_f), torch.eye(in_f), k)
    gen = torch.Generator().manual_seed(levels)
    g = torch.randint(1, levels + 1, (1, out_f), generator=gen).float()
    g *= torch.where(torch.rand(1, out_f, generator=gen) < 0.5, -1.0, 1.0)
    x = torch.randint(1, levels + 1, (1, in_f), generator=gen).float()
    _backward_with(layer, x, g)
    idx, vals = layer.selected
    assert idx.numel() == k and vals.numel() == k
    assert torch.unique(idx).numel() == k
    flat = (g.T @ x).flatten()
    torch.testing.assert_close(vals, flat[idx], rtol=0, atol=0)
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[idx] = False
    assert float(vals.abs().min()) >= float(flat[mask].abs().max())


def test_selection_exact_when_mass_is_concentrated():
    """Top-k of a heavy-tailed rotated gradient (a few huge entries, a plateau, then noise): a sampled
    threshold can easily miss the huge entries; the selection may not."""
    out_f, in_f, k = 300, 256, 768
    layer = SparseGradLinear(torch.zeros(out_f, in_f), None, torch.eye(out_f), torch.eye(in_f), k)
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(out_f * in_f, generator=gen) * 1e-3
    hot = torch.randperm(out_f * in_f, generator=gen)[:k]
    grad[hot[:5]] = 1e3
    grad[hot[5:]] = 1.0
    grad = grad.view(out_f, in_f)
    # G = gᵀx with x = I (T = in rows): g = Gᵀ
    _backward_with(layer, torch.eye(in_f), grad.T.contiguous())
    idx, _ = layer.selected
    assert set(idx.tolist()) == set(hot.tolist())


@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_bf16_weights_train_with_the_delta_formed_in_float32(selection, orthogonal, rel_err):
    """bf16 weights (e.g. a LLaMA loaded in bf16): the push-back is formed with the float32 bases."""
    torch.manual_seed(0)
    out_f, in_f, k = 24, 16, 12
    weight = torch.randn(out_f, in_f).to(torch.bfloat16)
    u_out, u_in = orthogonal(out_f, 1), orthogonal(in_f, 2)
    if selection == "block":
        u_out, u_in = u_out[:, :8].contiguous(), u_in[:, :6].contiguous()
    support = torch.randperm(out_f * in_f)[:k] if selection == "fixed" else None
    layer = SparseGradLinear(weight.clone(), None, u_out, u_in, k, selection=selection, support=support)
    opt = build_optimizer(layer, lr=0.5)  # Adam moves entries by ~lr: far above bf16's resolution near |W| ~ 1
    x = torch.randn(5, in_f, dtype=torch.bfloat16)
    (layer(x).float() ** 2).sum().backward()
    opt.step()
    assert layer.weight.dtype == torch.bfloat16
    change = layer.weight.float() - weight.float()
    assert float(change.norm()) > 0
    assert rel_err(change, layer.delta_weight()) <= 5e-2  # bf16 rounding of W + ΔW (2^-8 of |W| per entry)


def test_sparse_push_back_equals_the_dense_one(orthogonal, rel_err):
    """CPU pushes the step's k entries back as a sparse product; the sync-free (CUDA) path densifies them."""
    torch.manual_seed(0)
    w = torch.randn(24, 16)
    sparse, dense = (SparseGradLinear(w.clone(), None, orthogonal(24, 1), orthogonal(16, 2), 9) for _ in range(2))
    dense.sync_free = True
    idx = torch.randperm(24 * 16, generator=torch.Generator().manual_seed(1))[:9]
    vals = torch.randn(9)
    for layer in (sparse, dense):
        layer.add_rotated_delta(idx, vals)
    s = torch.zeros(24 * 16)
    s[idx] = vals
    expected = sparse.u_out @ s.view(24, 16) @ sparse.u_in.T
    assert rel_err(sparse.weight - w, expected) <= 1e-5
    assert rel_err(dense.weight - w, expected) <= 1e-5




def test_the_candidate_threshold_samples_every_column_of_a_flattened_matrix():
    """Energy in every 24th column of 3072-wide rows (as a rotated gradient keeps its energy in some columns): a sample
    at stride 72 sees only those columns, and a threshold from it keeps about 2k·(1/24) entries, fewer than k (every
    selection then falls back to a full topk). The sampled threshold keeps at least k candidates, and the selection
    is the exact top-k either way."""
    rows, cols, k = 768, 3072, 23593
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(rows, cols, generator=gen) * 0.01
    a[:, ::24] += 1.0 + torch.rand(rows, cols // 24, generator=gen)
    flat = a.flatten()
    assert int((flat >= flat[::72].quantile(1 - 2 * k / flat.numel())).sum()) < k  # what stride 72 would keep
    kept = int((flat >= candidate_threshold(flat, k)).sum())
    assert k <= kept <= 4 * k
    idx = topk_abs_indices(flat, k)
    assert torch.equal(torch.sort(flat[idx]).values, torch.topk(flat, k).values.flip(0))


def test_topk_of_stacked_rows_takes_each_rows_exact_top_k_through_the_candidate_set():
    """The batched selection (block layers of a kind on the CPU) picks every row's own top-k: through the candidate
    set on wide rows, a full ``topk`` where a row's candidate set falls short (a constant row) or where the rows must
    not synchronise."""
    from sparsegrad_core.selection import topk_magnitude_rows

    gen = torch.Generator().manual_seed(0)
    rows = torch.rand(3, 1 << 17, generator=gen)
    rows[1] *= 1000.0  # rows of different scales: one threshold for all would starve the others
    rows[2] = 0.5  # every candidate ties: the sampled threshold keeps all, the selection any k of them
    k = 500
    for sync_free in (False, True):
        idx = topk_magnitude_rows(rows, k, sync_free=sync_free)
        assert idx.shape == (3, k)
        for i in range(2):
            assert torch.equal(torch.sort(rows[i, idx[i]]).values, torch.topk(rows[i], k).values.flip(0))
        assert idx[2].unique().numel() == k


def test_the_row_drop_keeps_every_row_with_a_non_zero_or_nan_entry(orthogonal):
    """Padding rows (all zeros, signed zeros too) are dropped; a row with one non-zero entry or a NaN is kept."""
    layer = SparseGradLinear(torch.randn(8, 6), None, orthogonal(8, 0), orthogonal(6, 1), 4)
    layer.sync_free = False
    g = torch.zeros(5, 8)
    g[1, 7] = 1e-30
    g[2] = -0.0
    g[3, 0] = float("nan")
    x = torch.arange(30.0).view(5, 6)
    kept_g, kept_x = layer._drop_zero_rows(g, x)
    assert torch.equal(kept_x, x[[1, 3]])
    assert kept_g[0, 7] == 1e-30 and bool(kept_g[1, 0].isnan())
