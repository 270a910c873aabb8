"""Tiny random transformers built locally (no hub downloads), saved as model folders, and chat records:
the one model factory of the test suite.

Each factory seeds ``torch`` right before building, so equal arguments give equal weights. Given a
tokenizer, a model takes its vocabulary size and special token ids (the real MiniLM tokenizer in the
training, worker and service tests); without one, a :data:`VOCAB`-token vocabulary with pad 0, BOS 1 and
EOS 2 (the core tests feed random ids). Sizes default to the suite's usual shape: hidden 32, 2 layers,
intermediate 64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB = 100
"""Vocabulary size of the models built without a tokenizer."""


def tiny_bert(tokenizer: Any = None, num_labels: int = 2, dropout: float = 0.1, seed: int = 0, *,
              hidden: int = 32, layers: int = 2, heads: int = 2, intermediate: int = 64,
              max_positions: int = 128) -> BertForSequenceClassification:
    """A BERT sequence classifier (``num_labels=1``: a regressor)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size if tokenizer is not None else VOCAB, hidden_size=hidden,
        num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
        max_position_embeddings=max_positions, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0,
    )
    if num_labels == 1:
        config.problem_type = "regression"
    return BertForSequenceClassification(config)


def tiny_llama(tokenizer: Any = None, seed: int = 0, *, layers: int = 2, heads: int = 2, kv_heads: int = 2,
               intermediate: int = 64, max_positions: int = 256) -> LlamaForCausalLM:
    """A LLaMA causal LM; with a BERT tokenizer, its CLS and SEP tokens are BOS and EOS."""
    torch.manual_seed(seed)
    pad, bos, eos = (0, 1, 2) if tokenizer is None else (
        tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size if tokenizer is not None else VOCAB, hidden_size=32,
        intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, max_position_embeddings=max_positions, pad_token_id=pad, bos_token_id=bos,
        eos_token_id=eos,
    )
    return LlamaForCausalLM(config)


def tiny_roberta(seed: int = 0, num_labels: int = 2) -> RobertaForSequenceClassification:
    """A RoBERTa sequence classifier, dropout 0, in eval mode (pad id 1, as RoBERTa's)."""
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=72, num_labels=num_labels, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return RobertaForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """A GPT-2 causal LM (``Conv1D`` projections), dropout 0, in eval mode."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=None, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2,
    )
    return GPT2LMHeadModel(config).eval()


def save_model_folder(folder: Path, model: PreTrainedModel, tokenizer: Any) -> Path:
    """``model`` and ``tokenizer`` saved into ``folder`` like a hub model folder; returns ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML-like chat template (the MiniLM tokenizer has none)."""

CHATS = [
    [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"},
     {"role": "assistant", "content": "Green, of course."}],
    [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello there, friend."}],
]
"""Three conversations: one turn, a system prompt with two assistant turns, one turn."""
