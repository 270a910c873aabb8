"""Fixtures for the sparsegrad_data tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sparsegrad_data import DatasetError, DatasetIssue, parse_dataset_bytes


def _assert_rejected(
    data: bytes, filename: str, kwargs: dict, line: int | None, field: str | None, fragment: str
) -> DatasetIssue:
    """Parse ``data`` expecting a DatasetError with an issue at ``line``/``field`` whose message has ``fragment``."""
    with pytest.raises(DatasetError) as caught:
        parse_dataset_bytes(data, filename, **kwargs)
    error = caught.value
    matches = [i for i in error.issues if i.line == line and i.field == field and fragment in i.message]
    assert matches, f"no issue at line {line}, field {field!r} containing {fragment!r}:\n{error}"
    issue = matches[0]
    assert issue.file == filename
    assert str(issue) in str(error)
    if field is not None:
        assert f"field '{field}'" in str(issue)
    if line is not None:
        assert str(issue).startswith(f"{filename}:{line}: ")
    return issue


@pytest.fixture
def assert_rejected() -> Callable[..., DatasetIssue]:
    """A checker: ``assert_rejected(data, filename, kwargs, line, field, fragment)``."""
    return _assert_rejected
