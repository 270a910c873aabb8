"""Causal-LM SFT records as token ids and labels: the labels are ``-100`` everywhere except on trained tokens.

Chat records follow OpenAI's supervised format (see :mod:`sparsegrad_data.chat`): :func:`chat_segments`
renders a conversation (with the tokenizer's chat template, or a plain ``<|role|>`` format without one)
into text segments marked trained or not, where only assistant turns with weight 1 (the default) are
trained; :func:`encode_chat` tokenizes them into ``(input_ids, labels)``. Prompt/completion records
(:func:`encode_prompt_completion`) use no template: the prompt, then the completion and EOS, trained.
:func:`generation_prompt` formats a conversation the same way for a model to answer (inference).

Tool definitions, tool calls and tool results go through the chat template only: a tokenizer without
one, or whose template drops them, raises ValueError naming the tokenizer (never a silent loss).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label value that the loss ignores (prompt, system, untrained assistant and padding tokens)."""

ChatMessage = Mapping[str, Any]
"""One message as validated by :mod:`sparsegrad_data.chat` (role, content, name, weight, tool_calls...)."""


def model_name(tokenizer: PreTrainedTokenizerBase) -> str:
    """How the tokenizer (and so the model) is named in errors: its ``name_or_path``, else its class."""
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def is_trained(message: ChatMessage) -> bool:
    """Whether a message's tokens get labels: assistant messages whose ``weight`` is not 0."""
    return message["role"] == "assistant" and message.get("weight", 1) != 0


