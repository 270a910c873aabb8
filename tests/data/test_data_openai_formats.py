"""OpenAI's supervised chat format (weight, name, text parts, tools, tool calls) and prompt/completion JSONL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from sparsegrad_data import ColumnMapping, DatasetIssue, TaskType, parse_dataset_bytes

LM = {"task": TaskType.CAUSAL_LM}
USER = {"role": "user", "content": "hi"}
BOT = {"role": "assistant", "content": "hello"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def chat(*messages: object, **extra: Any) -> dict[str, object]:
    return {"messages": list(messages), **extra}


def tool_chat(**extra: Any) -> dict[str, object]:
    return chat(
        {"role": "developer", "content": "use tools"},
        {"role": "user", "content": "weather in Oslo?", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees"},
        {"role": "assistant", "content": "It is 4 degrees."},
        **extra,
    )


def test_full_openai_chat_record_is_accepted() -> None:
    record = chat(
        {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": "hi", "name": "bob"},
        {"role": "assistant", "content": "draft", "weight": 0, "name": "helper"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "final", "weight": 1},
    )
    ds = parse_dataset_bytes(jsonl(record, record), "chat.jsonl")
    assert ds.task is TaskType.CAUSAL_LM
    messages = ds.examples[0].messages
    assert messages is not None and ds.examples[0].tools is None
    assert messages[0] == {"role": "system", "content": "Be brief."}  # text parts joined with no separator
    assert messages[1] == {"role": "user", "content": "hi", "name": "bob"}
    assert messages[2] == {"role": "assistant", "content": "draft", "weight": 0, "name": "helper"}
    assert messages[4]["weight"] == 1


def test_tools_and_tool_calls_are_accepted() -> None:
    ds = parse_dataset_bytes(jsonl(tool_chat(tools=[TOOL], parallel_tool_calls=False)), "t.jsonl", **LM)
    example = ds.examples[0]
    assert example.tools == (TOOL,)
    assert example.messages is not None
    assert example.messages[2] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert example.messages[3] == {"role": "tool", "content": "4 degrees", "tool_call_id": "call_1"}


def test_deprecated_functions_become_tools() -> None:
    ds = parse_dataset_bytes(jsonl(tool_chat(functions=[TOOL["function"]])), "t.jsonl", **LM)
    assert ds.examples[0].tools == (TOOL,)


def test_a_tool_call_alone_is_something_to_learn() -> None:
    record = chat(USER, {"role": "assistant", "tool_calls": [CALL]}, tools=[TOOL])
    ds = parse_dataset_bytes(jsonl(record), "t.jsonl", **LM)
    assert ds.examples[0].messages == (
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [CALL]},
    )


def test_prompt_completion_records_are_inferred_as_causal_lm() -> None:
    data = jsonl(
        {"prompt": "2+2=", "completion": " 4"}, {"prompt": "", "completion": "hello"}, chat(USER, BOT)
    )
    ds = parse_dataset_bytes(data, "pc.jsonl")
    assert ds.task is TaskType.CAUSAL_LM
    assert (ds.examples[0].prompt, ds.examples[0].completion, ds.examples[0].messages) == ("2+2=", " 4", None)
    assert ds.examples[1].prompt == "" and ds.examples[2].messages is not None


def test_prompt_completion_keys_follow_the_mapping() -> None:
    mapping = ColumnMapping(prompt="question", completion="answer")
    ds = parse_dataset_bytes(jsonl({"question": "q", "answer": "a"}), "pc.jsonl", "causal_lm", mapping)
    assert (ds.examples[0].prompt, ds.examples[0].completion) == ("q", "a")
    with pytest.raises(ValueError, match="completion must differ from"):
        ColumnMapping(prompt="text", completion="text")
    chat_named_prompt = ColumnMapping(messages="prompt")  # the messages key wins
    ds = parse_dataset_bytes(jsonl({"prompt": [USER, BOT]}), "c.jsonl", "causal_lm", chat_named_prompt)
    assert ds.examples[0].messages == (USER, BOT)


def assistant(**keys: Any) -> dict[str, Any]:
    return {"role": "assistant", **keys}


REFUSALS: list[tuple[str, dict[str, object], str, str]] = [
    (
        "weight-2",
        chat(USER, assistant(content="x", weight=2)),
        "messages[1].weight",
        "expected 0 or 1, got 2",
    ),
    (
        "weight-bool",
        chat(USER, assistant(content="x", weight=True)),
        "messages[1].weight",
        "expected 0 or 1, got true",
    ),
    (
        "weight-float",
        chat(USER, assistant(content="x", weight=1.0)),
        "messages[1].weight",
        "expected 0 or 1, got 1.0",
    ),
    (
        "weight-on-user",
        chat({"role": "user", "content": "hi", "weight": 1}, BOT),
        "messages[0].weight",
        "unexpected key 'weight'; a user message has only 'role', 'content', 'name'",
    ),
    (
        "all-weight-0",
        chat(USER, assistant(content="x", weight=0)),
        "messages",
        "needs at least one assistant message with non-empty content or tool calls, and weight 1",
    ),
    (
        "name-empty",
        chat({"role": "user", "content": "hi", "name": ""}, BOT),
        "messages[0].name",
        "non-empty string",
    ),
    ("name-number", chat({"role": "user", "content": "hi", "name": 3}, BOT), "messages[0].name", "got 3"),
    (
        "image-part",
        chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, BOT),
        "messages[0].content[0].type",
        'only text parts (type "text") are supported, got type "image_url"',
    ),
    (
        "part-extra-key",
        chat({"role": "user", "content": [{"type": "text", "text": "a", "lang": "en"}]}, BOT),
        "messages[0].content[0].lang",
        "unexpected key 'lang'",
    ),
    (
        "part-text-not-string",
        chat({"role": "user", "content": [{"type": "text", "text": 5}]}, BOT),
        "messages[0].content[0].text",
        "expected a string, got 5",
    ),
    (
        "parts-empty",
        chat({"role": "user", "content": []}, BOT),
        "messages[0].content",
        "non-empty list of text parts",
    ),
    ("null-user-content", chat({"role": "user", "content": None}, BOT), "messages[0].content", "got null"),
    (
        "tool-without-id",
        chat(USER, assistant(tool_calls=[CALL]), {"role": "tool", "content": "4"}, BOT),
        "messages[2]",
        "missing key 'tool_call_id'",
    ),
    (
        "tool-unknown-id",
        chat(
            USER,
            assistant(tool_calls=[CALL]),
            {"role": "tool", "content": "4", "tool_call_id": "call_9"},
            BOT,
        ),
        "messages[2].tool_call_id",
        'no earlier assistant tool call has id "call_9"',
    ),
    (
        "tool-with-name",
        chat(
            USER,
            assistant(tool_calls=[CALL]),
            {"role": "tool", "content": "4", "tool_call_id": "call_1", "name": "f"},
        ),
        "messages[2].name",
        "unexpected key 'name'; a tool message has only 'role', 'content', 'tool_call_id'",
    ),
    (
        "tool-calls-on-user",
        chat({"role": "user", "content": "hi", "tool_calls": [CALL]}, BOT),
        "messages[0].tool_calls",
        "unexpected key 'tool_calls'",
    ),
    (
        "tool-calls-empty",
        chat(USER, assistant(tool_calls=[])),
        "messages[1].tool_calls",
        "non-empty list of tool calls",
    ),
    (
        "tool-call-arguments-object",
        chat(USER, assistant(tool_calls=[{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}])),
        "messages[1].tool_calls[0].function.arguments",
        "expected the arguments as a JSON object encoded in a string, got object",
    ),
    (
        "tool-call-arguments-bad-json",
        chat(USER, assistant(tool_calls=[{**CALL, "function": {"name": "f", "arguments": "{oops"}}])),
        "messages[1].tool_calls[0].function.arguments",
        "is not valid JSON",
    ),
    (
        "tool-call-missing-id",
        chat(USER, assistant(tool_calls=[{"type": "function", "function": CALL["function"]}])),
        "messages[1].tool_calls[0]",
        "missing key 'id'",
    ),
    (
        "tool-call-wrong-type",
        chat(USER, assistant(tool_calls=[{**CALL, "type": "code"}])),
        "messages[1].tool_calls[0].type",
        'expected "function", got "code"',
    ),
    (
        "assistant-nothing",
        chat(USER, assistant(name="x")),
        "messages[1]",
        "missing key 'content' or 'tool_calls'",
    ),
    (
        "assistant-null-no-calls",
        chat(USER, assistant(content=None)),
        "messages[1].content",
        "expected a string or a non-empty list of text parts, got null",
    ),
    (
        "function-call",
        chat(USER, assistant(content="x", function_call={"name": "f", "arguments": "{}"})),
        "messages[1].function_call",
        "write it as 'tool_calls'",
    ),
    (
        "function-role",
        chat(USER, BOT, {"role": "function", "content": "x"}),
        "messages[2].role",
        "use role 'tool'",
    ),
    ("tools-not-list", chat(USER, BOT, tools={"a": 1}), "tools", "expected a list of tools, got object"),
    (
        "tool-wrong-type",
        chat(USER, BOT, tools=[{**TOOL, "type": "web"}]),
        "tools[0].type",
        'expected "function"',
    ),
    (
        "tool-unknown-key",
        chat(USER, BOT, tools=[{"type": "function", "function": {"name": "f", "params": {}}}]),
        "tools[0].function.params",
        "unexpected key 'params'; a function has only 'name', 'description', 'parameters', 'strict'",
    ),
    (
        "tool-missing-name",
        chat(USER, BOT, tools=[{"type": "function", "function": {"description": "d"}}]),
        "tools[0].function",
        "missing key 'name'",
    ),
    (
        "tool-parameters-not-object",
        chat(USER, BOT, tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
        "tools[0].function.parameters",
        "expected a JSON Schema object, got string",
    ),
    (
        "functions-and-tools",
        chat(USER, BOT, tools=[TOOL], functions=[TOOL["function"]]),
        "functions",
        "not both",
    ),
    (
        "parallel-not-bool",
        chat(USER, BOT, parallel_tool_calls="yes"),
        "parallel_tool_calls",
        "expected true or false",
    ),
    (
        "messages-and-prompt",
        {**chat(USER, BOT), "prompt": "x", "completion": "y"},
        "messages",
        "either 'messages' or 'prompt' and 'completion', not both",
    ),
    ("prompt-missing", {"completion": "y"}, "prompt", "missing field 'prompt' (found keys: 'completion')"),
    ("prompt-not-string", {"prompt": 1, "completion": "y"}, "prompt", "expected a string, got integer 1"),
    ("completion-missing", {"prompt": "x"}, "completion", "missing field 'completion'"),
    ("completion-blank", {"prompt": "x", "completion": "  "}, "completion", "expected a non-empty string"),
]


@pytest.mark.parametrize(
    ("record", "field", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_exact_place(
    record: dict[str, object], field: str, fragment: str, assert_rejected: Callable[..., DatasetIssue]
) -> None:
    assert_rejected(jsonl(chat(USER, BOT), record), "train.jsonl", LM, 2, field, fragment)


def test_prompt_completion_from_csv_is_refused(assert_rejected: Callable[..., DatasetIssue]) -> None:
    data = b"prompt,completion\na,b\n"
    assert_rejected(data, "pc.csv", LM, None, None, "(or 'prompt' and 'completion') in each record")
