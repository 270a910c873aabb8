"""Adapter directories: save → load round trip, file layout, merged export, base mismatch."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.pytorch_utils import Conv1D

from sparsegrad_core import (
    AdapterMismatchError,
    SparseGradConfig,
    SparseGradLinear,
    apply_sparsegrad,
    build_optimizer,
    calibrate,
    load_adapter,
    merge_adapter,
    save_adapter,
    sparsegrad_layers,
)


def _train(model: nn.Module, batches, steps: int = 3, lr: float = 1e-2) -> None:
    model.train()
    opt = build_optimizer(model, lr=lr)
    for s in range(steps):
        model(**batches[s % len(batches)]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture
def trained_bert(make_bert, make_cls_batch):
    """(trained model, eval batch): tiny BERT, SparseGrad on the MLPs + a densely trained classifier head."""

    def make(selection: str = "dynamic", seed: int = 0, steps: int = 3):
        model = make_bert(seed=seed)
        batches = [make_cls_batch(seed=s) for s in range(3)]
        cfg = SparseGradConfig(calibration_steps=3, density=0.03, selection=selection, extra={"job": "t"})
        basis = calibrate(model, batches, cfg)
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
        apply_sparsegrad(model, basis, cfg)
        _train(model, batches, steps=steps)
        return model, make_cls_batch(seed=99)

    return make


def _logits(model: nn.Module, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_save_load_roundtrip(selection, trained_bert, make_bert, tmp_path):
    model, batch = trained_bert(selection=selection)
    expected = _logits(model, batch)
    fresh = make_bert(seed=0)
    assert not torch.allclose(_logits(fresh, batch), expected, atol=1e-4), "training changed nothing"
    path = save_adapter(model, tmp_path / "adapter", metadata={"note": "x"})
    assert {p.name for p in path.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "sparsegrad_bases.safetensors",
    }

    load_adapter(fresh, path)
    torch.testing.assert_close(_logits(fresh, batch), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(fresh.classifier.weight, model.classifier.weight, rtol=0, atol=0)
    torch.testing.assert_close(fresh.classifier.bias, model.classifier.bias, rtol=0, atol=0)
    loaded = dict(sparsegrad_layers(fresh))
    assert set(loaded) == {n for n, _ in sparsegrad_layers(model)}
    for n, la in sparsegrad_layers(model):
        assert torch.equal(loaded[n].sg_indices, la.sg_indices)
        assert torch.equal(loaded[n].sg_delta, la.sg_delta)
        assert loaded[n].selection == selection
        assert loaded[n].k == la.k


@pytest.mark.parametrize("selection", ["dynamic", "fixed"])
def test_loaded_adapter_keeps_training(selection, trained_bert, make_bert, scatter_dense, tmp_path):
    """load_adapter promises a model that "can keep training": a new optimizer on the loaded layers
    (which already hold a trained delta) must step, and the trained delta must keep growing
    from the loaded one."""
    model, batch = trained_bert(selection=selection)
    path = save_adapter(model, tmp_path / "adapter")
    fresh = load_adapter(make_bert(seed=0), path)
    before = {
        n: scatter_dense(la.sg_indices, la.sg_delta, la.out_features, la.in_features)
        for n, la in sparsegrad_layers(fresh)
    }
    fresh.train()
    opt = build_optimizer(fresh, lr=1e-2)
    fresh(**batch).loss.backward()
    selected = {n: la.selected[0].clone() for n, la in sparsegrad_layers(fresh)}
    opt.step()
    for n, la in sparsegrad_layers(fresh):
        after = scatter_dense(la.sg_indices, la.sg_delta, la.out_features, la.in_features).flatten()
        change = after - before[n].flatten()
        # a fresh Adam's first step moves exactly the selected entries, by ~lr each, on top of the loaded delta
        moved = torch.nonzero(change).squeeze(1)
        assert set(moved.tolist()) <= set(selected[n].tolist())
        assert moved.numel() > 0.9 * la.k
        assert float(change.abs().max()) <= 1e-2 * (1 + 1e-5)


def test_adapter_file_layout(trained_bert, tmp_path):
    model, _ = trained_bert()
    path = save_adapter(model, tmp_path / "a")
    tensors = load_file(str(path / "adapter_model.safetensors"))
    layers = dict(sparsegrad_layers(model))
    for n, la in layers.items():
        assert tensors[f"{n}.sg_indices"].dtype == torch.int32
        assert tensors[f"{n}.sg_delta"].dtype == torch.float32
        # the touched entries only (a few steps touch far less than half of the matrix)
        assert tensors[f"{n}.sg_indices"].numel() == tensors[f"{n}.sg_delta"].numel() == la.touched_entries()
        assert la.k <= la.touched_entries() < la.out_features * la.in_features // 2
        assert torch.equal(tensors[f"{n}.sg_delta"], la.sg_delta[tensors[f"{n}.sg_indices"].long()])
    # dense tensors: exactly the trainable non-sparse ones (the classifier head)
    dense_keys = {k for k in tensors if not k.endswith((".sg_indices", ".sg_delta"))}
    assert dense_keys == {"classifier.weight", "classifier.bias"}
    # bases once per kind, not per layer
    bases = load_file(str(path / "sparsegrad_bases.safetensors"))
    kinds = {la.kind for la in layers.values()}
    assert len(layers) == 4 and kinds == {"intermediate.dense", "output.dense"}
    assert set(bases) == {f"{k}.{u}" for k in kinds for u in ("u_out", "u_in")}
    assert bases["intermediate.dense.u_out"].shape == (64, 64)
    assert bases["intermediate.dense.u_in"].shape == (32, 32)
    # in memory too, the layers of one kind share one basis tensor pair (one copy per kind)
    for kind in kinds:
        same = [la for la in layers.values() if la.kind == kind]
        assert len(same) == 2
        assert same[0].u_out.data_ptr() == same[1].u_out.data_ptr()
        assert same[0].u_in.data_ptr() == same[1].u_in.data_ptr()
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["format"] == "sparsegrad"
    assert set(config["target_modules"]) == set(layers)
    assert config["dense_modules"] == ["classifier.bias", "classifier.weight"]
    assert config["sparsegrad_config"]["density"] == pytest.approx(0.03)
    assert config["num_labels"] == 2


def test_merge_gives_plain_linears_and_loads_without_project_code(trained_bert, tmp_path):
    model, batch = trained_bert()
    expected = _logits(model, batch)
    names = [n for n, _ in sparsegrad_layers(model)]
    merge_adapter(model)
    assert not any(isinstance(m, SparseGradLinear) for m in model.modules())
    for n in names:
        assert type(model.get_submodule(n)) is nn.Linear
        assert model.get_submodule(n).weight.device.type == "cpu"
    merged = _logits(model, batch)
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-6)

    out = tmp_path / "merged"
    model.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(reloaded).__module__.startswith("transformers.")
    assert not any(type(m).__module__.startswith("sparsegrad") for m in reloaded.modules())
    torch.testing.assert_close(_logits(reloaded, batch), expected, rtol=0, atol=1e-5)


def test_load_onto_different_base_raises(trained_bert, make_bert, tmp_path):
    model, _ = trained_bert()
    path = save_adapter(model, tmp_path / "a")
    other = make_bert(seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(AdapterMismatchError, match="different base model") as info:
        load_adapter(other, path)
    assert "4 of 4 target weights differ" in str(info.value)
    # nothing was applied to the wrong base
    assert not list(sparsegrad_layers(other))
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())


def test_load_onto_model_without_targets_raises(trained_bert, make_bert, tmp_path):
    model, _ = trained_bert()
    path = save_adapter(model, tmp_path / "a")
    with pytest.raises(AdapterMismatchError):
        load_adapter(make_bert(seed=0, layers=1), path)


def test_load_requires_adapter_directory(make_bert, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_adapter(make_bert(), tmp_path)


def test_save_without_sparsegrad_layers_raises(make_bert, tmp_path):
    with pytest.raises(ValueError, match="apply_sparsegrad"):
        save_adapter(make_bert(), tmp_path / "x")


def test_untrained_fixed_adapter_roundtrip(make_bert, make_cls_batch, tmp_path):
    """Saving right after apply_sparsegrad (e.g. a job cancelled before its first step) must load back."""
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(2)]
    cfg = SparseGradConfig(calibration_steps=2, density=0.03, selection="fixed")
    apply_sparsegrad(model, calibrate(model, batches, cfg), cfg)
    path = save_adapter(model, tmp_path / "a")
    fresh = load_adapter(make_bert(seed=0), path)
    torch.testing.assert_close(_logits(fresh, batches[0]), _logits(model, batches[0]), rtol=0, atol=1e-6)


def test_gpt2_adapter_roundtrip(make_gpt2, make_lm_batch, tmp_path):
    model = make_gpt2(seed=0)
    batches = [make_lm_batch(seed=s) for s in range(2)]
    cfg = SparseGradConfig(calibration_steps=2, density=0.02)
    apply_sparsegrad(model, calibrate(model, batches, cfg), cfg)
    model.requires_grad_(False)
    for _, la in sparsegrad_layers(model):
        la.sg_anchor.requires_grad_(True)
    _train(model, batches, steps=2)
    path = save_adapter(model, tmp_path / "g")
    fresh = load_adapter(make_gpt2(seed=0), path)
    x = make_lm_batch(seed=9)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.eval()(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=1e-5
        )
    merge_adapter(fresh)
    assert all(type(fresh.get_submodule(n)) is Conv1D for n, _ in sparsegrad_layers(model))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Bit for bit the state it had, and no SparseGrad layer in it."""
    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), f"{k} changed by a refused load"
    assert not any(isinstance(m, SparseGradLinear) for m in model.modules())


