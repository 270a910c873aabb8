"""Learning-rate schedule shapes and TrainingArguments validation."""

from __future__ import annotations

import itertools
import math

import pytest

from sparsegrad_core.training import TrainingArguments, lr_scale


def test_warmup_rises_linearly_then_constant():
    scales = [lr_scale(s, 10, 4, "constant") for s in range(10)]
    assert scales[:4] == [0.25, 0.5, 0.75, 1.0]
    assert scales[4:] == [1.0] * 6


def test_linear_and_cosine_decay_after_warmup():
    total, warmup = 20, 5
    lin = [lr_scale(s, total, warmup, "linear") for s in range(total)]
    cos = [lr_scale(s, total, warmup, "cosine") for s in range(total)]
    assert lin[4] == cos[4] == 1.0 and lin[5] == cos[5] == 1.0
    assert all(a > b for a, b in itertools.pairwise(lin[5:]))  # strictly decreasing
    assert all(a > b for a, b in itertools.pairwise(cos[5:]))
    assert lin[-1] == pytest.approx(1 / 15) and lin[-1] > 0  # the last update is not at lr 0
    assert cos[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))
    mid = 5 + 15 // 2
    assert cos[mid] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert lr_scale(0, 1, 0, "linear") == 1.0


def test_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_scale(0, 10, 0, "step")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"gradient_accumulation_steps": -1}, "gradient_accumulation_steps"),
        ({"lr_scheduler": "step"}, "lr_scheduler"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"warmup_steps": 3, "warmup_ratio": 0.1}, "warmup_steps or warmup_ratio"),
        ({"n_epochs": None, "max_steps": None}, "n_epochs or max_steps"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"early_stopping_patience": 2}, "eval_every"),
        ({"checkpoint_every": 10}, "output_dir"),
        ({"load_best_at_end": True}, "keep_best"),
        ({"max_seq_length": 1}, "max_seq_length"),
        ({"seed": -1}, "seed"),
    ],
)
def test_arguments_name_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainingArguments(**kwargs)


def test_warmup_ratio_resolves_against_total_steps():
    assert TrainingArguments(warmup_ratio=0.1).warmup_for(200) == 20
    assert TrainingArguments(warmup_steps=7).warmup_for(200) == 7
