"""Validate a causal-LM (chat SFT) record in OpenAI's supervised chat format: ``messages`` and its tools.

A message has a ``role`` (system, developer, user, assistant or tool) and ``content`` (a string, or a
list of ``{"type": "text", "text": ...}`` parts, joined with no separator). Besides, a message may have
``name`` (not on tool messages); an assistant message may have ``weight`` (0 or 1: whether it is trained
on) and ``tool_calls`` (then its content may be null or absent); a tool message needs ``tool_call_id``
naming an earlier tool call. The record may define ``tools`` (or OpenAI's deprecated ``functions``) and
``parallel_tool_calls`` (validated, then unused: chat templates do not render it).
"""

from __future__ import annotations

from collections.abc import Mapping

from .fields import unencodable
from .issues import describe_value, json_type_name
from .schema import Column, Message, Tool
from .tools import Problem, check_functions, check_tool_calls, check_tools

ROLES = ("system", "developer", "user", "assistant", "tool")
_KEYS: dict[str, tuple[str, ...]] = {
    "system": ("role", "content", "name"),
    "developer": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": ("role", "content", "name", "weight", "tool_calls"),
    "tool": ("role", "content", "tool_call_id"),
}
_DEPRECATED_KEYS = {
    "function_call": "OpenAI's deprecated 'function_call' is not supported; write it as 'tool_calls'",
}
_DEPRECATED_ROLES = {
    "function": "role 'function' (OpenAI's deprecated function calling) is not supported; "
    "use role 'tool' with a 'tool_call_id'",
}
TOOLS_KEY = "tools"
FUNCTIONS_KEY = "functions"
PARALLEL_KEY = "parallel_tool_calls"


def check_chat_record(
    fields: Mapping[Column, object], key: str
) -> tuple[tuple[Message, ...] | None, tuple[Tool, ...] | None, list[Problem]]:
    """``(messages, tools, [])`` for a valid record (``tools`` None when it defines none), else the problems."""
    problems: list[Problem] = []
    tools: tuple[Tool, ...] | None = None
    if TOOLS_KEY in fields and FUNCTIONS_KEY in fields:
        problems.append(
            (
                FUNCTIONS_KEY,
                f"a record has either '{TOOLS_KEY}' or the deprecated '{FUNCTIONS_KEY}', not both",
            )
        )
    elif TOOLS_KEY in fields:
        tools, found = check_tools(fields[TOOLS_KEY], TOOLS_KEY)
        problems += found
    elif FUNCTIONS_KEY in fields:
        tools, found = check_functions(fields[FUNCTIONS_KEY], FUNCTIONS_KEY)
        problems += found
    if PARALLEL_KEY in fields and not isinstance(fields[PARALLEL_KEY], bool):
        problems.append((PARALLEL_KEY, f"expected true or false, got {describe_value(fields[PARALLEL_KEY])}"))
    messages, found = check_messages(fields[key], key)
    problems += found
    if problems:
        return None, None, problems
    return messages, tools or None, []


def check_messages(value: object, field: str) -> tuple[tuple[Message, ...] | None, list[Problem]]:
    """The messages as clean :class:`Message` dicts, or None and every problem found.

    ``value`` must be a non-empty list of valid messages (see the module docstring), and at least one
    assistant message that is trained on (weight 1, the default) must have non-empty content or tool
    calls. Problems name the exact place, e.g. ``messages[2].weight``.
    """
    if not isinstance(value, list):
        return None, [(field, f"expected a list of messages, got {json_type_name(value)}")]
    if not value:
        return None, [(field, "expected a non-empty list of messages, got []")]
    problems: list[Problem] = []
    messages: list[Message] = []
    call_ids: set[str] = set()
    for position, item in enumerate(value):
        where = f"{field}[{position}]"
        message = _check_message(item, where, problems)
        if message is None:
            continue
        if message["role"] == "tool" and message["tool_call_id"] not in call_ids:
            problems.append(
                (
                    f"{where}.tool_call_id",
                    f"no earlier assistant tool call has id {describe_value(message['tool_call_id'])}",
                )
            )
        call_ids.update(call["id"] for call in message.get("tool_calls", ()))
        messages.append(message)
    if not problems and not any(_trained(m) for m in messages):
        problems.append(
            (
                field,
                "needs at least one assistant message with non-empty content or tool calls, "
                "and weight 1 if it has a weight (nothing to learn from)",
            )
        )
    if problems:
        return None, problems
    return tuple(messages), []


def _trained(message: Message) -> bool:
    if message["role"] != "assistant" or message.get("weight", 1) == 0:
        return False
    return bool((message.get("content") or "").strip() or message.get("tool_calls"))