@pytest.fixture
def wide_adapter(make_bert, make_cls_batch, tmp_path):
    """(base factory, trained model, adapter path): a one-block BERT whose intermediate.dense is 1024 x 128 =
    131,072 entries, more than the ~64k values the strided sample of format-1 fingerprints took (every second)."""

    def base() -> nn.Module:
        return make_bert(seed=0, hidden=128, layers=1, intermediate=1024)

    model = base()
    batches = [make_cls_batch(seed=s) for s in range(2)]
    cfg = SparseGradConfig(calibration_steps=2, density=0.01)
    apply_sparsegrad(model, calibrate(model, batches, cfg), cfg)
    _train(model, batches, steps=2)
    return base, model, save_adapter(model, tmp_path / "a")


def test_base_differing_in_one_entry_is_refused_before_any_change(wide_adapter):
    """The fingerprint covers every value of every target weight: one entry the old sample skipped is refused."""
    from sparsegrad_core.model import weight_fingerprint

    base, _, path = wide_adapter
    other = base()
    weight = other.bert.encoder.layer[0].intermediate.dense.weight
    with torch.no_grad():
        weight.view(-1)[1] += 1e-3  # odd flat index: not in the old sample
    assert weight_fingerprint(weight, version=1) == weight_fingerprint(
        base().bert.encoder.layer[0].intermediate.dense.weight, version=1)
    before = _state(other)
    with pytest.raises(AdapterMismatchError, match="1 of 2 target weights differ"):
        load_adapter(other, path)
    _assert_untouched(other, before)
    load_adapter(base(), path)  # the base it was trained on loads


