"""Load a dataset file (from disk or from uploaded bytes) into validated examples, or raise DatasetError."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from .chat import check_chat_record
from .dataset import Dataset
from .decoding import decode_lines
from .fields import missing_field, read_text, unencodable
from .formats import detect_format
from .issues import IssueLog, describe_value, fail, json_type_name
from .jsonl_reader import read_jsonl
from .labels import ClassLabels, check_class_count, check_score, encode_classes, infer_task_type, parse_cell
from .records import RawRecord, field_label
from .schema import Column, ColumnMapping, DatasetFormat, Example, TaskType
from .table_reader import read_table

_SNIFF_BYTES = 8192


def load_dataset(
    path: str | os.PathLike[str],
    task: TaskType | str | None = None,
    mapping: ColumnMapping | None = None,
    *,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    min_classes: int = 2,
    max_bytes: int | None = None,
    max_examples: int | None = None,
    file_format: DatasetFormat | str | None = None,
) -> Dataset:
    """Read the file at ``path`` and validate it; see ``parse_dataset_bytes`` for the arguments."""
    file = Path(path)
    if max_bytes is not None and file.stat().st_size > max_bytes:
        raise fail(file.name, f"file is {file.stat().st_size:,} bytes, over the limit of {max_bytes:,} bytes")
    return parse_dataset_bytes(
        file.read_bytes(),
        file.name,
        task,
        mapping,
        num_labels=num_labels,
        label_names=label_names,
        min_classes=min_classes,
        max_bytes=max_bytes,
        max_examples=max_examples,
        file_format=file_format,
    )


def parse_dataset_bytes(
    data: bytes,
    filename: str,
    task: TaskType | str | None = None,
    mapping: ColumnMapping | None = None,
    *,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    min_classes: int = 2,
    max_bytes: int | None = None,
    max_examples: int | None = None,
    file_format: DatasetFormat | str | None = None,
) -> Dataset:
    """Parse and validate the contents of a dataset file.

    ``filename`` gives the format (unless ``file_format`` is passed) and the name used in messages.
    ``task`` is inferred from the records when None (see ``infer_task_type``). For classification,
    ``label_names`` fixes the id of each class name (pass the training file's ``label_names`` when
    loading its dev file) and ``num_labels`` bounds integer class ids; a file with fewer than
    ``min_classes`` distinct classes is rejected. ``max_bytes`` and ``max_examples`` are hard limits.

    Every problem found is collected, and a DatasetError listing them is raised if there is any;
    otherwise every record becomes an Example. Invalid arguments raise ValueError or TypeError.
    """
    source = PurePath(filename).name or filename
    task = _as_task(task)
    mapping = mapping if mapping is not None else ColumnMapping()
    names = _check_label_arguments(task, num_labels, label_names, min_classes)
    fmt = (
        DatasetFormat(file_format)
        if file_format is not None
        else detect_format(filename, data[:_SNIFF_BYTES])
    )
    lines = decode_lines(data, source, max_bytes=max_bytes)

    log = IssueLog(source)
    if fmt is DatasetFormat.JSONL:
        for role, column in mapping.columns().items():
            if isinstance(column, int):
                raise fail(
                    source,
                    f"column index {column} only works for CSV/TSV files; name the JSON key instead",
                    field=role,
                )
        records = read_jsonl(lines, log, limit=max_examples)
    else:
        if task is TaskType.CAUSAL_LM:
            raise fail(
                source,
                f"causal_lm data must be a JSONL file with a '{mapping.messages}' list "
                f"(or '{mapping.prompt}' and '{mapping.completion}') in each record",
            )
        records = read_table(lines, fmt, mapping, log, limit=max_examples)
    if max_examples is not None and len(records) > max_examples:
        raise fail(source, f"file has more than {max_examples:,} examples, the most allowed")
    if not records:
        log.raise_if_any()
        what = (
            "no data rows after the header"
            if fmt is not DatasetFormat.JSONL and mapping.has_header
            else "no records"
        )
        raise fail(source, f"file has {what}")

    if task is None:
        task = _infer_task(records, mapping, names is not None or num_labels is not None)
    if task is TaskType.CAUSAL_LM:
        examples = _causal_lm_examples(records, mapping, log)
        log.raise_if_any()
        return Dataset(examples, task, fmt, None, None, source)
    if task is TaskType.REGRESSION:
        examples = _text_examples(records, mapping, log, _scores(records, mapping, log))
        log.raise_if_any()
        return Dataset(examples, task, fmt, None, None, source)
    examples, classes = _class_examples(records, mapping, log, num_labels, names, min_classes)
    log.raise_if_any()
    return Dataset(examples, task, fmt, classes.label_names, classes.num_labels, source)


def _as_task(task: TaskType | str | None) -> TaskType | None:
    if task is None or isinstance(task, TaskType):
        return task
    try:
        return TaskType(task)
    except ValueError:
        choices = ", ".join(t.value for t in TaskType)
        raise ValueError(f"unknown task {task!r}; expected one of: {choices}") from None


def _check_label_arguments(
    task: TaskType | None, num_labels: int | None, label_names: Sequence[str] | None, min_classes: int
) -> list[str] | None:
    """Validate the caller's classification arguments; returns ``label_names`` as a list."""
    if (num_labels is not None or label_names is not None) and task not in (None, TaskType.CLASSIFICATION):
        raise ValueError(
            f"num_labels and label_names only apply to classification, not {task.value if task else task}"
        )
    if num_labels is not None and (
        isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
    ):
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
    if isinstance(min_classes, bool) or not isinstance(min_classes, int) or min_classes < 1:
        raise ValueError(f"min_classes must be a positive integer, got {min_classes!r}")
    if label_names is None:
        return None
    if isinstance(label_names, str):
        raise TypeError("label_names must be a sequence of strings, not a single string")
    names = list(label_names)
    if not names or not all(isinstance(n, str) and n.strip() and n == n.strip() for n in names):
        raise ValueError(f"label_names must be non-empty strings without surrounding spaces, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names has duplicates: {names!r}")
    if num_labels is not None and num_labels != len(names):
        raise ValueError(f"num_labels={num_labels} does not match the {len(names)} label_names")
    return names


