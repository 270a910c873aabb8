"""User-facing reports of what is wrong with a dataset file: one issue per problem, raised together."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_ISSUES = 100
"""At most this many issues are listed; the rest are counted in one final issue."""

_MAX_SHOWN_CHARS = 60


@dataclass(frozen=True)
class DatasetIssue:
    """One problem in a dataset file. ``line`` is 1-based; it is None for file-level problems."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field is None:
            return f"{where}: {self.message}"
        return f"{where}: field '{self.field}': {self.message}"


class DatasetError(ValueError):
    """A dataset file cannot be used. ``issues`` lists every problem found (up to ``MAX_ISSUES``)."""

    def __init__(self, issues: list[DatasetIssue], total: int | None = None) -> None:
        if not issues:
            raise ValueError("DatasetError needs at least one issue")
        self.issues = list(issues)
        self.total = len(self.issues) if total is None else total
        super().__init__(self._render())

    def _render(self) -> str:
        source = self.issues[0].file
        noun = "problem" if self.total == 1 else "problems"
        summary = f"{source}: {self.total} {noun} found"
        return "\n".join([summary, *(str(issue) for issue in self.issues)])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.issues, self.total))


def describe_value(value: object) -> str:
    """A short JSON-style rendering of a value for messages: ``1.5``, ``true``, ``"pos"``, ``NaN``."""
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    if len(shown) > _MAX_SHOWN_CHARS:
        shown = shown[: _MAX_SHOWN_CHARS - 3] + "..."
    return shown


def json_type_name(value: object) -> str:
    """The JSON-ish type name used in messages (``object``, ``list``, ``string``, ``integer`` ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class IssueLog:
    """Collects the issues of one file, keeping the first ``MAX_ISSUES`` and counting the rest."""

    def __init__(self, source: str, cap: int = MAX_ISSUES) -> None:
        self.source = source
        self.cap = cap
        self._kept: list[DatasetIssue] = []
        self.count = 0

    def add(self, line: int | None, field: str | None, message: str) -> None:
        self.count += 1
        if len(self._kept) < self.cap:
            self._kept.append(DatasetIssue(self.source, line, field, message))

    def __bool__(self) -> bool:
        return self.count > 0

    def error(self) -> DatasetError:
        """The error for everything collected so far, file-level issues first, then by line."""
        issues = sorted(self._kept, key=lambda issue: -1 if issue.line is None else issue.line)
        skipped = self.count - len(issues)
        if skipped:
            issues.append(
                DatasetIssue(
                    self.source,
                    None,
                    None,
                    f"{skipped} more problems were not listed (only the first {self.cap} are shown)",
                )
            )
        return DatasetError(issues, total=self.count)

    def raise_if_any(self) -> None:
        if self.count:
            raise self.error()


def fail(source: str, message: str, *, line: int | None = None, field: str | None = None) -> DatasetError:
    """A DatasetError with a single issue (for problems that stop parsing at once)."""
    return DatasetError([DatasetIssue(source, line, field, message)])