def test_refused_head_leaves_model_unchanged(trained_bert, make_bert, tmp_path):
    """A head with another number of labels is refused before apply_sparsegrad touches the (matching) MLPs."""
    model, _ = trained_bert()
    path = save_adapter(model, tmp_path / "a")
    other = make_bert(seed=0, num_labels=3)
    before = _state(other)
    with pytest.raises(AdapterMismatchError, match=r"classifier\.(weight|bias): adapter has shape"):
        load_adapter(other, path)
    _assert_untouched(other, before)


def test_adapter_with_sampled_fingerprint_still_loads(wide_adapter, make_cls_batch):
    """Adapters written before ``fingerprint_version`` (format 1) are checked with the sampled fingerprint they
    recorded: they load onto their base and are refused on another."""
    from sparsegrad_core.adapter import combined_fingerprint
    from sparsegrad_core.model import weight_fingerprint
    from sparsegrad_core.targets import linear_weight

    base, model, path = wide_adapter
    cfg_path = path / "adapter_config.json"
    config = json.loads(cfg_path.read_text())
    assert config["fingerprint_version"] == 2
    ref = base()
    old = {n: weight_fingerprint(linear_weight(ref.get_submodule(n)), version=1) for n in config["target_modules"]}
    assert old != config["layer_fingerprints"]
    config.pop("fingerprint_version")
    config.update(format_version=1, layer_fingerprints=old, base_fingerprint=combined_fingerprint(old))
    cfg_path.write_text(json.dumps(config))
    batch = make_cls_batch(seed=99)
    torch.testing.assert_close(_logits(load_adapter(ref, path), batch), _logits(model, batch), rtol=0, atol=1e-5)
    other = base()
    with torch.no_grad():
        other.bert.encoder.layer[0].output.dense.weight.view(-1)[0] += 1e-3  # in the sample
    with pytest.raises(AdapterMismatchError, match="different base model"):
        load_adapter(other, path)
