"""SparseGrad under bf16 autocast, on the CPU (CPU autocast runs the same bf16 arithmetic paths as CUDA's: activations
and output gradients in bf16, the weight cast to them in the layer's forward and backward)."""

from __future__ import annotations

import pytest
import torch

from sparsegrad_core import (
    SparseGradConfig,
    SparseGradLinear,
    apply_sparsegrad,
    build_optimizer,
    calibrate,
    merge_adapter,
    sparsegrad_layers,
)


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_sparsegrad_trains_and_merges_under_cpu_bf16_autocast(selection, make_bert, make_cls_batch):
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(3)]
    cfg = SparseGradConfig(calibration_steps=3, density=0.05, selection=selection)
    with _bf16():
        basis = calibrate(model, batches, cfg)
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    apply_sparsegrad(model, basis, cfg)
    base = {n: layer.weight.detach().clone() for n, layer in sparsegrad_layers(model)}
    opt = build_optimizer(model, lr=1e-2)
    model.train()
    for step in range(4):
        with _bf16():
            out = model(**batches[step % len(batches)])
        assert out.logits.dtype == torch.bfloat16  # the forward really ran in bf16
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    # the sparse update moved every MLP weight, by exactly the recorded delta; the weights stay float32
    for name, layer in sparsegrad_layers(model):
        assert layer.weight.dtype == torch.float32
        assert layer.touched_entries() > 0, f"{name}: no sparse entry trained"
        moved = layer.merged_weight() - base[name]
        assert float(moved.abs().max()) > 0, f"{name}: the weight did not move"
        torch.testing.assert_close(moved, layer.delta_weight(), rtol=1e-4, atol=1e-6)

    # merging gives plain linears that compute what the trained model computes, in bf16 and in float32
    batch = make_cls_batch(seed=9)
    batch.pop("labels", None)
    model.eval()
    with torch.no_grad():
        with _bf16():
            expected_bf16 = model(**batch).logits
        expected = model(**batch).logits
    merge_adapter(model)
    assert not any(isinstance(m, SparseGradLinear) for m in model.modules())
    with torch.no_grad():
        with _bf16():
            torch.testing.assert_close(model(**batch).logits, expected_bf16, rtol=0, atol=0)
        torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=1e-6)


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))[0]


@pytest.mark.parametrize("selection", ["dynamic", "block"])
def test_under_autocast_the_gradient_products_run_in_bf16_and_what_is_kept_stays_float32(selection):
    """The layer saves its input in the autocast dtype and forms the rotated gradient in bf16, as autocast does for a
    dense layer's weight gradient; the selected values equal that bf16 product's (not the float32 one's) at the
    selected entries, and the values, the delta and the weight stay float32."""
    out_f, in_f, t, k = 48, 40, 64, 30
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(out_f, in_f, generator=gen)
    u_out, u_in = _orthogonal(out_f, 1), _orthogonal(in_f, 2)
    if selection == "block":
        u_out, u_in = None, u_in[:, :16]
    layer = SparseGradLinear(weight.clone(), None, u_out, u_in, k, selection=selection)
    x = torch.randn(t, in_f, generator=gen)  # float32, as a LayerNorm's output is under CPU autocast
    gy = torch.randn(t, out_f, generator=gen)
    with _bf16():
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.backward(gy.to(torch.bfloat16))
    idx, vals = layer.selected
    assert vals.dtype == torch.float32 and layer.weight.dtype == torch.float32 and layer.sg_delta.dtype == torch.float32

    xb, gb, u_in_b = x.to(torch.bfloat16), gy.to(torch.bfloat16), u_in.to(torch.bfloat16)
    if u_out is None:  # the block over every output row: gᵀ (x u_in), x u_in formed in bf16
        rotated_bf16 = (gb.T @ (xb @ u_in_b)).float()
        bf16_activations_fp32 = gb.float().T @ (xb @ u_in_b).float()
        unrounded_input_fp32 = gb.float().T @ (x @ u_in)
    else:
        u_out_b = u_out.to(torch.bfloat16)
        rotated_bf16 = (u_out_b.T @ (gb.T @ (xb @ u_in_b))).float()
        bf16_activations_fp32 = u_out.T @ (gb.float().T @ xb.float()) @ u_in
        unrounded_input_fp32 = u_out.T @ (gb.float().T @ x) @ u_in
    picked_bf16 = rotated_bf16.flatten()[idx]
    scale = float(picked_bf16.abs().max())
    # bf16 rounding (8 significant bits): the values are the bf16 product's up to the association and accumulation
    # order...
    torch.testing.assert_close(vals, picked_bf16, rtol=2e-2, atol=2e-2 * scale)
    # ...and measurably not a float32 product's, of the bf16 activations (the products themselves are bf16) or of
    # the float32 input (the input was saved in bf16): each differs by bf16 rounding (about 2e-3 of a value)
    for reference in (bf16_activations_fp32, unrounded_input_fp32):
        assert float((vals - reference.flatten()[idx]).abs().max()) > 2e-4 * scale
