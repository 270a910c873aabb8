"""Fixtures of the training tests: the real MiniLM tokenizer (offline, from its package) and small data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from support.tiny import CHATS

from sparsegrad_core.loading import load_tokenizer
from sparsegrad_data import Dataset, glue_mapping, load_dataset, sample_path


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("minilm-l6")


@pytest.fixture(scope="session")
def sst2_small() -> tuple[Dataset, Dataset]:
    task, mapping = glue_mapping("sst2")
    train = load_dataset(sample_path("sst2_train"), task, mapping)
    dev = load_dataset(sample_path("sst2_dev"), task, mapping, label_names=train.label_names)
    return replace(train, examples=train.examples[:96]), replace(dev, examples=dev.examples[:48])


@pytest.fixture()
def chat_file(tmp_path: Path) -> Path:
    path = tmp_path / "chat.jsonl"
    lines = [json.dumps({"messages": CHATS[i % len(CHATS)]}) for i in range(24)]
    path.write_text("\n".join(lines) + "\n")
    return path
