"""Validate the ``messages`` list of a causal-LM (chat SFT) record."""

from __future__ import annotations

from .fields import unencodable
from .issues import describe_value, json_type_name
from .schema import Message

ROLES = ("system", "user", "assistant")
_KEYS = ("role", "content")

Problem = tuple[str, str]
"""``(field, message)``: where in the record something is wrong, and what."""


def check_messages(value: object, field: str) -> tuple[tuple[Message, ...] | None, list[Problem]]:
    """The messages as clean ``{"role", "content"}`` dicts, or None and every problem found.

    ``value`` must be a non-empty list of objects with exactly the keys ``role`` (one of ``ROLES``)
    and ``content`` (a string), and at least one assistant message must have non-empty content.
    Problems name the exact place, e.g. ``messages[2].role``.
    """
    if not isinstance(value, list):
        return None, [(field, f"expected a list of messages, got {json_type_name(value)}")]
    if not value:
        return None, [(field, "expected a non-empty list of messages, got []")]
    problems: list[Problem] = []
    messages: list[Message] = []
    for position, item in enumerate(value):
        where = f"{field}[{position}]"
        message = _check_message(item, where, problems)
        if message is not None:
            messages.append(message)
    if not problems and not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        problems.append(
            (field, "needs at least one assistant message with non-empty content (nothing to learn from)")
        )
    if problems:
        return None, problems
    return tuple(messages), []


def _check_message(item: object, where: str, problems: list[Problem]) -> Message | None:
    if not isinstance(item, dict):
        problems.append((where, f"expected an object with 'role' and 'content', got {json_type_name(item)}"))
        return None
    before = len(problems)
    for key in _KEYS:
        if key not in item:
            problems.append(
                (
                    where,
                    f"missing key '{key}' (found keys: {', '.join(repr(str(k)) for k in item) or 'none'})",
                )
            )
    for key in item:
        if key not in _KEYS:
            problems.append(
                (f"{where}.{key}", f"unexpected key '{key}'; a message has only 'role' and 'content'")
            )
    role, content = item.get("role"), item.get("content")
    if "role" in item and role not in ROLES:
        problems.append((f"{where}.role", f"expected one of {', '.join(ROLES)}, got {describe_value(role)}"))
    if "content" in item:
        if not isinstance(content, str):
            problems.append(
                (
                    f"{where}.content",
                    f"expected a string, got {json_type_name(content)} {describe_value(content)}",
                )
            )
        elif (bad := unencodable(content)) is not None:
            problems.append((f"{where}.content", bad))
    if len(problems) > before or not isinstance(role, str) or not isinstance(content, str):
        return None
    return {"role": role, "content": content}