def _check_message(item: object, where: str, problems: list[Problem]) -> Message | None:
    if not isinstance(item, dict):
        problems.append((where, f"expected an object with 'role' and 'content', got {json_type_name(item)}"))
        return None
    before = len(problems)
    role = item.get("role")
    if "role" not in item:
        problems.append((where, _missing(item, "role")))
    elif role in _DEPRECATED_ROLES:
        problems.append((f"{where}.role", _DEPRECATED_ROLES[str(role)]))
    elif role not in ROLES:
        problems.append((f"{where}.role", f"expected one of {', '.join(ROLES)}, got {describe_value(role)}"))
    known = isinstance(role, str) and role in _KEYS
    allowed = _KEYS[str(role)] if known else tuple(dict.fromkeys(k for keys in _KEYS.values() for k in keys))
    for key in item:
        if key in _DEPRECATED_KEYS:
            problems.append((f"{where}.{key}", _DEPRECATED_KEYS[key]))
        elif key not in allowed:
            kind = f"a {role} message" if known else "a message"
            shown = ", ".join(f"'{k}'" for k in allowed)
            problems.append((f"{where}.{key}", f"unexpected key '{key}'; {kind} has only {shown}"))
    has_calls = role == "assistant" and "tool_calls" in item
    if "content" not in item and not has_calls:
        problems.append((where, _missing(item, "content", "or 'tool_calls'" if role == "assistant" else "")))
    if role == "tool" and "tool_call_id" not in item:
        problems.append((where, _missing(item, "tool_call_id")))
    message: Message = {"role": str(role)}
    if "content" in item:
        message["content"] = _content(item["content"], f"{where}.content", has_calls, problems)
    for key in ("name", "tool_call_id"):
        if key in item and key in allowed:
            value = item[key]
            if not isinstance(value, str) or not value.strip():
                problems.append(
                    (f"{where}.{key}", f"expected a non-empty string, got {describe_value(value)}")
                )
            elif (bad := unencodable(value)) is not None:
                problems.append((f"{where}.{key}", bad))
            else:
                message[key] = value  # type: ignore[literal-required]
    if "weight" in item and role == "assistant":
        weight = item["weight"]
        if isinstance(weight, bool) or weight not in (0, 1) or not isinstance(weight, int):
            problems.append((f"{where}.weight", f"expected 0 or 1, got {describe_value(weight)}"))
        else:
            message["weight"] = weight
    if has_calls:
        calls = check_tool_calls(item["tool_calls"], f"{where}.tool_calls", problems)
        if calls is not None:
            message["tool_calls"] = calls
    if len(problems) > before:
        return None
    return message


def _content(value: object, where: str, nullable: bool, problems: list[Problem]) -> str | None:
    """The text of ``content``: a string, or its text parts joined with no separator."""
    if value is None and nullable:
        return None
    if isinstance(value, str):
        bad = unencodable(value)
        if bad is not None:
            problems.append((where, bad))
        return value
    if not isinstance(value, list) or not value:
        got = (
            "[]"
            if isinstance(value, list)
            else "null"
            if value is None
            else f"{json_type_name(value)} {describe_value(value)}"
        )
        null = " (or null, as the message has tool calls)" if nullable else ""
        problems.append((where, f"expected a string or a non-empty list of text parts{null}, got {got}"))
        return None
    texts: list[str] = []
    for position, part in enumerate(value):
        at = f"{where}[{position}]"
        if not isinstance(part, dict):
            problems.append(
                (at, f'expected a text part {{"type": "text", "text": ...}}, got {json_type_name(part)}')
            )
            continue
        kind = part.get("type")
        if kind != "text":
            shown = "no type" if "type" not in part else f"type {describe_value(kind)}"
            problems.append((f"{at}.type", f'only text parts (type "text") are supported, got {shown}'))
            continue
        for key in part:
            if key not in ("type", "text"):
                problems.append(
                    (f"{at}.{key}", f"unexpected key '{key}'; a text part has only 'type' and 'text'")
                )
        text = part.get("text")
        if not isinstance(text, str):
            problems.append((f"{at}.text", f"expected a string, got {describe_value(text)}"))
        elif (bad := unencodable(text)) is not None:
            problems.append((f"{at}.text", bad))
        else:
            texts.append(text)
    return "".join(texts)


def _missing(item: dict[object, object], key: str, alternative: str = "") -> str:
    found = ", ".join(repr(str(k)) for k in item) or "none"
    extra = f" {alternative}" if alternative else ""
    return f"missing key '{key}'{extra} (found keys: {found})"
