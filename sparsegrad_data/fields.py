"""Read the text fields of a raw record: present, a string, not blank, and encodable as UTF-8."""

from __future__ import annotations

from .issues import describe_value, json_type_name
from .records import RawRecord
from .schema import Column

_MAX_KEYS_SHOWN = 15


def unencodable(text: str) -> str | None:
    """A message if ``text`` holds an unpaired surrogate (which JSON allows but UTF-8 cannot encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains an unpaired surrogate (\\u{ord(text[exc.start]):04x}), which is not valid text"
    return None


def missing_field(record: RawRecord, column: Column, alternative: str = "") -> str:
    """The message for a JSONL record that lacks ``column`` (``alternative``: what else would do), listing its keys."""
    keys = [str(key) for key in record.fields]
    shown = ", ".join(repr(k) for k in keys[:_MAX_KEYS_SHOWN]) or "none"
    if len(keys) > _MAX_KEYS_SHOWN:
        shown += f", ... ({len(keys)} keys)"
    instead = f" (or {alternative})" if alternative else ""
    return f"missing field '{column}'{instead} (found keys: {shown})"


def read_text(record: RawRecord, column: Column) -> tuple[str | None, str | None]:
    """``(text, None)`` for a usable text value, else ``(None, message)``. Text is returned unchanged."""
    if column not in record.fields:
        return None, missing_field(record, column)
    value = record.fields[column]
    if value is None:
        return None, "expected a non-empty string, got null"
    if not isinstance(value, str):
        return None, f"expected a non-empty string, got {json_type_name(value)} {describe_value(value)}"
    if not value.strip():
        return None, f"expected a non-empty string, got {describe_value(value)}"
    problem = unencodable(value)
    if problem is not None:
        return None, problem
    return value, None
