"""Malformed files (encodings, size limits, CSV/TSV structure, formats) are reported by line and field."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from sparsegrad_data import (
    ColumnMapping,
    DatasetError,
    DatasetIssue,
    TaskType,
    glue_mapping,
    parse_dataset_bytes,
)
from sparsegrad_data.decoding import MAX_LINE_BYTES

COLA = glue_mapping("cola")[1]
SST2 = glue_mapping("sst2")[1]
LM = {"task": TaskType.CAUSAL_LM}
GOOD = {"text": "fine", "label": 0}
OTHER = {"text": "also fine", "label": 1}


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


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
    # encodings and bytes
    Case("utf16-le-bom", "text,label\na,0\n".encode("utf-16"), None, None, "file is UTF-16", "train.csv"),
    Case(
        "utf16-be-bom",
        b"\xfe\xff" + "text,label\n".encode("utf-16-be"),
        None,
        None,
        "re-save it as UTF-8",
        "train.csv",
    ),
    Case(
        "utf16-no-bom", "text,label\na,0\n".encode("utf-16-le"), None, None, "looks like UTF-16", "train.csv"
    ),
    Case("utf32-bom", "text,label\n".encode("utf-32"), None, None, "file is UTF-32", "train.csv"),
    Case("double-utf8-bom", b"\xef\xbb\xbf\xef\xbb\xbf" + jsonl(GOOD, OTHER), 1, None, "byte order mark"),
    Case(
        "bom-mid-file",
        jsonl(GOOD, OTHER) + b"\xef\xbb\xbf" + jsonl(GOOD),
        3,
        None,
        "several files were joined",
    ),
    Case(
        "invalid-utf8",
        jsonl(GOOD, OTHER) + b'{"text": "caf\xe9", "label": 0}\n',
        3,
        None,
        "invalid UTF-8: byte 0xe9 at byte offset 76 of the file (byte 14 of the line)",
    ),
    Case(
        "nul-byte", jsonl(GOOD) + b'{"text": "a\x00", "label": 1}\n' + jsonl(OTHER) * 10, 2, None, "NUL byte"
    ),
    Case("empty-file", b"", None, None, "file is empty"),
    Case("blank-file", b"\n  \n\r\n", None, None, "file is empty"),
    Case("bom-only", b"\xef\xbb\xbf", None, None, "file is empty", "train.tsv"),
    Case(
        "header-only",
        b"sentence\tlabel\n",
        None,
        None,
        "no data rows after the header",
        "train.tsv",
        {"mapping": SST2},
    ),
    Case("only-bad-records", b"nope\n", 1, None, "invalid JSON"),
    Case(
        "huge-line",
        jsonl(GOOD) + b'{"text": "' + b"a" * MAX_LINE_BYTES + b'", "label": 1}\n',
        2,
        None,
        "over the limit of 1,048,576 bytes per line",
    ),
    Case(
        "over-size-cap",
        jsonl(GOOD, OTHER) * 10,
        None,
        None,
        "over the limit of 100 bytes",
        kwargs={"max_bytes": 100},
    ),
    Case(
        "over-example-cap",
        jsonl(GOOD, OTHER, GOOD),
        None,
        None,
        "more than 2 examples",
        kwargs={"max_examples": 2},
    ),
    # CSV / TSV structure
    Case(
        "missing-column",
        b"sentence\tlbl\na\t0\n",
        1,
        "label",
        "column 'label' not found in the header; header found: 'sentence', 'lbl'",
        "train.tsv",
        {"mapping": SST2},
    ),
    Case(
        "column-case",
        b"Sentence\tlabel\na\t0\n",
        1,
        "sentence",
        "did you mean 'Sentence'?",
        "train.tsv",
        {"mapping": SST2},
    ),
    Case("duplicate-column", b"text,label,label\na,0,1\n", 1, "label", "appears 2 times", "train.csv"),
    Case(
        "too-few-columns",
        b"sentence\tlabel\na\t0\nb\t1\nc\n",
        4,
        None,
        "expected 2 columns (as in the header), got 1",
        "train.tsv",
        {"mapping": SST2},
    ),
    Case(
        "tab-in-text",
        b"sentence\tlabel\na\t0\nb\tb\t1\n",
        3,
        None,
        "got 3; text must not contain tab characters",
        "train.tsv",
        {"mapping": SST2},
    ),
    Case(
        "unquoted-comma", b"text,label\na,0\nb,c,1\n", 3, None, "quote text that contains commas", "train.csv"
    ),
    Case("unclosed-quote", b'text,label\na,0\nb,1\n"c,0\nd,1\n', 4, None, "never closed", "train.csv"),
    Case("stray-quote", b'text,label\n"a"b,0\nc,1\n', 2, None, "malformed quoting", "train.csv"),
    Case(
        "headerless-index-out-of-range",
        b"a\t1\nb\t0\n",
        1,
        "column 3",
        "column 3 does not exist: rows have 2 columns",
        "cola.tsv",
        {"mapping": COLA},
    ),
    Case(
        "headerless-short-row",
        b"src\t1\t\tgood\nsrc\t0\n",
        2,
        None,
        "expected 4 columns (as in the first row), got 2",
        "cola.tsv",
        {"mapping": COLA},
    ),
    Case(
        "header-expected-but-none",
        b"gj04\t1\t\tA sentence.\n",
        1,
        None,
        "has_header=False",
        "cola.tsv",
        {"mapping": SST2},
    ),
    Case("lone-carriage-return", b"text,label\na\rb,0\nc,1\n", 2, None, "carriage return", "train.csv"),
    Case("unsupported-extension", b"PK\x03\x04", None, None, "unsupported file type '.zip'", "train.zip"),
    Case("unknown-format", b"just words\n", None, None, "cannot tell the file format", "train.dat"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_file_is_reported(case: Case, assert_rejected: Callable[..., DatasetIssue]) -> None:
    assert_rejected(case.data, case.filename, case.kwargs, case.line, case.field, case.fragment)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_invalid_utf8_reports_every_bad_line_with_its_offset() -> None:
    data = b"\xef\xbb\xbftext,label\n\xffa,0\nb,1\nc\xc3,0\n"
    with pytest.raises(DatasetError) as caught:
        parse_dataset_bytes(data, "train.csv")
    messages = {i.line: i.message for i in caught.value.issues}
    assert set(messages) == {2, 4}
    assert "byte 0xff at byte offset 14 of the file (byte 1 of the line)" in messages[2]
    assert "byte 0xc3 at byte offset 24" in messages[4]


def test_label_check_respects_header_mapping_with_indices() -> None:
    mapping = ColumnMapping(text=0, label=5)
    with pytest.raises(DatasetError) as caught:
        parse_dataset_bytes(b"a,b\nx,1\n", "t.csv", mapping=mapping)
    assert caught.value.issues[0].field == "column 5"
