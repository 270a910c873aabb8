"""Chat SFT records as token ids and labels: the labels are ``-100`` everywhere except on assistant tokens.

:func:`chat_segments` renders a conversation (with the tokenizer's chat template, or a plain
``<|role|>`` format without one) into text segments marked assistant or not; :func:`encode_chat`
tokenizes them into ``(input_ids, labels)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label value that the loss ignores (prompt, system and padding tokens in chat SFT)."""


def chat_segments(messages: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, bool]]:
    """The rendered conversation as ``[(text, is_assistant), ...]`` whose concatenation is the full text.

    With a chat template, an assistant turn spans from the end of the prompt rendered with
    ``add_generation_prompt=True`` to the end of the conversation rendered through that turn (so
    the end-of-turn marker is learned too). Without one, the format is ``<|role|>\\ncontent\\n`` and
    an assistant turn is its content plus the EOS token.
    """
    if not getattr(tokenizer, "chat_template", None):
        eos = tokenizer.eos_token or ""
        out: list[tuple[str, bool]] = []
        for m in messages:
            if m["role"] == "assistant":
                out += [("<|assistant|>\n", False), (m["content"] + eos, True), ("\n", False)]
            else:
                out.append((f"<|{m['role']}|>\n{m['content']}\n", False))
        return out

    def render(msgs: Sequence[dict[str, str]], prompt: bool) -> str:
        text = tokenizer.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=prompt)
        return str(text)

    full = render(messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = end = -1
        try:
            before, through = render(messages[:i], True), render(messages[: i + 1], False)
            if full.startswith(before) and full.startswith(through) and len(through) > len(before):
                start, end = len(before), len(through)
        except Exception:  # templates that cannot render a prefix (e.g. an empty list)
            pass
        if start < 0:  # fall back to locating the content itself
            cursor = spans[-1][1] if spans else 0
            content = m["content"] if m["content"] in full[cursor:] else m["content"].strip()
            start = full.find(content, cursor)
            if start < 0:
                raise ValueError("the chat template changes assistant content; cannot locate assistant tokens")
            end = start + len(content)
        spans.append((start, end))
    out, cursor = [], 0
    for start, end in spans:
        if start > cursor:
            out.append((full[cursor:start], False))
        out.append((full[start:end], True))
        cursor = end
    if cursor < len(full):
        out.append((full[cursor:], False))
    return out


def encode_chat(
    messages: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for causal-LM SFT: labels copy the ids on assistant tokens only."""
    segments = chat_segments(messages, tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    if tokenizer.is_fast:
        text = "".join(s for s, _ in segments)
        bounds, pos = [], 0
        for s, is_assistant in segments:
            if is_assistant:
                bounds.append((pos, pos + len(s)))
            pos += len(s)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            ids.append(tok)
            inside = any(a <= s < b for a, b in bounds) and e > s
            labels.append(tok if inside else IGNORE_INDEX)
    else:
        for s, is_assistant in segments:
            piece = tokenizer(s, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if is_assistant else [IGNORE_INDEX] * len(piece)
    return ids[:max_seq_length], labels[:max_seq_length]
