"""Re-calibration of a model trained with SparseGrad: the new bases are the HOSVD bases of the gradients at the
trained weights (what calibrating the merged model on the same batches gives), the trained delta and the model's
outputs do not change, nothing else is touched; selections that cannot hold a re-expressed delta are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from sparsegrad_core import SparseGradConfig, build_optimizer
from sparsegrad_core.hosvd import calibrate
from sparsegrad_core.model import apply_sparsegrad, merge_adapter, sparsegrad_layers
from sparsegrad_core.recalibration import recalibrate

CFG = SparseGradConfig(density=0.05, calibration_steps=3, recalibrate_every=2)


def _trained(make_bert, make_cls_batch):
    """A tiny BERT calibrated on three batches and stepped on three others (head and MLP entries train)."""
    model = make_bert(seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    model.classifier.weight.requires_grad_(True)
    apply_sparsegrad(model, calibrate(model, [make_cls_batch(seed=s) for s in range(3)], CFG), CFG)
    optimizer = build_optimizer(model, lr=1e-2)
    model.train()
    for s in range(3, 6):
        model(**make_cls_batch(seed=s)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_new_bases_are_the_trained_models_and_the_delta_is_kept(make_bert, make_cls_batch):
    model = _trained(make_bert, make_cls_batch)
    batches = [make_cls_batch(seed=s) for s in range(10, 13)]
    reference = calibrate(merge_adapter(copy.deepcopy(model)), batches, CFG)
    layers = dict(sparsegrad_layers(model))
    before = {n: (layer.weight.clone(), layer.delta_weight(), layer.u_in.clone()) for n, layer in layers.items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe = make_cls_batch(seed=20)
    model.eval()
    with torch.no_grad():
        outputs = model(**probe).logits

    stats = recalibrate(model, batches)

    assert stats["steps"] == 3 and set(stats["kinds"]) == {"intermediate.dense", "output.dense"}
    for name, layer in layers.items():
        weight, delta, u_in = before[name]
        assert torch.equal(layer.weight, weight)  # the dense weight is not touched
        torch.testing.assert_close(layer.delta_weight(), delta, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(layer.u_in, u_in, atol=1e-3)
        ref = reference.kinds[layer.kind]
        for mine, theirs in ((layer.u_out, ref.u_out), (layer.u_in, ref.u_in)):
            cos = (mine[:, :4] * theirs[:, :4]).sum(0).abs()  # leading directions, up to sign
            assert bool((cos > 0.999).all()), (name, cos)
    assert not model.training and {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(model(**probe).logits, outputs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("selection", ["block", "fixed"])
def test_only_dynamic_selection_can_recalibrate(selection, make_bert, make_cls_batch):
    with pytest.raises(ValueError, match="recalibrate_every needs selection='dynamic'"):
        SparseGradConfig(selection=selection, recalibrate_every=10)
    cfg = SparseGradConfig(density=0.05, calibration_steps=2, selection=selection)
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(2)]
    apply_sparsegrad(model, calibrate(model, batches, cfg), cfg)
    with pytest.raises(ValueError, match=f"needs dynamic selection; this model's layers use {selection}"):
        recalibrate(model, batches)
