"""``TrainingArguments.bf16``: autocast on CUDA and on the CPU; the worker's choice of it per device."""

from __future__ import annotations

import pytest
import torch
from support.tiny import tiny_bert

from sparsegrad_core.loading import load_tokenizer
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.precision import cpu_multiplies_bf16
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainingArguments, prepare_for_training
from sparsegrad_data import Dataset, DatasetFormat, Example, TaskType
from worker.device import select_device

TEXTS = ["a fine film", "dreadful and dull", "quite good", "not worth it", "a delight", "boring"] * 4


def run(device: str, bf16: bool) -> list[float]:
    tokenizer = load_tokenizer("minilm-l6")
    model = tiny_bert(tokenizer, layers=1, max_positions=64).to(device)
    examples = [Example(text=t, label=i % 2, line=i + 1) for i, t in enumerate(TEXTS)]
    data = Dataset(examples, TaskType.CLASSIFICATION, DatasetFormat.JSONL, ["0", "1"], 2, "mem")
    args = TrainingArguments(max_steps=4, batch_size=8, max_seq_length=16, learning_rate=1e-3, bf16=bf16,
                             eval_before=False, save_final=False)
    train = tokenize_dataset(data, tokenizer, 16)
    prepared = prepare_for_training(model, MethodSpec(type="sparsegrad"), train, batch_size=8)
    result = Trainer(prepared, train, train, tokenizer, args).train()
    return [*result.losses, result.final_eval["eval_loss"]]  # type: ignore[index]


def check_autocast(device: str) -> None:
    fp32, bf16 = run(device, bf16=False), run(device, bf16=True)
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 != fp32  # autocast changed the arithmetic
    assert bf16 == pytest.approx(fp32, rel=0.05, abs=0.02)


def test_bf16_autocast_on_the_cpu() -> None:
    check_autocast("cpu")
    assert TrainingArguments(bf16=True).to_dict()["bf16"] is True


def test_cpu_workers_use_bf16_where_the_cpu_multiplies_bf16_in_hardware_unless_switched_off() -> None:
    assert select_device(cpu_bf16=False).bf16 is False
    if not torch.cuda.is_available():
        assert select_device(cpu_bf16=True).bf16 is cpu_multiplies_bf16()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda() -> None:
    check_autocast("cuda")