def _label_value(record: RawRecord, column: Column, label_names: list[str] | None) -> object:
    """The raw label; table cells become numbers unless they exactly name one of ``label_names``."""
    value = record.fields[column]
    if not (record.from_table and isinstance(value, str)):
        return value
    if label_names is not None and value.strip() in label_names:
        return value.strip()
    return parse_cell(value)


def _infer_task(records: list[RawRecord], mapping: ColumnMapping, has_class_arguments: bool) -> TaskType:
    with_messages = sum(
        1
        for r in records
        if not r.from_table and (mapping.messages in r.fields or mapping.completion in r.fields)
    )
    with_labels = sum(1 for r in records if mapping.label in r.fields)
    if with_messages and with_messages >= with_labels:
        return TaskType.CAUSAL_LM
    if has_class_arguments:
        return TaskType.CLASSIFICATION
    return infer_task_type(_label_value(r, mapping.label, None) for r in records if mapping.label in r.fields)


def _class_examples(
    records: list[RawRecord],
    mapping: ColumnMapping,
    log: IssueLog,
    num_labels: int | None,
    label_names: list[str] | None,
    min_classes: int,
) -> tuple[list[Example], ClassLabels]:
    field = field_label(mapping.label)
    values = [
        (r.line, _label_value(r, mapping.label, label_names)) for r in records if mapping.label in r.fields
    ]
    for record in records:
        if mapping.label not in record.fields:
            log.add(record.line, field, missing_field(record, mapping.label))
    classes = encode_classes(values, field, log, num_labels=num_labels, label_names=label_names)
    ids = iter(classes.ids)
    labels = [next(ids) if mapping.label in r.fields else None for r in records]
    examples = _text_examples(records, mapping, log, labels)
    if not log:  # with invalid records dropped, a class count would only add noise
        check_class_count(classes, field, log, min_classes)
    return examples, classes


def _scores(records: list[RawRecord], mapping: ColumnMapping, log: IssueLog) -> list[float | None]:
    scores: list[float | None] = []
    field = field_label(mapping.label)
    for record in records:
        if mapping.label not in record.fields:
            log.add(record.line, field, missing_field(record, mapping.label))
            scores.append(None)
            continue
        score = check_score(_label_value(record, mapping.label, None))
        if isinstance(score, str):
            log.add(record.line, field, score)
            scores.append(None)
        else:
            scores.append(score)
    return scores


def _text_examples(
    records: list[RawRecord], mapping: ColumnMapping, log: IssueLog, labels: Sequence[int | float | None]
) -> list[Example]:
    """Examples for records whose text fields and label are all valid; the others are reported."""
    examples: list[Example] = []
    for record, label in zip(records, labels, strict=True):
        text, problem = read_text(record, mapping.text)
        if problem is not None:
            log.add(record.line, field_label(mapping.text), problem)
        pair: str | None = None
        if mapping.text_pair is not None:
            pair, pair_problem = read_text(record, mapping.text_pair)
            if pair_problem is not None:
                log.add(record.line, field_label(mapping.text_pair), pair_problem)
                continue
        if text is not None and label is not None:
            examples.append(Example(text=text, text_pair=pair, label=label, line=record.line))
    return examples


def _causal_lm_examples(records: list[RawRecord], mapping: ColumnMapping, log: IssueLog) -> list[Example]:
    """Examples for chat records (``messages``) and prompt/completion records; the others are reported."""
    examples: list[Example] = []
    for record in records:
        has_messages = mapping.messages in record.fields
        has_completion = any(
            key in record.fields and key != mapping.messages for key in (mapping.prompt, mapping.completion)
        )
        if has_messages and has_completion:
            log.add(
                record.line,
                mapping.messages,
                f"a record has either '{mapping.messages}' or '{mapping.prompt}' and '{mapping.completion}', not both",
            )
        elif has_messages:
            messages, tools, problems = check_chat_record(record.fields, mapping.messages)
            for field, message in problems:
                log.add(record.line, field, message)
            if messages is not None:
                examples.append(Example(messages=messages, tools=tools, line=record.line))
        elif has_completion:
            example = _completion_example(record, mapping, log)
            if example is not None:
                examples.append(example)
        else:
            alternative = f"'{mapping.prompt}' and '{mapping.completion}'"
            log.add(record.line, mapping.messages, missing_field(record, mapping.messages, alternative))
    return examples


def _completion_example(record: RawRecord, mapping: ColumnMapping, log: IssueLog) -> Example | None:
    """A prompt/completion record: the prompt is any string (even empty), the completion is non-blank text."""
    prompt: str | None = None
    if mapping.prompt not in record.fields:
        log.add(record.line, mapping.prompt, missing_field(record, mapping.prompt))
    elif not isinstance(value := record.fields[mapping.prompt], str):
        log.add(
            record.line,
            mapping.prompt,
            f"expected a string, got {json_type_name(value)} {describe_value(value)}",
        )
    elif (bad := unencodable(value)) is not None:
        log.add(record.line, mapping.prompt, bad)
    else:
        prompt = value
    completion, problem = read_text(record, mapping.completion)
    if problem is not None:
        log.add(record.line, mapping.completion, problem)
    if prompt is None or completion is None:
        return None
    return Example(prompt=prompt, completion=completion, line=record.line)
