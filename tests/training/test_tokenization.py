"""tokenization.py: sentences, sentence pairs and chat records; dynamic padding; prompt and padding masks."""

from __future__ import annotations

from dataclasses import replace

import torch

from sparsegrad_core.chat import IGNORE_INDEX
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_data import glue_mapping, load_dataset, sample_path


def test_dynamic_padding_pads_to_longest_row_of_the_batch(tokenizer, sst2_small):
    train, _ = sst2_small
    data = tokenize_dataset(train, tokenizer, max_seq_length=64)
    lengths = data.lengths()
    batch = data.collate([0, 1, 2])
    assert batch["input_ids"].shape == (3, max(lengths[:3]))
    assert batch["attention_mask"].sum(1).tolist() == list(lengths[:3])
    assert batch["labels"].dtype == torch.long
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    short = tokenize_dataset(train, tokenizer, max_seq_length=8)
    assert max(short.lengths()) == 8


def test_sentence_pairs_get_two_segments(tokenizer):
    task, mapping = glue_mapping("mrpc")
    full = load_dataset(sample_path("mrpc_train"), task, mapping)
    ds = replace(full, examples=full.examples[:4])
    data = tokenize_dataset(ds, tokenizer, max_seq_length=128)
    row = data.rows[0]
    assert 0 in row["token_type_ids"] and 1 in row["token_type_ids"]
    assert row["input_ids"].count(tokenizer.sep_token_id) == 2


def test_causal_dataset_masks_prompt_and_padding(tokenizer, chat_file):
    ds = load_dataset(chat_file, "causal_lm")
    data = tokenize_dataset(ds, tokenizer, max_seq_length=64)
    batch = data.collate([0, 1])
    assert batch["labels"].shape == batch["input_ids"].shape
    pad_positions = batch["attention_mask"] == 0
    assert bool((batch["labels"][pad_positions] == IGNORE_INDEX).all())
    assert data.loss_units([0]) == sum(1 for t in data.rows[0]["labels"][1:] if t != IGNORE_INDEX)
