"""Validate OpenAI tool definitions (a record's ``tools`` or legacy ``functions``) and assistant ``tool_calls``."""

from __future__ import annotations

import json

from .fields import unencodable
from .issues import describe_value, json_type_name
from .schema import Tool, ToolCall

Problem = tuple[str, str]
"""``(field, message)``: where in the record something is wrong, and what."""

_FUNCTION_KEYS = ("name", "description", "parameters", "strict")
_TOOL_KEYS = ("type", "function")
_CALL_KEYS = ("id", "type", "function")
_CALL_FUNCTION_KEYS = ("name", "arguments")


def check_tools(value: object, field: str) -> tuple[tuple[Tool, ...] | None, list[Problem]]:
    """A record's ``tools``: a list of ``{"type": "function", "function": {...}}``, kept as written."""
    if not isinstance(value, list):
        return None, [(field, f"expected a list of tools, got {json_type_name(value)}")]
    problems: list[Problem] = []
    for position, tool in enumerate(value):
        where = f"{field}[{position}]"
        if not _check_object(tool, where, _TOOL_KEYS, ("type", "function"), "a tool", problems):
            continue
        assert isinstance(tool, dict)
        if "type" in tool and tool["type"] != "function":
            problems.append((f"{where}.type", f'expected "function", got {describe_value(tool["type"])}'))
        if "function" in tool:
            _check_function(tool["function"], f"{where}.function", problems)
    return (None, problems) if problems else (tuple(value), [])


def check_functions(value: object, field: str) -> tuple[tuple[Tool, ...] | None, list[Problem]]:
    """OpenAI's deprecated ``functions`` list, returned as the equivalent ``tools``."""
    if not isinstance(value, list):
        return None, [(field, f"expected a list of functions, got {json_type_name(value)}")]
    problems: list[Problem] = []
    for position, function in enumerate(value):
        _check_function(function, f"{field}[{position}]", problems)
    if problems:
        return None, problems
    return tuple({"type": "function", "function": function} for function in value), []


def check_tool_calls(value: object, field: str, problems: list[Problem]) -> list[ToolCall] | None:
    """An assistant message's ``tool_calls``: a non-empty list of calls whose arguments are JSON objects."""
    if not isinstance(value, list) or not value:
        got = json_type_name(value) if not isinstance(value, list) else "[]"
        problems.append((field, f"expected a non-empty list of tool calls, got {got}"))
        return None
    before = len(problems)
    for position, call in enumerate(value):
        where = f"{field}[{position}]"
        if not _check_object(call, where, _CALL_KEYS, _CALL_KEYS, "a tool call", problems):
            continue
        assert isinstance(call, dict)
        if "id" in call:
            _check_name(call["id"], f"{where}.id", problems)
        if "type" in call and call["type"] != "function":
            problems.append((f"{where}.type", f'expected "function", got {describe_value(call["type"])}'))
        if "function" in call:
            _check_call_function(call["function"], f"{where}.function", problems)
    return None if len(problems) > before else value


def _check_function(value: object, where: str, problems: list[Problem]) -> None:
    if not _check_object(value, where, _FUNCTION_KEYS, ("name",), "a function", problems):
        return
    assert isinstance(value, dict)
    if "name" in value:
        _check_name(value["name"], f"{where}.name", problems)
    if "description" in value and not isinstance(value["description"], str):
        problems.append(
            (f"{where}.description", f"expected a string, got {json_type_name(value['description'])}")
        )
    if "parameters" in value and not isinstance(value["parameters"], dict):
        problems.append(
            (
                f"{where}.parameters",
                f"expected a JSON Schema object, got {json_type_name(value['parameters'])}",
            )
        )
    if "strict" in value and not isinstance(value["strict"], bool):
        problems.append((f"{where}.strict", f"expected true or false, got {describe_value(value['strict'])}"))


def _check_call_function(value: object, where: str, problems: list[Problem]) -> None:
    if not _check_object(value, where, _CALL_FUNCTION_KEYS, _CALL_FUNCTION_KEYS, "a function call", problems):
        return
    assert isinstance(value, dict)
    if "name" in value:
        _check_name(value["name"], f"{where}.name", problems)
    if "arguments" not in value:
        return
    arguments = value["arguments"]
    if not isinstance(arguments, str):
        problems.append(
            (
                f"{where}.arguments",
                f"expected the arguments as a JSON object encoded in a string, got {json_type_name(arguments)}",
            )
        )
        return
    try:
        parsed = json.loads(arguments)
    except (json.JSONDecodeError, RecursionError):
        problems.append((f"{where}.arguments", f"is not valid JSON: {describe_value(arguments)}"))
        return
    if not isinstance(parsed, dict):
        problems.append((f"{where}.arguments", f"expected a JSON object, got {json_type_name(parsed)}"))
    elif (bad := unencodable(arguments)) is not None:
        problems.append((f"{where}.arguments", bad))


def _check_name(value: object, where: str, problems: list[Problem]) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append((where, f"expected a non-empty string, got {describe_value(value)}"))
    elif (bad := unencodable(value)) is not None:
        problems.append((where, bad))


def _check_object(
    value: object,
    where: str,
    allowed: tuple[str, ...],
    required: tuple[str, ...],
    what: str,
    problems: list[Problem],
) -> bool:
    """Report a non-object, missing required keys and unknown keys; True when ``value`` is an object."""
    if not isinstance(value, dict):
        problems.append((where, f"expected {what} (an object), got {json_type_name(value)}"))
        return False
    for key in required:
        if key not in value:
            found = ", ".join(repr(str(k)) for k in value) or "none"
            problems.append((where, f"missing key '{key}' (found keys: {found})"))
    for key in value:
        if key not in allowed:
            known = ", ".join(f"'{k}'" for k in allowed)
            problems.append((f"{where}.{key}", f"unexpected key '{key}'; {what} has only {known}"))
    return True