def _uses_tools(messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def chat_segments(
    messages: Sequence[ChatMessage],
    tokenizer: PreTrainedTokenizerBase,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[tuple[str, bool]]:
    """The rendered conversation as ``[(text, is_trained), ...]`` whose concatenation is the full text.

    With a chat template, ``tools`` is passed as ``tools=``, messages keep ``name``, ``tool_calls``
    (arguments decoded to a dict, as Hugging Face templates expect) and ``tool_call_id``; ``weight`` is
    dropped, null content becomes ``""``, and the ``developer`` role becomes ``system`` unless the
    template mentions ``developer``. A trained assistant turn spans from the end of the prompt rendered
    with ``add_generation_prompt=True`` to the end of the conversation rendered through that turn (so
    the end-of-turn marker is learned too). Without a template, the format is ``<|role|>\\ncontent\\n``
    (``<|role|> name\\n...`` with a name) and an assistant turn is its content plus the EOS token.

    Raises ValueError, naming the tokenizer, when the template fails on the conversation, or when the
    conversation has tools, tool calls or tool results and there is no template or it ignores them.
    """
    if not getattr(tokenizer, "chat_template", None):
        if _uses_tools(messages, tools):
            raise ValueError(
                f"the tokenizer of {model_name(tokenizer)} has no chat template, so it cannot render tool "
                "definitions, tool calls or tool results; use a model whose chat template supports tools"
            )
        return _plain_segments(messages, tokenizer)
    template_messages = [_template_message(m, tokenizer) for m in messages]
    full = _render(tokenizer, template_messages, tools, prompt=False)
    _check_tools_rendered(tokenizer, template_messages, tools, full)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if not is_trained(m):
            continue
        start = end = -1
        try:
            before = _render(tokenizer, template_messages[:i], tools, prompt=True)
            through = _render(tokenizer, template_messages[: i + 1], tools, prompt=False)
            if full.startswith(before) and full.startswith(through) and len(through) > len(before):
                start, end = len(before), len(through)
        except ValueError:  # templates that cannot render a prefix (e.g. an empty list)
            pass
        if start < 0:  # fall back to locating the content itself
            start, end = _locate_content(m, full, spans[-1][1] if spans else 0, tokenizer)
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


def generation_prompt(messages: Sequence[ChatMessage], tokenizer: PreTrainedTokenizerBase) -> str:
    """The text a model continues to answer ``messages``, formatted as :func:`chat_segments` formats training
    chats: the chat template with ``add_generation_prompt=True``, or without a template the plain format followed
    by the ``<|assistant|>`` header. Raises ValueError (naming the tokenizer) when the template fails."""
    if not getattr(tokenizer, "chat_template", None):
        return "".join(text for text, _ in _plain_segments(messages, tokenizer)) + "<|assistant|>\n"
    return _render(tokenizer, [_template_message(m, tokenizer) for m in messages], None, prompt=True)


def _plain_segments(
    messages: Sequence[ChatMessage], tokenizer: PreTrainedTokenizerBase
) -> list[tuple[str, bool]]:
    eos = tokenizer.eos_token or ""
    out: list[tuple[str, bool]] = []
    for m in messages:
        header = f"<|{m['role']}|>" + (f" {m['name']}" if m.get("name") else "") + "\n"
        content = m.get("content") or ""
        if m["role"] != "assistant":
            out.append((f"{header}{content}\n", False))
        elif is_trained(m):
            out += [(header, False), (content + eos, True), ("\n", False)]
        else:
            out.append((f"{header}{content}{eos}\n", False))
    return out


def _template_message(message: ChatMessage, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The message as chat templates expect it (see :func:`chat_segments`)."""
    out: dict[str, Any] = {k: v for k, v in message.items() if k != "weight"}
    if out.get("content") is None:
        out["content"] = ""
    if out["role"] == "developer" and "developer" not in str(tokenizer.chat_template):
        out["role"] = "system"
    if out.get("tool_calls"):
        out["tool_calls"] = [_template_call(call) for call in out["tool_calls"]]
    return out


def _template_call(call: Mapping[str, Any]) -> dict[str, Any]:
    function = dict(call["function"])
    if isinstance(function.get("arguments"), str):
        function["arguments"] = json.loads(function["arguments"])
    return {**call, "function": function}


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    *,
    prompt: bool,
) -> str:
    try:
        conversation: Any = [dict(m) for m in messages]
        definitions: Any = [dict(t) for t in tools] if tools else None
        text = tokenizer.apply_chat_template(
            conversation, tools=definitions, tokenize=False, add_generation_prompt=prompt
        )
    except Exception as exc:  # jinja errors, raise_exception() in templates, bad message shapes
        raise ValueError(
            f"the chat template of {model_name(tokenizer)} cannot render this conversation: {exc}"
        ) from exc
    return str(text)


def _check_tools_rendered(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    full: str,
) -> None:
    """Raise when the template renders the same text without the tools, or without the tool calls."""
    if tools and _render(tokenizer, messages, None, prompt=False) == full:
        raise ValueError(
            f"the chat template of {model_name(tokenizer)} does not render tool definitions ('tools'); "
            "use a model whose chat template supports tools"
        )
    if any(m.get("tool_calls") for m in messages):
        stripped = [{k: v for k, v in m.items() if k != "tool_calls"} for m in messages]
        if _render(tokenizer, stripped, tools, prompt=False) == full:
            raise ValueError(
                f"the chat template of {model_name(tokenizer)} does not render assistant tool calls "
                "('tool_calls'); use a model whose chat template supports tools"
            )


def _locate_content(
    message: ChatMessage, full: str, cursor: int, tokenizer: PreTrainedTokenizerBase
) -> tuple[int, int]:
    """``(start, end)`` of an assistant message's content in ``full``, searching from ``cursor``."""
    text = message.get("content") or ""
    if message.get("tool_calls") or not text.strip():
        raise ValueError(
            f"the chat template of {model_name(tokenizer)} renders assistant turns in a way that "
            "cannot be told apart from the prompt; cannot locate the assistant tokens"
        )
    content = text if text in full[cursor:] else text.strip()
    start = full.find(content, cursor)
    if start < 0:
        raise ValueError(
            f"the chat template of {model_name(tokenizer)} changes assistant content; "
            "cannot locate assistant tokens"
        )
    return start, start + len(content)


def encode_chat(
    messages: Sequence[ChatMessage],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for chat SFT: labels copy the ids on trained assistant tokens only."""
    return encode_segments(chat_segments(messages, tokenizer, tools), tokenizer, max_seq_length)


def encode_prompt_completion(
    prompt: str, completion: str, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for a prompt/completion record: ``prompt + completion + EOS``, no template.

    Labels copy the ids of the completion and EOS; the prompt's are ``-100``. No other special token is
    added, as in the no-template chat format.
    """
    segments = [(prompt, False), (completion + (tokenizer.eos_token or ""), True)]
    return encode_segments([s for s in segments if s[0]], tokenizer, max_seq_length)


def encode_segments(
    segments: Sequence[tuple[str, bool]], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> tuple[list[int], list[int]]:
    """Tokenize ``[(text, is_trained), ...]`` as one text: labels copy the ids of tokens starting in a
    trained segment (by character offsets with a fast tokenizer; segment by segment otherwise)."""
    ids: list[int] = []
    labels: list[int] = []
    if tokenizer.is_fast:
        text = "".join(s for s, _ in segments)
        bounds, pos = [], 0
        for s, trained in segments:
            if trained:
                bounds.append((pos, pos + len(s)))
            pos += len(s)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            ids.append(tok)
            inside = any(a <= s < b for a, b in bounds) and e > s
            labels.append(tok if inside else IGNORE_INDEX)
    else:
        for s, trained in segments:
            piece = tokenizer(s, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return ids[:max_seq_length], labels[:max_seq_length]
