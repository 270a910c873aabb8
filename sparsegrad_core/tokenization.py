"""Turn a validated Dataset into tokenized rows, and any subset of them into a dynamically padded batch.

:func:`tokenize_dataset` handles sentences and sentence pairs (classification / regression) and causal-LM
records (chat SFT with labels only on trained assistant tokens, or prompt/completion with labels only
on the completion, see :mod:`sparsegrad_core.chat`); the
resulting :class:`TokenizedDataset` collates any list of rows into a batch padded to the longest row
of that batch only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from sparsegrad_data import Dataset, TaskType

from .chat import IGNORE_INDEX, encode_chat, encode_prompt_completion


@dataclass
class TokenizedDataset:
    """Tokenized rows of a Dataset; :meth:`collate` pads any subset to its own longest row."""

    task: TaskType
    rows: list[dict[str, list[int]]]
    labels: list[int] | list[float] | None
    pad_token_id: int
    num_labels: int | None = None
    label_names: list[str] | None = None
    dropped: int = 0
    """Causal-LM records whose trained tokens were all cut by ``max_seq_length`` (nothing to learn)."""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> tuple[int, ...]:
        """Tokens per row."""
        return tuple(len(r["input_ids"]) for r in self.rows)

    def collate(self, indices: Sequence[int], width: int | None = None) -> dict[str, torch.Tensor]:
        """A batch of the rows at ``indices``, right-padded to the longest of them, or to ``width`` tokens (a fixed
        shape: a step captured in a CUDA graph)."""
        rows = [self.rows[i] for i in indices]
        longest = max(len(r["input_ids"]) for r in rows)
        if width is not None and width < longest:
            raise ValueError(f"cannot pad rows of {longest} tokens to a width of {width}")
        width = longest if width is None else width
        batch: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            fill = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
            batch[key] = torch.tensor(
                [r[key] + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long
            )
        if self.labels is not None:
            dtype = torch.float32 if self.task == TaskType.REGRESSION else torch.long
            batch["labels"] = torch.tensor([self.labels[i] for i in indices], dtype=dtype)
        return batch

    def loss_units(self, indices: Sequence[int]) -> int:
        """What the model's mean loss averages over: examples, or predicted label tokens (causal LM)."""
        if self.task != TaskType.CAUSAL_LM:
            return len(indices)
        return sum(sum(1 for t in self.rows[i]["labels"][1:] if t != IGNORE_INDEX) for i in indices)


def tokenize_dataset(
    ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> TokenizedDataset:
    """Tokenize every example of ``ds`` for its task, truncating to ``max_seq_length`` tokens."""
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with load_tokenizer()/load_base_model()")
    pad = int(tokenizer.pad_token_id)
    if ds.task == TaskType.CAUSAL_LM:
        rows, dropped = [], 0
        for ex in ds.examples:
            if ex.completion is not None:
                ids, token_labels = encode_prompt_completion(
                    ex.prompt or "", ex.completion, tokenizer, max_seq_length
                )
            else:
                ids, token_labels = encode_chat(list(ex.messages or ()), tokenizer, max_seq_length, ex.tools)
            if all(t == IGNORE_INDEX for t in token_labels[1:]):
                dropped += 1
                continue
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": token_labels})
        if not rows:
            raise ValueError(
                f"{ds.source}: every record's trained text (assistant turns or completion) lies beyond "
                f"max_seq_length={max_seq_length}"
            )
        return TokenizedDataset(ds.task, rows, None, pad, dropped=dropped)
    texts = [ex.text or "" for ex in ds.examples]
    pairs = [ex.text_pair for ex in ds.examples]
    kw: dict[str, Any] = {"truncation": True, "max_length": max_seq_length}
    if all(p is None for p in pairs):
        enc = tokenizer(texts, **kw)
    elif all(p is not None for p in pairs):
        enc = tokenizer(texts, pairs, **kw)
    else:
        parts = [tokenizer(t, p, **kw) for t, p in zip(texts, pairs, strict=True)]
        enc = {k: [p[k] for p in parts] for k in parts[0]}
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    rows = [{k: list(enc[k][i]) for k in keys} for i in range(len(texts))]
    raw: list[Any] = [ex.label for ex in ds.examples]
    labels: list[int] | list[float] = (
        [float(v) for v in raw] if ds.task == TaskType.REGRESSION else [int(v) for v in raw]
    )
    return TokenizedDataset(ds.task, rows, labels, pad, num_labels=ds.num_labels, label_names=ds.label_names)
