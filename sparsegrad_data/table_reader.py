"""Read CSV or TSV text into raw records, checking the header and the column count of every row."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from .issues import IssueLog
from .records import RawRecord, field_label
from .schema import Column, ColumnMapping, DatasetFormat

_MAX_NAMES_SHOWN = 20
_MAX_NAME_CHARS = 40


def read_table(
    lines: list[str],
    file_format: DatasetFormat,
    mapping: ColumnMapping,
    log: IssueLog,
    *,
    limit: int | None = None,
) -> list[RawRecord]:
    """Parse CSV (quoted fields allowed) or TSV (no quoting at all, as in GLUE) rows.

    Blank rows are skipped. With ``mapping.has_header`` the first row is the header and must name
    every mapped column; otherwise the first row fixes the column count. A header problem is
    reported and nothing is returned. Stops after ``limit + 1`` records when ``limit`` is given.
    """
    tsv = file_format is DatasetFormat.TSV
    reader = csv.reader(
        (line + "\n" for line in lines),
        delimiter="\t" if tsv else ",",
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
        strict=not tsv,
    )
    rows = _rows(reader, log)
    first = next(rows, None)
    if first is None:
        return []
    records: list[RawRecord] = []
    first_line, first_row = first
    indices: dict[Column, int] | None
    if mapping.has_header:
        indices = _header_indices(first_line, first_row, mapping, log)
        if indices is None:
            return []
        expected, where = len(first_row), " (as in the header)"
    else:
        expected, where = len(first_row), " (as in the first row)"
        positions = [column for column in mapping.columns().values() if isinstance(column, int)]
        indices = {column: column for column in positions}
        widest = max(positions)
        if widest >= expected:
            log.add(
                first_line,
                field_label(widest),
                f"column {widest} does not exist: rows have {expected} columns (numbered from 0)",
            )
            return []
        rows = _chain(first, rows)
    for line, row in rows:
        if len(row) != expected:
            log.add(
                line,
                None,
                f"expected {expected} columns{where}, got {len(row)}{_extra_hint(row, expected, tsv)}",
            )
            continue
        records.append(
            RawRecord(line, {column: row[index] for column, index in indices.items()}, from_table=True)
        )
        if limit is not None and len(records) > limit:
            break
    return records


def _rows(reader: Iterator[list[str]], log: IssueLog) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on; parse errors are reported and skipped."""
    previous_end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            log.add(previous_end + 1, None, _explain_csv_error(str(exc)))
            previous_end = getattr(reader, "line_num", previous_end + 1)
            continue
        start = previous_end + 1
        previous_end = getattr(reader, "line_num", start)
        if any(cell.strip() for cell in row):
            yield start, row


def _chain(
    first: tuple[int, list[str]], rest: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    yield first
    yield from rest


def _header_indices(
    line: int, header: list[str], mapping: ColumnMapping, log: IssueLog
) -> dict[Column, int] | None:
    """Where each mapped column is in the header, or None after reporting what is missing."""
    names = [cell.strip() for cell in header]
    indices: dict[Column, int] = {}
    missing: list[str] = []
    for column in mapping.columns().values():
        if isinstance(column, int):
            if column >= len(names):
                log.add(
                    line,
                    field_label(column),
                    f"column {column} does not exist: the header has {len(names)} columns (numbered from 0)",
                )
            else:
                indices[column] = column
            continue
        count = names.count(column)
        if count == 1:
            indices[column] = names.index(column)
        elif count > 1:
            log.add(line, column, f"column '{column}' appears {count} times in the header")
        else:
            missing.append(column)
    for column in missing:
        log.add(
            line,
            column,
            f"column '{column}' not found in the header{_did_you_mean(column, names)}; header found: {_show_names(names)}",
        )
    if missing and len(missing) == len([c for c in mapping.columns().values() if isinstance(c, str)]):
        log.add(
            line,
            None,
            "no mapped column was found: if the file has no header row, use has_header=False with 0-based column indices",
        )
    return None if len(indices) < len(mapping.columns()) else indices


def _did_you_mean(column: str, names: list[str]) -> str:
    for name in names:
        if name.casefold() == column.casefold():
            return f" (did you mean '{name}'? names are case-sensitive)"
    return ""


def _show_names(names: list[str]) -> str:
    shown = [
        repr(n if len(n) <= _MAX_NAME_CHARS else n[: _MAX_NAME_CHARS - 3] + "...")
        for n in names[:_MAX_NAMES_SHOWN]
    ]
    if len(names) > _MAX_NAMES_SHOWN:
        shown.append(f"... ({len(names)} columns)")
    return ", ".join(shown)


def _extra_hint(row: list[str], expected: int, tsv: bool) -> str:
    if len(row) <= expected:
        return ""
    if tsv:
        return "; text must not contain tab characters"
    return "; quote text that contains commas"


def _explain_csv_error(message: str) -> str:
    if "unexpected end of data" in message:
        return "a quoted field that starts on this line is never closed (unbalanced '\"')"
    if "expected after" in message:
        return "malformed quoting: a closing '\"' must be followed by the delimiter; write a quote inside a quoted field as '\"\"'"
    if "field larger than field limit" in message:
        return f"a field is longer than the CSV limit of {csv.field_size_limit():,} characters"
    if "new-line character seen in unquoted field" in message:
        return (
            "a carriage return (\\r) in the middle of a line; save the file with \\n or \\r\\n line endings"
        )
    return f"cannot parse the row: {message}"
