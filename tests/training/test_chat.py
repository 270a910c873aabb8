"""chat.py: chat labels cover only assistant tokens, with and without a chat template."""

from __future__ import annotations

import copy

from support.tiny import CHAT_TEMPLATE, CHATS

from sparsegrad_core.chat import IGNORE_INDEX, encode_chat


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
