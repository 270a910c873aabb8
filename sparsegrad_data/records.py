"""The raw record type shared by the JSONL and CSV/TSV readers, before any field is validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .schema import Column


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read from the file.

    ``fields`` is the JSON object for JSONL. For CSV/TSV it maps each mapped column (header name or
    0-based index, as written in the ColumnMapping) to the cell's text. ``from_table`` tells the two
    apart: table cells are always strings, so numbers in them still have to be parsed.
    """

    line: int
    fields: Mapping[Column, object]
    from_table: bool


def field_label(column: Column) -> str:
    """How a column is named in messages: its name, or ``column 3`` for a 0-based index."""
    return column if isinstance(column, str) else f"column {column}"
