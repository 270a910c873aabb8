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
