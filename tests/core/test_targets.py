"""Auto-detection of the MLP projections per family, and a full GPT-2 (Conv1D) step + merge."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sparsegrad_core import (
    SparseGradConfig,
    SparseGradLinear,
    apply_sparsegrad,
    build_optimizer,
    calibrate,
    find_target_modules,
    merge_adapter,
    projection_kind,
    sparsegrad_layers,
)


def test_bert_targets_are_ffn_not_attention_output(make_bert):
    model = make_bert(layers=3)
    found = find_target_modules(model)
    assert list(found) == [
        f"bert.encoder.layer.{i}.{p}" for i in range(3) for p in ("intermediate.dense", "output.dense")
    ]
    assert not any("attention" in n for n in found)
    assert all(isinstance(m, nn.Linear) for m in found.values())
    assert {projection_kind(n) for n in found} == {"intermediate.dense", "output.dense"}


def test_roberta_targets(make_roberta):
    found = find_target_modules(make_roberta())
    assert set(found) == {
        f"roberta.encoder.layer.{i}.{p}" for i in range(2) for p in ("intermediate.dense", "output.dense")
    }
    assert "roberta.encoder.layer.0.attention.output.dense" not in found
    assert "classifier.dense" not in found


def test_llama_targets_stride_and_projections(make_llama):
    model = make_llama(layers=7)
    all_found = find_target_modules(model)
    assert set(all_found) == {
        f"model.layers.{i}.mlp.{p}" for i in range(7) for p in ("gate_proj", "up_proj", "down_proj")
    }
    strided = find_target_modules(model, layer_stride=3)
    assert {int(n.split(".")[2]) for n in strided} == {0, 3, 6}
    assert len(strided) == 9
    up_down = find_target_modules(model, layer_stride=3, projections=["up_proj", "down_proj"])
    assert set(up_down) == {f"model.layers.{i}.mlp.{p}" for i in (0, 3, 6) for p in ("up_proj", "down_proj")}
    assert {projection_kind(n) for n in up_down} == {"mlp.up_proj", "mlp.down_proj"}


def test_llama_calibration_honours_stride_and_projections(make_llama, make_lm_batch):
    model = make_llama(layers=4)
    cfg = SparseGradConfig(calibration_steps=2, layer_stride=3, projections=["up_proj", "down_proj"])
    basis = calibrate(model, [make_lm_batch(seed=s) for s in range(2)], cfg)
    assert set(basis.layers) == {
        f"model.layers.{i}.mlp.{p}" for i in (0, 3) for p in ("up_proj", "down_proj")
    }
    assert set(basis.kinds) == {"mlp.up_proj", "mlp.down_proj"}
    assert basis.kinds["mlp.up_proj"].num_gradients == 4  # 2 steps × blocks 0 and 3
    apply_sparsegrad(model, basis, cfg)
    assert {n for n, _ in sparsegrad_layers(model)} == set(basis.layers)
    assert isinstance(model.model.layers[1].mlp.up_proj, nn.Linear)
    assert isinstance(model.model.layers[0].mlp.gate_proj, nn.Linear)


def test_explicit_target_modules_suffix_and_regex(make_bert):
    model = make_bert()
    suffix = find_target_modules(model, ["intermediate.dense"])
    assert set(suffix) == {f"bert.encoder.layer.{i}.intermediate.dense" for i in range(2)}
    regex = find_target_modules(model, [r"re:layer\.1\.(intermediate|output)\.dense$"])
    assert set(regex) == {"bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"}
    with pytest.raises(ValueError, match="matched no"):
        find_target_modules(model, ["does_not_exist"])


def test_gpt2_conv1d_targets(make_gpt2):
    found = find_target_modules(make_gpt2())
    assert set(found) == {f"transformer.h.{i}.mlp.{p}" for i in range(2) for p in ("c_fc", "c_proj")}
    assert "transformer.h.0.attn.c_proj" not in found
    assert all(isinstance(m, Conv1D) for m in found.values())


def test_gpt2_train_step_and_merge(make_gpt2, make_lm_batch, clone_model, rel_err):
    model = make_gpt2()
    base = clone_model(model)
    batches = [make_lm_batch(seed=s) for s in range(3)]
    cfg = SparseGradConfig(calibration_steps=3, density=0.02)
    basis = calibrate(model, batches, cfg)
    model.requires_grad_(False)
    apply_sparsegrad(model, basis, cfg)
    layers = dict(sparsegrad_layers(model))
    assert len(layers) == 4
    for name, layer in layers.items():
        conv = base.get_submodule(name)
        assert layer.base_layer_type == "conv1d"
        assert torch.equal(layer.weight, conv.weight.T)  # stored in nn.Linear (out, in) convention
    x = make_lm_batch(seed=10)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, base(input_ids=x).logits, rtol=0, atol=1e-5)

    model.train()
    opt = build_optimizer(model, lr=1e-2)
    for batch in batches:
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    for name, layer in layers.items():
        assert layer.touched_entries() >= layer.k
        assert not torch.equal(layer.weight, base.get_submodule(name).weight.T)
    with torch.no_grad():
        trained = model(input_ids=x).logits
    assert not torch.allclose(trained, base(input_ids=x).logits, atol=1e-4)

    weights = {name: layer.merged_weight().clone() for name, layer in layers.items()}
    merge_adapter(model)
    assert not list(sparsegrad_layers(model))
    for name, w in weights.items():
        merged = model.get_submodule(name)
        assert type(merged) is Conv1D
        assert merged.weight.shape == base.get_submodule(name).weight.shape
        assert torch.equal(merged.weight, w.T)
        assert merged.bias is not None
    assert not any(isinstance(m, SparseGradLinear) for m in model.modules())
    with torch.no_grad():
        assert rel_err(model(input_ids=x).logits, trained) <= 1e-6
