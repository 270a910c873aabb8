"""Block selection: exactness against a dense layer, exactly k entries inside the block, the block rule,
bounded optimizer state, calibration, no host-synchronising ops in a step, and the PEFT LoRA export."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn

from sparsegrad_core import (
    LoraExportError,
    SparseEntryAdam,
    SparseGradConfig,
    SparseGradLinear,
    apply_sparsegrad,
    build_optimizer,
    calibrate,
    export_lora,
    load_adapter,
    save_adapter,
    sparsegrad_layers,
)
from sparsegrad_core.block import BlockShareGrid, block_step_cost, choose_block
from sparsegrad_core.methods import MethodSpec, prepare_model
from sparsegrad_core.training.checkpoint import load_basis, save_basis


def _block_pair(out_f: int, in_f: int, r_out: int, r_in: int, k: int, orthogonal, seed: int = 0):
    torch.manual_seed(seed)
    dense = nn.Linear(in_f, out_f)
    layer = SparseGradLinear(
        dense.weight.detach().clone(), nn.Parameter(dense.bias.detach().clone()),
        None if r_out == out_f else orthogonal(out_f, seed + 1)[:, :r_out].contiguous(),
        orthogonal(in_f, seed + 2)[:, :r_in].contiguous(), k, selection="block",
    )
    return dense, layer


def _block_reference(layer: SparseGradLinear, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``u_outᵀ (gᵀ x) u_in`` over the truncated bases, float64, densely."""
    g64, x64 = g.reshape(-1, layer.out_features).double(), x.reshape(-1, layer.in_features).double()
    return layer.u_out.double().T @ (g64.T @ x64) @ layer.u_in.double()


# --------------------------------------------------------------------------- layer


@pytest.mark.parametrize("shape", [(24, 40, 6, 9), (40, 24, 10, 4), (24, 40, 24, 3)],
                         ids=["wide", "tall", "all-rows-standard-basis"])
