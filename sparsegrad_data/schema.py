"""The value types that describe a fine-tuning dataset: task, file format, column mapping and one example."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Required, TypedDict


class TaskType(StrEnum):
    """What the model learns from the labels."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    CAUSAL_LM = "causal_lm"


class DatasetFormat(StrEnum):
    """How the records are written in the file."""

    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"


Column = str | int
"""A column name (JSONL key or CSV/TSV header name) or a 0-based column index (CSV/TSV only)."""


def _check_column(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"ColumnMapping.{name} must be a column name or a 0-based index, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"ColumnMapping.{name} must be a 0-based column index (>= 0), got {value}")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"ColumnMapping.{name} must be a non-empty column name")


@dataclass(frozen=True)
class ColumnMapping:
    """Where each part of an example is found in a record.

    For JSONL, ``text``, ``text_pair``, ``label``, ``messages``, ``prompt`` and ``completion`` are keys of
    each JSON object.
    For CSV/TSV with a header row, they are header names (or 0-based column indices).
    For headerless CSV/TSV (``has_header=False``), ``text``, ``text_pair`` and ``label`` must be
    0-based column indices; GLUE CoLA, for example, is ``ColumnMapping(text=3, label=1, has_header=False)``.
    ``messages`` (OpenAI's chat format) and ``prompt``/``completion`` (OpenAI's completion format) are
    only read for the causal_lm task, and only from JSONL; a file may use either, record by record (a
    record with the ``messages`` key is a chat record, even if ``prompt`` names the same key).
    """

    text: Column = "text"
    text_pair: Column | None = None
    label: Column = "label"
    messages: str = "messages"
    prompt: str = "prompt"
    completion: str = "completion"
    has_header: bool = True

    def __post_init__(self) -> None:
        _check_column("text", self.text)
        if self.text_pair is not None:
            _check_column("text_pair", self.text_pair)
        _check_column("label", self.label)
        keys = {"messages": self.messages, "prompt": self.prompt, "completion": self.completion}
        for name, key in keys.items():
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"ColumnMapping.{name} must be a non-empty key name, got {key!r}")
        if self.prompt == self.completion:
            raise ValueError(
                f"ColumnMapping.completion must differ from ColumnMapping.prompt, got {self.prompt!r}"
            )
        if not isinstance(self.has_header, bool):
            raise TypeError(f"ColumnMapping.has_header must be a bool, got {self.has_header!r}")
        used = [self.text, self.label] + ([self.text_pair] if self.text_pair is not None else [])
        if len(set(used)) != len(used):
            raise ValueError(f"ColumnMapping uses the same column twice: {used}")
        if not self.has_header:
            named = {k: v for k, v in self.columns().items() if isinstance(v, str)}
            if named:
                raise ValueError(
                    "ColumnMapping(has_header=False) needs 0-based column indices, got names: "
                    + ", ".join(f"{k}={v!r}" for k, v in named.items())
                )

    def columns(self) -> dict[str, Column]:
        """The mapped text and label columns, keyed by role (``text``, ``text_pair``, ``label``)."""
        found: dict[str, Column] = {"text": self.text}
        if self.text_pair is not None:
            found["text_pair"] = self.text_pair
        found["label"] = self.label
        return found


class ToolCallFunction(TypedDict):
    """The function an assistant calls: its name and its arguments as a JSON-encoded object (a string)."""

    name: str
    arguments: str


class ToolCall(TypedDict):
    """One entry of an assistant message's ``tool_calls``, as OpenAI writes it (``type`` is ``"function"``)."""

    id: str
    type: str
    function: ToolCallFunction


class Message(TypedDict, total=False):
    """One validated chat turn in OpenAI's format.

    ``role`` is system, developer, user, assistant or tool. ``content`` is the text (a list of text parts
    in the file is joined with no separator); it is None only for an assistant message that has
    ``tool_calls`` instead. ``name`` (not on tool messages) names the participant. ``weight`` (assistant
    only, 0 or 1, default 1) says whether the message is trained on. ``tool_call_id`` (tool only) names
    the call this message answers. Keys absent from the file are absent here.
    """

    role: Required[str]
    content: str | None
    name: str
    weight: int
    tool_calls: list[ToolCall]
    tool_call_id: str


Tool = dict[str, Any]
"""One tool definition as written in the file: ``{"type": "function", "function": {"name": ..., ...}}``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Example:
    """One validated record.

    Classification and regression examples have ``text`` (and ``text_pair`` for sentence pairs) and a
    ``label``: an ``int`` class id for classification, a ``float`` for regression. Causal-LM examples
    have either ``messages`` (and ``tools`` when the record defines any, legacy ``functions`` included)
    or a ``prompt`` and a ``completion``, and no text or label. ``line`` is the 1-based line where the
    record starts.
    """

    text: str | None = None
    text_pair: str | None = None
    label: int | float | None = None
    messages: tuple[Message, ...] | None = None
    tools: tuple[Tool, ...] | None = None
    prompt: str | None = None
    completion: str | None = None
    line: int
