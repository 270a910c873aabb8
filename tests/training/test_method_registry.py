"""The method registry: every job-contract method is registered, unknown names are refused with the list, and a
method added from outside (tests/training/example_method.py) runs through preparation, training and export."""

from __future__ import annotations

import pytest
import torch
from support.tiny import tiny_bert

from sparsegrad_contract.defaults import MethodType
from sparsegrad_core.methods import (
    FROZEN_MLP,
    LoraOptions,
    MethodSpec,
    get_method,
    is_head_param,
    method_names,
    prepare_model,
    register_method,
    unregister_method,
)
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainingArguments, prepare_for_training

from .example_method import MlpBiasMethod


def test_every_method_a_job_can_ask_for_is_registered() -> None:
    assert set(method_names()) == {m.value for m in MethodType} | {FROZEN_MLP}
    assert {m for m in method_names() if get_method(m).exports_adapter} == {"sparsegrad", "lora"}


def test_unknown_method_and_wrong_options_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"method type must be one of sparsegrad, lora.*got 'nope'"):
        MethodSpec(type="nope")
    with pytest.raises(ValueError, match="sparsegrad takes no options; got LoraOptions"):
        MethodSpec(type="sparsegrad", options=LoraOptions(rank=2))
    assert MethodSpec(type="lora", options={"rank": 3}).options == LoraOptions(rank=3)
    with pytest.raises(ValueError, match="lora rank must be >= 1"):
        MethodSpec(type="lora", options={"rank": 0})


@pytest.fixture()
def mlp_bias():
    register_method(MlpBiasMethod)
    yield MlpBiasMethod.name
    unregister_method(MlpBiasMethod.name)


def test_a_registered_method_sets_trainability_for_both_settings(tokenizer, mlp_bias) -> None:
    for setting in ("peft", "paper"):
        prepared = prepare_model(tiny_bert(tokenizer), MethodSpec(type=mlp_bias, setting=setting))
        model = prepared.model
        targets = {t: model.get_submodule(t) for t in prepared.targets}
        assert targets, "tiny BERT has MLP projections"
        assert not any(m.weight.requires_grad for m in targets.values())
        assert all(m.bias.requires_grad for m in targets.values())
        attention = model.bert.encoder.layer[0].attention.self.query.weight
        assert attention.requires_grad is (setting == "paper")
        assert model.classifier.weight.requires_grad


def test_a_registered_method_trains_and_exports(tokenizer, sst2_small, tmp_path, mlp_bias) -> None:
    data = tokenize_dataset(sst2_small[0], tokenizer, 32)
    model = tiny_bert(tokenizer)
    spec = MethodSpec(type=mlp_bias, setting="peft")
    prepared = prepare_for_training(model, spec, data, batch_size=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(learning_rate=1e-2, batch_size=8, max_steps=2, output_dir=tmp_path, log_every=1)
    result = Trainer(prepared, data, None, tokenizer, args).train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    mlp_biases = {f"{t}.bias" for t in prepared.targets}
    assert mlp_biases <= changed
    assert changed <= mlp_biases | {n for n in before if is_head_param(n)}
    assert result.export_dir == tmp_path / "model"
    assert (result.export_dir / "training_info.json").is_file()
    assert '"method": "mlp_bias"' in (result.export_dir / "training_info.json").read_text()
