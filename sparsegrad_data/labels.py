"""Label rules: which task the labels imply, and turning raw label values into class ids or scores."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .issues import IssueLog, describe_value
from .schema import TaskType

MAX_CLASSES = 100_000
"""Integer class ids must be below this unless ``num_labels`` says otherwise."""

_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
_CLASS_EXPECTED = "expected an integer class or a string label"


def parse_cell(cell: str) -> int | float | str:
    """A CSV/TSV label cell as a value: ``"1"`` → 1, ``"0.25"`` → 0.25, ``"nan"`` → nan, else the stripped text."""
    text = cell.strip()
    if _INT_TEXT.fullmatch(text):
        return int(text)
    if _FLOAT_TEXT.fullmatch(text):
        return float(text)
    return text


def _integral(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value == int(value)
    )


def infer_task_type(labels: Iterable[object], *, has_messages: bool = False) -> TaskType:
    """The task implied by a file's label values (JSON values, or CSV/TSV cells after ``parse_cell``).

    Records with messages mean causal_lm. Otherwise, non-integer numbers (``0.25``) mean regression
    when they outnumber non-numeric string labels; anything else (integers, integral floats such as
    ``1.0``, string names) means classification. Missing or unusable values are ignored here; they are
    reported when the labels are validated.
    """
    if has_messages:
        return TaskType.CAUSAL_LM
    fractional = strings = 0
    for value in labels:
        if isinstance(value, str):
            strings += 1
        elif isinstance(value, float) and math.isfinite(value) and not _integral(value):
            fractional += 1
    return TaskType.REGRESSION if fractional and fractional >= strings else TaskType.CLASSIFICATION


def check_score(value: object) -> float | str:
    """A regression label as a float, or the message saying why it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {describe_value(value)}"
    score = float(value)
    if not math.isfinite(score):
        return f"expected a finite number, got {describe_value(score)}"
    return score


@dataclass(frozen=True)
class ClassLabels:
    """The outcome of encoding classification labels: one id per input (None where invalid)."""

    ids: list[int | None]
    label_names: list[str]
    num_labels: int


def encode_classes(
    values: Sequence[tuple[int, object]],
    field: str,
    log: IssueLog,
    *,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
) -> ClassLabels:
    """Turn ``(line, value)`` pairs into class ids, reporting every invalid value.

    Integers (and integral floats such as ``1.0``) are class ids. Strings are class names: with
    ``label_names`` they must be one of them; without, the distinct names are sorted (plain string
    order) and numbered from 0. Without ``label_names`` a file must use either ids or names, and the
    values of the less common kind are reported.
    """
    kinds = [_kind(line, value, field, log) for line, value in values]
    if label_names is not None:
        names = list(label_names)
    else:
        kinds = _drop_minority_kind(values, kinds, field, log)
        string_names = sorted({k for k in kinds if isinstance(k, str)})
        if string_names:
            names = string_names
            if num_labels is not None and len(names) != num_labels:
                log.add(
                    None,
                    field,
                    f"found {len(names)} distinct string labels but num_labels is {num_labels}; "
                    "pass label_names to say which name is which class",
                )
        else:
            top = max((k for k in kinds if isinstance(k, int)), default=-1)
            size = num_labels if num_labels is not None else min(top + 1, MAX_CLASSES)
            names = [str(i) for i in range(size)]
    if label_names is not None:
        limit_reason = f"out of range for the {len(names)} label_names (expected 0 to {len(names) - 1})"
    elif num_labels is not None:
        limit_reason = f"out of range for num_labels={num_labels} (expected 0 to {num_labels - 1})"
    else:
        limit_reason = f"too large (at most {MAX_CLASSES:,} classes are supported)"
    index = {name: i for i, name in enumerate(names)}
    ids = [
        _to_id(line, kind, field, log, index, limit_reason)
        for (line, _), kind in zip(values, kinds, strict=True)
    ]
    return ClassLabels(ids, names, len(names))


def _drop_minority_kind(
    values: Sequence[tuple[int, object]], kinds: list[int | str | None], field: str, log: IssueLog
) -> list[int | str | None]:
    """Report and drop values of the less common kind when ids and names are mixed (ties keep names)."""
    n_ids = sum(isinstance(k, int) for k in kinds)
    n_names = sum(isinstance(k, str) for k in kinds)
    if not (n_ids and n_names):
        return kinds
    keep_names = n_names >= n_ids
    mostly = "string labels" if keep_names else "integer class ids"
    kept: list[int | str | None] = []
    for (line, value), kind in zip(values, kinds, strict=True):
        if kind is not None and isinstance(kind, str) != keep_names:
            log.add(
                line,
                field,
                f"{_CLASS_EXPECTED}, not a mix of both: the file mostly uses {mostly}, got {describe_value(value)}",
            )
            kind = None
        kept.append(kind)
    return kept


def _kind(line: int, value: object, field: str, log: IssueLog) -> int | str | None:
    """The value as a class id (int) or class name (str), or None after reporting why it is neither."""
    if isinstance(value, str):
        if value.strip():
            return value.strip()
        log.add(line, field, f"{_CLASS_EXPECTED}, got an empty string")
        return None
    if _integral(value):
        assert isinstance(value, int | float)
        return int(value)
    log.add(line, field, f"{_CLASS_EXPECTED}, got {describe_value(value)}")
    return None


def _to_id(
    line: int, kind: int | str | None, field: str, log: IssueLog, index: dict[str, int], limit_reason: str
) -> int | None:
    if kind is None:
        return None
    if isinstance(kind, str):
        if kind not in index:
            known = ", ".join(describe_value(name) for name in list(index)[:20])
            log.add(line, field, f"unknown label {describe_value(kind)}; expected one of: {known}")
            return None
        return index[kind]
    if kind < 0:
        log.add(line, field, f"class ids must be >= 0, got {kind}")
        return None
    if kind >= len(index):
        log.add(line, field, f"class id {kind} is {limit_reason}")
        return None
    return kind


def check_class_count(classes: ClassLabels, field: str, log: IssueLog, min_classes: int) -> None:
    """Report a file whose labels cover fewer than ``min_classes`` distinct classes."""
    ids, names = classes.ids, classes.label_names
    present = sorted({i for i in ids if i is not None})
    if not present or len(present) >= min_classes:
        return
    shown = ", ".join(describe_value(names[i]) if i < len(names) else str(i) for i in present)
    log.add(
        None,
        field,
        f"only {len(present)} distinct class found ({shown}); training a classifier needs at least "
        f"{min_classes} (pass min_classes=1 to accept this file, e.g. for evaluation)",
    )
