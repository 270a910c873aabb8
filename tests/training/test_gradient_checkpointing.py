"""Gradient checkpointing: the same run with and without it gives the same losses and weights (SparseGrad's
custom autograd Functions under non-reentrant recompute, dropout replayed), the KV cache is off while
training and restored after, and models without support are refused naming the field."""

from __future__ import annotations

import pytest
import torch
from support.tiny import tiny_bert, tiny_llama
from torch import nn

from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.layer import SparseGradLinear
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import (
    GradientCheckpointingUnsupported,
    Trainer,
    TrainingArguments,
    enable_gradient_checkpointing,
    prepare_for_training,
)
from sparsegrad_core.training.checkpoint import trainable_state
from sparsegrad_core.training.gradient_checkpointing import is_gradient_checkpointing
from sparsegrad_data import load_dataset

STEPS = 3


def train_counting_forwards(model: nn.Module, data, tokenizer, spec: MethodSpec, checkpointing: bool):
    """Prepare and train ``STEPS`` steps; returns the result, the trained state, SparseGradLinear forwards begun
    during training, and ``config.use_cache`` as each training forward saw it."""
    args = TrainingArguments(
        batch_size=8,
        max_steps=STEPS,
        learning_rate=1e-3,
        eval_before=False,
        gradient_checkpointing=checkpointing,
    )
    prepared = prepare_for_training(
        model, spec, data, batch_size=args.batch_size, seed=args.seed, gradient_checkpointing=checkpointing
    )
    trainer = Trainer(prepared, data, None, tokenizer, args)
    calls: list[int] = []
    caches: list[bool] = []
    for module in model.modules():
        if isinstance(module, SparseGradLinear):
            module.register_forward_pre_hook(lambda *_: calls.append(1))
    model.register_forward_pre_hook(lambda m, _: caches.append(bool(getattr(m.config, "use_cache", False))))
    result = trainer.train()
    return result, trainable_state(model), len(calls), caches


@pytest.mark.parametrize("selection", ["dynamic", "block"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_checkpointing_changes_neither_losses_nor_weights(
    tokenizer, sst2_small, chat_file, family, selection
):
    if family == "bert":
        data, build = (
            tokenize_dataset(sst2_small[0], tokenizer, 32),
            tiny_bert,
        )  # dropout 0.1: masks are replayed
    else:
        data, build = tokenize_dataset(load_dataset(chat_file, "causal_lm"), tokenizer, 64), tiny_llama
    spec = MethodSpec(
        type="sparsegrad", sparsegrad=SparseGradConfig(density=0.05, calibration_steps=2, selection=selection)
    )
    runs = {}
    for checkpointing in (False, True):
        model = build(tokenizer)
        runs[checkpointing] = (model, *train_counting_forwards(model, data, tokenizer, spec, checkpointing))
    (plain_model, plain, plain_state, plain_calls, _), (model, ckpt, state, calls, caches) = (
        runs[False],
        runs[True],
    )
    assert is_gradient_checkpointing(model) and not is_gradient_checkpointing(plain_model)
    assert calls == 2 * plain_calls  # every block's forward ran again in the backward
    assert ckpt.losses == pytest.approx(plain.losses, rel=1e-5, abs=1e-6)
    assert state.keys() == plain_state.keys()
    for name, value in state.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, plain_state[name], rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(value, plain_state[name]), name
    if family == "llama":
        assert caches and not any(caches)  # no KV cache while training...
        assert model.config.use_cache is True  # ...and the exported config still caches


def test_lora_and_full_train_with_checkpointing(tokenizer, sst2_small):
    data = tokenize_dataset(sst2_small[0], tokenizer, 32)
    for method in ("lora", "full"):
        losses = []
        for checkpointing in (False, True):
            spec = MethodSpec(type=method, setting="peft" if method == "lora" else "paper")
            result, *_ = train_counting_forwards(tiny_bert(tokenizer), data, tokenizer, spec, checkpointing)
            losses.append(result.losses)
        assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6), method


def test_models_without_support_are_refused_naming_the_field(tokenizer, sst2_small):
    with pytest.raises(GradientCheckpointingUnsupported, match="gradient_checkpointing: Linear"):
        enable_gradient_checkpointing(nn.Linear(2, 2))
    data = tokenize_dataset(sst2_small[0], tokenizer, 32)
    model = tiny_bert(tokenizer)
    model.supports_gradient_checkpointing = False  # type: ignore[misc]
    forwards: list[int] = []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        prepare_for_training(
            model, MethodSpec(type="sparsegrad"), data, batch_size=8, gradient_checkpointing=True
        )
    assert not forwards  # refused before any calibration pass
    prepared = prepare_for_training(model, MethodSpec(type="full"), data, batch_size=8)
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        Trainer(prepared, data, None, tokenizer, TrainingArguments(max_steps=1, gradient_checkpointing=True))
