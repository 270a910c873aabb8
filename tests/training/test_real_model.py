"""The real pretrained MiniLM-L6 (bundled, offline) learns SST-2 with SparseGrad at 1% density."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from sparsegrad_core import SparseGradLinear
from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.loading import load_base_model
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainingArguments, prepare_for_training
from sparsegrad_data import glue_mapping, load_dataset, sample_path

# Measured on 2 CPU cores: 0.527 -> 0.812 in 54 s (seed 0); seeds 0-2 gave 0.80-0.83 at 80-120 steps.
# Chance on these 400 dev sentences is ~0.5.
MIN_ACCURACY = 0.70


# PEFT-pure (only SparseGrad's entries of the MLPs and the classifier head train), SST-2 sample, 100 steps at
# lr 1e-3, 1% density, seed 0, measured on 2 CPU cores: SparseGrad 0.5275 -> 0.828-0.830 (eval loss 0.372); the head
# alone, with the sparse gradient zeroed in the layer's backward, 0.5275 -> 0.7075 (eval loss 0.574). Seed 1: 0.8125
# and 0.6975. The bar sits 7 points above what the head alone reaches, 3-5 below what SparseGrad reaches: a no-op
# sparse update cannot pass it (the paper setting's 0.70 bar cannot tell: the head alone already reaches it).
PEFT_MIN_ACCURACY = 0.78
PEFT_HEAD_ALONE_ACCURACY = 0.7075


def _train_minilm_sst2(setting: str, learning_rate: float) -> tuple[dict[str, float], dict[str, float]]:
    """(before, after) dev metrics of 100 steps of SparseGrad at 1% density on the SST-2 sample (400 dev), after
    asserting that every SparseGrad layer's sparse delta has entries: where the non-MLP parameters train
    densely (the paper setting) the metrics alone cannot tell a run whose sparse update does nothing."""
    started = time.perf_counter()
    task, mapping = glue_mapping("sst2")
    train = load_dataset(sample_path("sst2_train"), task, mapping)
    dev = load_dataset(sample_path("sst2_dev"), task, mapping, label_names=train.label_names)
    dev = replace(dev, examples=dev.examples[:400])
    torch.manual_seed(0)
    model, tokenizer = load_base_model("minilm-l6", task, label_names=train.label_names)
    args = TrainingArguments(batch_size=32, max_steps=100, learning_rate=learning_rate, max_seq_length=64,
                             group_by_length=True, seed=0)
    train_data = tokenize_dataset(train, tokenizer, args.max_seq_length)
    spec = MethodSpec(type="sparsegrad", setting=setting,
                      sparsegrad=SparseGradConfig(density=0.01, calibration_steps=4))
    prepared = prepare_for_training(model, spec, train_data, batch_size=args.batch_size, seed=args.seed)
    result = Trainer(prepared, train_data, dev, tokenizer, args).train()
    assert result.before_eval is not None and result.final_eval is not None
    touched = {name: m.touched_entries() for name, m in prepared.model.named_modules() if isinstance(m, SparseGradLinear)}
    assert len(touched) == 12, f"expected the 12 MLP linears of MiniLM-L6 as SparseGrad layers: {sorted(touched)}"
    untouched = [name for name, n in touched.items() if n == 0]
    assert not untouched, f"the sparse delta is all zero in {len(untouched)} of 12 layers: {untouched[:3]}"
    print(f"MiniLM SparseGrad ({setting}) SST-2: accuracy {result.before_eval['eval_accuracy']:.3f} -> "
          f"{result.final_eval['eval_accuracy']:.3f} in {time.perf_counter() - started:.1f}s")
    return result.before_eval, result.final_eval


@pytest.mark.slow
def test_minilm_sparsegrad_learns_sst2_sample():
    before, after = _train_minilm_sst2("paper", 2e-4)
    assert after["eval_accuracy"] >= MIN_ACCURACY
    assert after["eval_loss"] < before["eval_loss"]


@pytest.mark.slow
def test_minilm_peft_pure_sparsegrad_learns_beyond_the_head_alone():
    """Only the sparse entries and the head train, so passing needs the sparse update to work (see the numbers)."""
    _, after = _train_minilm_sst2("peft", 1e-3)
    assert after["eval_accuracy"] >= PEFT_MIN_ACCURACY > PEFT_HEAD_ALONE_ACCURACY + 0.05