def test_block_layer_matches_dense_and_selects_exactly_k_inside_the_block(shape, orthogonal, rel_err):
    out_f, in_f, r_out, r_in = shape
    dense, layer = _block_pair(out_f, in_f, r_out, r_in, k=13, orthogonal=orthogonal)
    assert layer.u_out.shape == (out_f, r_out) and layer.u_in.shape == (in_f, r_in)
    assert (layer.out_basis is None) == (r_out == out_f)
    x = torch.randn(3, 5, in_f)
    xd, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yd, ys = dense(xd), layer(xs)
    assert rel_err(ys, yd) <= 1e-5
    gy = torch.randn_like(yd)
    (yd * gy).sum().backward()
    (ys * gy).sum().backward()
    assert rel_err(xs.grad, xd.grad) <= 1e-5
    assert rel_err(layer.bias.grad, dense.bias.grad) <= 1e-5
    idx, vals = layer.selected
    ref = _block_reference(layer, gy, x).flatten()
    assert idx.numel() == 13 and torch.unique(idx).numel() == 13
    assert int(idx.max()) < r_out * r_in
    torch.testing.assert_close(vals.double(), ref[idx], rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert set(idx.tolist()) == set(torch.topk(ref.abs(), 13).indices.tolist())


def test_block_layer_rejects_k_larger_than_the_block(orthogonal):
    with pytest.raises(ValueError, match="do not fit"):
        _block_pair(12, 8, 2, 3, k=7, orthogonal=orthogonal)


@pytest.mark.parametrize("r_out", [8, 24])
def test_sync_free_path_keeps_padding_rows_and_selects_the_same(r_out, orthogonal):
    _, a = _block_pair(24, 16, r_out, 6, k=9, orthogonal=orthogonal)
    _, b = _block_pair(24, 16, r_out, 6, k=9, orthogonal=orthogonal)
    b.sync_free = True
    x = torch.randn(10, 16)
    gy = torch.randn(10, 24)
    gy[4:] = 0  # padding rows
    for layer in (a, b):
        (layer(x) * gy).sum().backward()
    ia, va = a.selected
    ib, vb = b.selected
    oa, ob = torch.argsort(ia), torch.argsort(ib)
    assert torch.equal(ia[oa], ib[ob])
    torch.testing.assert_close(va[oa], vb[ob], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- rule


def test_choose_block_picks_the_cheapest_block_reaching_the_share():
    grid_out, grid_in = [2, 4, 8, 16], [2, 4, 8]
    shape, tokens = (16, 8), 100.0
    # the kept share grows with the block; (4, 4) is the smallest reaching 0.9 (the full-row block, in the
    # standard output basis and cheaper, falls short of it here)
    shares = torch.tensor([[0.2, 0.5, 0.6], [0.5, 0.92, 0.95], [0.6, 0.95, 0.99], [0.3, 0.6, 0.89]])
    c = choose_block(shares, grid_out, grid_in, shape, k=4, target=0.9, tokens=tokens, max_cost=10.0)
    assert (c.r_out, c.r_in, c.kept_share) == (4, 4, pytest.approx(0.92))
    # k larger than 4 x 4: the cheapest block with k entries that keeps the share
    c = choose_block(shares, grid_out, grid_in, shape, k=20, target=0.9, tokens=tokens, max_cost=10.0)
    assert c.r_out * c.r_in >= 20 and c.kept_share >= 0.9
    costs = {(a, b): block_step_cost(shape, a, b, tokens) for a in grid_out for b in grid_in if a * b >= 20}
    ok = {ab: cost for ab, cost in costs.items() if shares[grid_out.index(ab[0]), grid_in.index(ab[1])] >= 0.9}
    assert (c.r_out, c.r_in) == min(ok, key=ok.get)
    # a budget too small for the target: the block keeping the most within it
    budget = block_step_cost(shape, 4, 2, tokens) / (tokens * 16 * 8)
    c = choose_block(shares, grid_out, grid_in, shape, k=4, target=0.9, tokens=tokens, max_cost=budget)
    assert block_step_cost(shape, c.r_out, c.r_in, tokens) <= budget * tokens * 16 * 8
    assert c.kept_share < 0.9 and (c.r_out, c.r_in) in {(4, 2), (2, 4)}
    assert c.kept_share == pytest.approx(0.5)


def test_full_row_block_costs_no_output_rotation_and_wins_when_it_keeps_the_share():
    shape, tokens = (16, 8), 100.0
    # no out·r_out terms: x u_in, gᵀ(x u_in), S u_inᵀ
    assert block_step_cost(shape, 16, 2, tokens) == tokens * 8 * 2 + tokens * 16 * 2 + 16 * 2 * 8
    assert block_step_cost(shape, 16, 2, tokens) < block_step_cost(shape, 8, 2, tokens)
    shares = torch.tensor([[0.5, 0.92, 0.95], [0.6, 0.95, 0.99], [0.93, 0.97, 1.0]])
    c = choose_block(shares, [4, 8, 16], [2, 4, 8], shape, k=4, target=0.9, tokens=tokens, max_cost=10.0)
    assert (c.r_out, c.r_in) == (16, 2)


def test_share_grid_is_the_in_block_topk_share():
    """The grid's share for a block equals the in-block top-k energy over the exact top-k energy."""
    gen = torch.Generator().manual_seed(3)
    out_f, in_f, k = 60, 40, 30
    scale = torch.outer(0.9 ** torch.arange(out_f, dtype=torch.float32), 0.93 ** torch.arange(in_f, dtype=torch.float32))
    u_out = torch.linalg.qr(torch.randn(out_f, out_f, generator=gen, dtype=torch.float64))[0].float()
    rotated = [scale * torch.randn(out_f, in_f, generator=gen) for _ in range(5)]
    g_in = [u_out @ r for r in rotated]  # G u_in, whose output rotation is ``rotated``
    grid = BlockShareGrid(out_f, in_f, k, torch.device("cpu"))
    for gi in g_in:
        grid.add(gi, u_out)
    shares = grid.shares()
    assert grid.r_out[-1] == out_f
    for i, a in enumerate(grid.r_out):
        for j, b in enumerate(grid.r_in):
            if a * b < k:
                continue
            ref = []
            for gi in g_in:
                r = u_out.T @ gi  # as the grid rotates it (float32)
                exact = torch.topk(r.flatten().abs(), k).values.double().square().sum()
                # the full-row block is taken in the standard output basis
                block = gi[:, :b] if a == out_f else r[:a, :b]
                inside = torch.topk(block.flatten().abs(), k).values.double().square().sum()
                ref.append(float(inside / exact))
            assert float(shares[i, j]) == pytest.approx(sum(ref) / len(ref), abs=1e-9), (a, b)
    choice = grid.choose(0.9, tokens=50.0, max_cost=1.0)
    assert choice.kept_share >= 0.9 and choice.r_out * choice.r_in >= k
    assert (choice.r_out, choice.r_in) != (out_f, in_f)


# --------------------------------------------------------------------------- model level


@pytest.fixture
def block_bert(make_bert, make_cls_batch):
    def make(setting: str = "peft", share: float = 0.9, sizes=None, max_cost: float = 4.0):
        model = make_bert(seed=0, hidden=32, intermediate=64)
        batches = [make_cls_batch(seed=s) for s in range(4)]
        cfg = SparseGradConfig(calibration_steps=4, density=0.03, selection="block", block_energy_share=share,
                               block_sizes=sizes, block_max_cost=max_cost)
        prepared = prepare_model(model, MethodSpec(type="sparsegrad", setting=setting, sparsegrad=cfg), batches)
        return prepared, batches

    return make


def test_calibration_truncates_bases_and_records_the_block(block_bert):
    prepared, _ = block_bert()
    model, basis = prepared.model, prepared.basis
    stats = basis.stats["block"]
    assert "0.9" in stats["rule"]
    recorded = next(sparsegrad_layers(model))[1].config.block_sizes
    for kind, kb in basis.kinds.items():
        r_out, r_in = kb.ranks
        assert recorded[kind] == (r_out, r_in)
        assert (stats["kinds"][kind]["r_out"], stats["kinds"][kind]["r_in"]) == (r_out, r_in)
        assert stats["kinds"][kind]["kept_share"] >= 0.9
        if kb.u_out is not None:  # None: the block spans every output row, in the standard basis
            torch.testing.assert_close(kb.u_out.T @ kb.u_out, torch.eye(r_out), atol=1e-5, rtol=0)
        torch.testing.assert_close(kb.u_in.T @ kb.u_in, torch.eye(r_in), atol=1e-5, rtol=0)
        assert r_in < kb.u_in.shape[0] or (kb.u_out is not None and r_out < kb.u_out.shape[0]), "whole basis kept"
    for _, layer in sparsegrad_layers(model):
        assert layer.u_out.shape[1] == layer.r_out and layer.k <= layer.r_out * layer.r_in


def test_cost_budget_bounds_the_chosen_block(block_bert, make_cls_batch):
    prepared, batches = block_bert(share=0.99, max_cost=0.3)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    for kind, kb in prepared.basis.kinds.items():
        out_f, in_f = kb.out_features or kb.u_out.shape[0], kb.u_in.shape[0]
        assert block_step_cost((out_f, in_f), *kb.ranks, tokens) <= 0.3 * tokens * out_f * in_f
        assert prepared.basis.stats["block"]["kinds"][kind]["kept_share"] < 0.99


def test_given_block_sizes_are_used_and_checked(block_bert):
    prepared, _ = block_bert(sizes={"intermediate.dense": (16, 8), "output.dense": (6, 12)})
    assert prepared.basis.kinds["intermediate.dense"].ranks == (16, 8)
    assert prepared.basis.kinds["output.dense"].ranks == (6, 12)
    with pytest.raises(ValueError, match="no entry for projection kind"):
        block_bert(sizes={"intermediate.dense": (16, 8)})
    with pytest.raises(ValueError, match="exceeds the weight shape"):
        block_bert(sizes={"intermediate.dense": (80, 8), "output.dense": (6, 12)})
    with pytest.raises(ValueError, match="holds fewer than k = 61"):
        block_bert(sizes={"intermediate.dense": (8, 4), "output.dense": (6, 12)})


@pytest.mark.parametrize("sizes", [None, {"intermediate.dense": (64, 4), "output.dense": (6, 12)}],
                         ids=["rule", "all-rows-standard-basis"])
def test_training_moves_only_the_block_and_state_stays_bounded(sizes, block_bert, rel_err):
    prepared, batches = block_bert(sizes=sizes)
    if sizes is not None:
        assert prepared.basis.kinds["intermediate.dense"].u_out is None
    model = prepared.model.train()
    w0 = {n: layer.weight.clone() for n, layer in sparsegrad_layers(model)}
    opt = build_optimizer(model, lr=1e-2)
    sparse = next(o for o in opt.optimizers if isinstance(o, SparseEntryAdam))
    sizes = []
    for step in range(12):
        model(**batches[step % len(batches)]).loss.backward()
        opt.step()
        opt.zero_grad()
        sizes.append(sparse.state_bytes())
    assert sizes[0] == sizes[-1], "block optimizer state grew with steps"
    expected = sum(3 * 4 * layer.r_out * layer.r_in for _, layer in sparsegrad_layers(model))
    assert sizes[-1] == expected  # two moments and the delta, float32, dense over each block
    for n, layer in sparsegrad_layers(model):
        s = layer.sg_delta.view(layer.r_out, layer.r_in)
        assert int(s.count_nonzero()) > layer.k, f"{n}: the sparse delta did not move beyond one step"
        delta = layer.weight - w0[n]
        assert rel_err(delta, layer.u_out @ s @ layer.u_in.T) <= 1e-4
        # the change lies in the span of the truncated bases
        proj = layer.u_out @ (layer.u_out.T @ delta @ layer.u_in) @ layer.u_in.T
        assert rel_err(proj, delta) <= 1e-4
        assert float(delta.norm()) > 0


# --------------------------------------------------------------------------- PEFT LoRA export


@pytest.mark.parametrize(("setting", "sizes"), [
    ("peft", None), ("paper", None),
    ("peft", {"intermediate.dense": (64, 4), "output.dense": (32, 12)}),  # both kinds in the standard out basis
    ("peft", {"intermediate.dense": (24, 8), "output.dense": (6, 24)}),  # r_out < r_in: B = u_out
])
def test_lora_export_loads_in_peft_and_reproduces_outputs(setting, sizes, block_bert, make_bert, make_cls_batch,
                                                         tmp_path, rel_err):
    prepared, batches = block_bert(setting=setting, sizes=sizes)
    model = prepared.model.train()
    opt = build_optimizer(model, lr=1e-2)
    for step in range(4):
        model(**batches[step % 4]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    path = export_lora(model, tmp_path / "lora")
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS"
    assert sorted(config["target_modules"]) == sorted(n for n, _ in sparsegrad_layers(model))
    assert config["lora_bias"] is (setting == "paper")  # paper setting: the MLP biases trained too
    batch = make_cls_batch(seed=77)
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = make_bert(seed=0, hidden=32, intermediate=64)
        untouched = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loaded = PeftModel.from_pretrained(base, str(path)).eval()
        got = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert rel_err(untouched, expected) > 1e-2, "training changed nothing"
    assert rel_err(got, expected) <= 1e-5


def test_lora_export_refuses_what_it_cannot_carry(make_bert, make_cls_batch, block_bert, tmp_path):
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(2)]
    cfg = SparseGradConfig(calibration_steps=2, density=0.03)
    apply_sparsegrad(model, calibrate(model, batches, cfg), cfg)
    with pytest.raises(LoraExportError, match="only block selection"):
        export_lora(model, tmp_path / "a")
    prepared, _ = block_bert()
    prepared.model.bert.embeddings.LayerNorm.weight.requires_grad_(True)  # half a module trained
    with pytest.raises(LoraExportError, match="only some of their parameters"):
        export_lora(prepared.model, tmp_path / "b")


def test_standard_output_basis_survives_the_checkpoint_and_the_adapter(block_bert, make_bert, tmp_path, rel_err):
    prepared, batches = block_bert(sizes={"intermediate.dense": (64, 4), "output.dense": (6, 12)})
    back = load_basis(save_basis(prepared.basis, tmp_path / "basis"))
    for kind, kb in prepared.basis.kinds.items():
        assert back.kinds[kind].ranks == kb.ranks
        assert (back.kinds[kind].u_out is None) == (kb.u_out is None)
    assert back.kinds["intermediate.dense"].u_out is None
    model = prepared.model.train()
    opt = build_optimizer(model, lr=1e-2)
    for step in range(3):
        model(**batches[step % 4]).loss.backward()
        opt.step()
        opt.zero_grad()
    save_adapter(model.eval(), tmp_path / "adapter")
    assert "intermediate.dense.u_out" not in load_file(str(tmp_path / "adapter" / "sparsegrad_bases.safetensors"))
    loaded = load_adapter(make_bert(seed=0, hidden=32, intermediate=64), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert rel_err(loaded(**batches[0]).logits, model(**batches[0]).logits) <= 1e-5
    for (_, a), (_, b) in zip(sparsegrad_layers(loaded), sparsegrad_layers(model), strict=True):
        assert (a.out_basis is None) == (b.out_basis is None)


@pytest.mark.parametrize("filled", [5, 40])
def test_block_delta_export_is_sparse_or_whole_and_loads_back(filled, orthogonal, rel_err):
    _, a = _block_pair(12, 10, 8, 6, k=5, orthogonal=orthogonal)
    _, b = _block_pair(12, 10, 8, 6, k=5, orthogonal=orthogonal)
    delta = torch.zeros(48)
    delta[torch.randperm(48, generator=torch.Generator().manual_seed(filled))[:filled]] = torch.randn(filled)
    a.sg_delta = delta.clone()
    idx, vals = a.export_delta()
    assert a.touched_entries() == filled
    # indices only while they save space: a block at least half full is stored whole, without them
    assert (idx.numel(), vals.numel()) == ((0, 48) if filled >= 24 else (filled, filled))
    w0 = b.weight.clone()
    b.load_delta(idx, vals)
    assert torch.equal(b.sg_delta, delta)
    assert rel_err(b.weight - w0, b.delta_weight()) <= 1e-5
