"""Malformed records (JSON structure, text fields, labels, chat messages) are reported by line and field."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from sparsegrad_data import DatasetError, DatasetIssue, TaskType, glue_mapping, parse_dataset_bytes

COLA = glue_mapping("cola")[1]
MRPC = glue_mapping("mrpc")[1]
SST2 = glue_mapping("sst2")[1]
CLS = {"task": TaskType.CLASSIFICATION}
REG = {"task": TaskType.REGRESSION}
LM = {"task": TaskType.CAUSAL_LM}
USER = {"role": "user", "content": "hi"}
BOT = {"role": "assistant", "content": "hello"}
GOOD = {"text": "fine", "label": 0}
OTHER = {"text": "also fine", "label": 1}


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def chat(*messages: object) -> dict[str, object]:
    return {"messages": list(messages)}


@dataclasses.dataclass
class Case:
    id: str
    data: bytes
    line: int | None
    field: str | None
    fragment: str
    filename: str = "train.jsonl"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


CASES = [
    # JSON structure
    Case("broken-json", jsonl(GOOD) + b'{"text": "b", "label": 1\n', 2, None, "invalid JSON"),
    Case("json-list-record", jsonl(GOOD, OTHER) + b"[1, 2]\n", 3, None, "expected a JSON object, got list"),
    Case("json-string-record", jsonl(GOOD, OTHER) + b'"just text"\n', 3, None, "got string"),
    Case("json-array-file", b'[\n{"text": "a", "label": 0}\n]\n', 1, None, "JSON array"),
    Case("json-too-deep", jsonl(GOOD, OTHER) + b"[" * 100_000 + b"\n", 3, None, "nested too deeply"),
    # text fields
    Case(
        "missing-label",
        jsonl(GOOD, OTHER, {"text": "x", "lbl": 1}),
        3,
        "label",
        "missing field 'label' (found keys: 'text', 'lbl')",
    ),
    Case("missing-text", jsonl(GOOD, {"sentence": "x", "label": 1}), 2, "text", "missing field 'text'"),
    Case(
        "text-not-string",
        jsonl(GOOD, OTHER, {"text": 5, "label": 1}),
        3,
        "text",
        "expected a non-empty string, got integer 5",
    ),
    Case("text-blank", jsonl(GOOD, {"text": "   ", "label": 1}), 2, "text", "expected a non-empty string"),
    Case("text-null", jsonl(GOOD, OTHER, {"text": None, "label": 1}), 3, "text", "got null"),
    Case(
        "lone-surrogate",
        jsonl(GOOD, OTHER) + b'{"text": "a\\ud800b", "label": 0}\n',
        3,
        "text",
        "unpaired surrogate",
    ),
    Case(
        "text-pair-empty-cell",
        b"\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\tb\n0\t3\t4\tc\t\n",
        3,
        "#2 String",
        "non-empty string",
        "dev.tsv",
        {"mapping": MRPC},
    ),
    Case(
        "index-mapping-on-jsonl",
        jsonl(GOOD, OTHER),
        None,
        "text",
        "only works for CSV/TSV",
        kwargs={"mapping": COLA},
    ),
    # classification labels
    Case(
        "float-label",
        jsonl(GOOD, OTHER, {"text": "x", "label": 1.5}),
        3,
        "label",
        "expected an integer class or a string label, got 1.5",
        kwargs=CLS,
    ),
    Case("bool-label", jsonl(GOOD, OTHER, {"text": "x", "label": True}), 3, "label", "got true"),
    Case("null-label", jsonl(GOOD, OTHER, {"text": "x", "label": None}), 3, "label", "got null"),
    Case("list-label", jsonl(GOOD, OTHER, {"text": "x", "label": [1]}), 3, "label", "got [1]"),
    Case(
        "negative-label", jsonl(GOOD, OTHER, {"text": "x", "label": -1}), 3, "label", "must be >= 0, got -1"
    ),
    Case(
        "label-out-of-range",
        jsonl(GOOD, OTHER, {"text": "x", "label": 2}),
        3,
        "label",
        "out of range for num_labels=2",
        kwargs={"num_labels": 2},
    ),
    Case(
        "unknown-label-name",
        jsonl({"text": "a", "label": "neg"}, {"text": "b", "label": "neutral"}),
        2,
        "label",
        'unknown label "neutral"',
        kwargs={"label_names": ["neg", "pos"]},
    ),
    Case(
        "mixed-ids-and-names",
        jsonl({"text": "a", "label": "neg"}, {"text": "b", "label": "pos"}, {"text": "c", "label": 1}),
        3,
        "label",
        "mostly uses string labels",
    ),
    Case(
        "names-vs-num-labels",
        jsonl({"text": "a", "label": "neg"}, {"text": "b", "label": "pos"}),
        None,
        "label",
        "found 2 distinct string labels but num_labels is 3",
        kwargs={"num_labels": 3},
    ),
    Case("single-class", jsonl(GOOD, {"text": "b", "label": 0}), None, "label", "min_classes=1"),
    Case(
        "tsv-float-label",
        b"sentence\tlabel\na\t0\nb\t1\nc\t0.5\n",
        4,
        "label",
        "got 0.5",
        "train.tsv",
        {"mapping": SST2, **CLS},
    ),
    Case(
        "tsv-empty-label",
        b"sentence\tlabel\na\t0\nb\t1\nc\t\n",
        4,
        "label",
        "empty string",
        "train.tsv",
        {"mapping": SST2},
    ),
    # regression labels
    Case(
        "regression-nan",
        jsonl({"text": "a", "label": 0.5}) + b'{"text": "b", "label": NaN}\n',
        2,
        "label",
        "expected a finite number, got NaN",
        kwargs=REG,
    ),
    Case(
        "regression-string",
        jsonl({"text": "a", "label": 0.5}, {"text": "b", "label": "high"}),
        2,
        "label",
        'expected a number, got "high"',
        kwargs=REG,
    ),
    Case(
        "regression-bool",
        jsonl({"text": "a", "label": 0.5}, {"text": "b", "label": False}),
        2,
        "label",
        "expected a number, got false",
        kwargs=REG,
    ),
    Case(
        "regression-csv-inf",
        b"text,label\na,0.5\nb,inf\n",
        3,
        "label",
        "expected a finite number, got Infinity",
        "scores.csv",
        REG,
    ),
    # causal_lm messages
    Case(
        "bad-role",
        jsonl(chat(USER, BOT), chat(USER, {"role": "bot", "content": "x"})),
        2,
        "messages[1].role",
        'expected one of system, developer, user, assistant, tool, got "bot"',
    ),
    Case(
        "no-assistant",
        jsonl(chat(USER, BOT), chat(USER)),
        2,
        "messages",
        "at least one assistant message",
        kwargs=LM,
    ),
    Case(
        "empty-assistant",
        jsonl(chat(USER, BOT), chat(USER, {"role": "assistant", "content": " "})),
        2,
        "messages",
        "non-empty content",
    ),
    Case(
        "extra-message-key",
        jsonl(chat({"role": "user", "content": "a", "author": "bob"}, BOT)),
        1,
        "messages[0].author",
        "unexpected key 'author'; a user message has only 'role', 'content', 'name'",
    ),
    Case(
        "missing-content",
        jsonl(chat(USER, BOT), chat(USER, {"role": "assistant"})),
        2,
        "messages[1]",
        "missing key 'content'",
    ),
    Case(
        "content-not-string",
        jsonl(chat(USER, BOT), chat(USER, {"role": "assistant", "content": 3})),
        2,
        "messages[1].content",
        "expected a string or a non-empty list of text parts, got integer 3",
    ),
    Case(
        "messages-not-list",
        jsonl(chat(USER, BOT), {"messages": "hello"}),
        2,
        "messages",
        "expected a list of messages, got string",
    ),
    Case("messages-empty", jsonl(chat(USER, BOT), {"messages": []}), 2, "messages", "non-empty list"),
    Case(
        "message-not-object",
        jsonl(chat(USER, BOT), {"messages": ["hi", BOT]}),
        2,
        "messages[0]",
        "expected an object",
    ),
    Case(
        "missing-messages",
        jsonl(chat(USER, BOT), {"input": "x"}),
        2,
        "messages",
        "missing field 'messages' (or 'prompt' and 'completion') (found keys: 'input')",
        kwargs=LM,
    ),
    Case(
        "causal-lm-from-tsv", b"sentence\tlabel\na\t0\n", None, None, "must be a JSONL file", "train.tsv", LM
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_record_is_reported(case: Case, assert_rejected: Callable[..., DatasetIssue]) -> None:
    assert_rejected(case.data, case.filename, case.kwargs, case.line, case.field, case.fragment)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_all_bad_records_are_reported_together() -> None:
    data = jsonl(GOOD, {"text": "", "label": 0}, OTHER, {"text": "x", "label": 0.5}) + b"oops\n"
    with pytest.raises(DatasetError) as caught:
        parse_dataset_bytes(data, "train.jsonl", task="classification")
    assert [(i.line, i.field) for i in caught.value.issues] == [(2, "text"), (4, "label"), (5, None)]
    assert str(caught.value).splitlines()[0] == "train.jsonl: 3 problems found"


def test_issues_are_capped_at_100_with_a_count_of_the_rest() -> None:
    data = jsonl(GOOD, OTHER) + b"{bad\n" * 250
    with pytest.raises(DatasetError) as caught:
        parse_dataset_bytes(data, "train.jsonl")
    issues = caught.value.issues
    assert len(issues) == 101
    assert caught.value.total == 250
    assert [i.line for i in issues[:100]] == list(range(3, 103))
    assert issues[100].line is None and "150 more problems were not listed" in issues[100].message
    lines = str(caught.value).splitlines()
    assert lines[0] == "train.jsonl: 250 problems found" and len(lines) == 102
