"""Read JSON Lines text into raw records: one JSON object per non-blank line."""

from __future__ import annotations

import json

from .issues import IssueLog, json_type_name
from .records import RawRecord


def read_jsonl(lines: list[str], log: IssueLog, *, limit: int | None = None) -> list[RawRecord]:
    """Parse each non-blank line as a JSON object; report lines that are not one.

    Stops after ``limit + 1`` records when ``limit`` is given (the caller reports the excess).
    """
    records: list[RawRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if not records and not log and line.lstrip().startswith("["):
                hint = "; the file looks like one JSON array, but JSON Lines needs one object per line"
            log.add(number, None, f"invalid JSON: {exc.msg} (column {exc.colno}){hint}")
            continue
        except RecursionError:
            log.add(number, None, "invalid JSON: nested too deeply")
            continue
        if not isinstance(value, dict):
            hint = ""
            if number == 1 and isinstance(value, list):
                hint = " (JSON Lines needs one object per line, not a JSON array)"
            log.add(number, None, f"expected a JSON object, got {json_type_name(value)}{hint}")
            continue
        records.append(RawRecord(number, value, from_table=False))
        if limit is not None and len(records) > limit:
            break
    return records
