"""Reference outputs of the trained model on a few fixed examples, kept in ``Job.summary["probe"]``.

Whoever downloads the adapter can check that what they load computes what the worker trained::

    {"texts": [...], "text_pairs": [...] | null, "max_seq_length": 128,
     "logits": [[...], ...]}          # one row per text, float32, eval mode, no autocast

Each text is encoded alone: ``tokenizer(text, text_pair, truncation=True, max_length=max_seq_length)``
(no padding), so the numbers do not depend on batching. Classification and regression only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from sparsegrad_data import Dataset, TaskType

PROBE_SIZE = 4


@torch.no_grad()
def probe_logits(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], pairs: list[str] | None,
    max_seq_length: int,
) -> list[list[float]]:
    """Logits of ``model`` for each text (pair), encoded alone as described in the module docstring."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows: list[list[float]] = []
    try:
        for i, text in enumerate(texts):
            pair = None if pairs is None else pairs[i]
            enc = tokenizer(text, pair, truncation=True, max_length=max_seq_length, return_tensors="pt")
            out = model(**{k: v.to(device) for k, v in enc.items()})
            rows.append([float(v) for v in out.logits.float()[0].tolist()])
    finally:
        model.train(was_training)
    return rows


def reference_outputs(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: Dataset, max_seq_length: int
) -> dict[str, Any] | None:
    """The probe of ``model`` on the first :data:`PROBE_SIZE` examples of ``data`` (None for causal LM)."""
    if data.task == TaskType.CAUSAL_LM or not data.examples:
        return None
    examples = data.examples[:PROBE_SIZE]
    texts = [ex.text or "" for ex in examples]
    pairs = [ex.text_pair or "" for ex in examples] if examples[0].text_pair is not None else None
    return {
        "texts": texts, "text_pairs": pairs, "max_seq_length": max_seq_length,
        "logits": probe_logits(model, tokenizer, texts, pairs, max_seq_length),
    }
