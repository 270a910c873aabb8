"""Valid files load into the expected examples, tasks and label names."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from sparsegrad_contract.defaults import MIN_EVAL_EXAMPLES
from sparsegrad_data import (
    ColumnMapping,
    Dataset,
    DatasetError,
    DatasetFormat,
    DatasetIssue,
    Example,
    HoldOut,
    TaskType,
    detect_format,
    glue_mapping,
    hold_out,
    infer_task_type,
    load_dataset,
    parse_dataset_bytes,
)


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_jsonl_string_labels_are_numbered_in_sorted_order() -> None:
    data = jsonl(
        {"text": "great", "label": "positive", "id": 7},
        {"text": "awful", "label": "negative"},
        {"text": "meh", "label": "neutral", "extra": {"ignored": True}},
        {"text": "fine", "label": " positive "},
    )
    ds = parse_dataset_bytes(data, "reviews.jsonl")
    assert ds.task is TaskType.CLASSIFICATION and ds.format is DatasetFormat.JSONL
    assert ds.label_names == ["negative", "neutral", "positive"] and ds.num_labels == 3
    assert [e.label for e in ds.examples] == [2, 0, 1, 2]
    assert ds.examples[0] == Example(text="great", label=2, line=1)
    assert ds.source == "reviews.jsonl" and len(ds) == 4


def test_label_names_from_train_fix_dev_ids() -> None:
    dev = parse_dataset_bytes(
        jsonl({"text": "a", "label": "pos"}, {"text": "b", "label": "pos"}),
        "dev.jsonl",
        label_names=["neg", "neutral", "pos"],
        min_classes=1,
    )
    assert [e.label for e in dev.examples] == [2, 2]
    assert dev.label_names == ["neg", "neutral", "pos"] and dev.num_labels == 3


def test_integer_labels_and_num_labels() -> None:
    data = jsonl({"text": "a", "label": 0}, {"text": "b", "label": 2}, {"text": "c", "label": 1.0})
    ds = parse_dataset_bytes(data, "t.jsonl")
    assert [e.label for e in ds.examples] == [0, 2, 1]
    assert all(isinstance(e.label, int) for e in ds.examples)
    assert ds.label_names == ["0", "1", "2"]
    assert parse_dataset_bytes(data, "t.jsonl", num_labels=5).num_labels == 5


def test_tsv_label_cells_match_label_names_before_numbers() -> None:
    data = b"text\tstars\nok\t3\nbad\t1\ngood\t5\n"
    mapping = ColumnMapping(label="stars")
    ds = parse_dataset_bytes(data, "t.tsv", mapping=mapping, label_names=["1", "2", "3", "4", "5"])
    assert [e.label for e in ds.examples] == [2, 0, 4]
    plain = parse_dataset_bytes(data, "t.tsv", mapping=mapping)
    assert [e.label for e in plain.examples] == [3, 1, 5] and plain.num_labels == 6


def test_regression_jsonl_and_csv() -> None:
    ds = parse_dataset_bytes(jsonl({"text": "a", "label": 0.5}, {"text": "b", "label": 3}), "s.jsonl")
    assert ds.task is TaskType.REGRESSION
    assert [e.label for e in ds.examples] == [0.5, 3.0] and all(
        isinstance(e.label, float) for e in ds.examples
    )
    assert ds.label_names is None and ds.num_labels is None
    csv_data = b'sentence1,sentence2,score\n"A man, walking.",A man walks.,4.800\nA cat.,A dog.,0.25\n'
    task, mapping = glue_mapping("stsb")
    csv_ds = parse_dataset_bytes(csv_data, "stsb.csv", task, mapping)
    assert csv_ds.examples[0] == Example(text="A man, walking.", text_pair="A man walks.", label=4.8, line=2)
    assert parse_dataset_bytes(csv_data, "stsb.csv", None, mapping).task is TaskType.REGRESSION


def test_chat_records() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    ds = parse_dataset_bytes(jsonl({"messages": messages, "id": 1}), "chat.jsonl")
    assert ds.task is TaskType.CAUSAL_LM and ds.label_names is None
    assert ds.examples == [Example(messages=tuple(messages), line=1)]
    custom = parse_dataset_bytes(
        jsonl({"conv": messages}), "c.jsonl", "causal_lm", ColumnMapping(messages="conv")
    )
    assert custom.examples[0].messages == tuple(messages)


def test_csv_quoted_multiline_record_keeps_start_line() -> None:
    data = b'text,label\r\n"line one\r\nline two, with comma",1\r\n\r\nplain,0\r\n"say ""hi""",1'
    ds = parse_dataset_bytes(data, "t.csv")
    assert [(e.line, e.text, e.label) for e in ds.examples] == [
        (2, "line one\nline two, with comma", 1),
        (5, "plain", 0),
        (6, 'say "hi"', 1),
    ]


def test_tsv_keeps_quotes_and_spaces_verbatim() -> None:
    data = "\ufeffsentence\tlabel\n\" a quote that never closes \t1\nit 's fine \t0\n".encode()
    ds = parse_dataset_bytes(data, "t.tsv", *glue_mapping("sst2"))
    assert [e.text for e in ds.examples] == ['" a quote that never closes ', "it 's fine "]


def test_pair_classification_with_blank_lines_and_bom() -> None:
    data = (
        b"\xef\xbb\xbf"
        + jsonl({"q": "a?", "a": "b", "y": "yes"})
        + b"\n   \n"
        + jsonl({"q": "c?", "a": "d", "y": "no"})
    )
    ds = parse_dataset_bytes(data, "p.jsonl", mapping=ColumnMapping(text="q", text_pair="a", label="y"))
    assert [(e.line, e.text_pair, e.label) for e in ds.examples] == [(1, "b", 1), (4, "d", 0)]


def test_load_dataset_reads_files_and_checks_size_first(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl({"text": "a", "label": 0}, {"text": "b", "label": 1}))
    assert len(load_dataset(path)) == 2
    assert len(load_dataset(str(path), max_bytes=10_000, max_examples=2)) == 2
    with pytest.raises(DatasetError, match="over the limit of 10 bytes"):
        load_dataset(path, max_bytes=10)
    with pytest.raises(FileNotFoundError):
        load_dataset(path.with_name("missing.jsonl"))


def test_file_format_override() -> None:
    data = b"text\tlabel\na\t0\nb\t1\n"
    assert parse_dataset_bytes(data, "upload.bin", file_format="tsv").format is DatasetFormat.TSV
    assert parse_dataset_bytes(data, "upload").format is DatasetFormat.TSV


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("a.jsonl", b"", DatasetFormat.JSONL),
        ("a.JSON", b"", DatasetFormat.JSONL),
        ("a.csv", b"", DatasetFormat.CSV),
        ("a.tsv", b"", DatasetFormat.TSV),
        ("a.txt", b"", DatasetFormat.TSV),
        ("upload", b'\xef\xbb\xbf\n{"text": 1}', DatasetFormat.JSONL),
        ("upload", b"text\tlabel\n", DatasetFormat.TSV),
        ("upload.dat", b"text,label\n", DatasetFormat.CSV),
    ],
)
def test_detect_format(name: str, head: bytes, expected: DatasetFormat) -> None:
    assert detect_format(name, head) is expected


def test_infer_task_type_rules() -> None:
    assert infer_task_type([0, 1, 1]) is TaskType.CLASSIFICATION
    assert infer_task_type([0.0, 1.0]) is TaskType.CLASSIFICATION
    assert infer_task_type(["pos", "neg"]) is TaskType.CLASSIFICATION
    assert infer_task_type([0.5, 3, 4.2]) is TaskType.REGRESSION
    assert infer_task_type([0.5, 1.5, "n/a"]) is TaskType.REGRESSION
    assert infer_task_type(["a", "b", 0.5]) is TaskType.CLASSIFICATION
    assert infer_task_type([], has_messages=True) is TaskType.CAUSAL_LM
    assert infer_task_type([]) is TaskType.CLASSIFICATION


def test_split_is_deterministic_and_partitions() -> None:
    examples = [Example(text=str(i), label=i % 2, line=i + 1) for i in range(100)]
    ds = Dataset(examples, TaskType.CLASSIFICATION, DatasetFormat.JSONL, ["0", "1"], 2, "t.jsonl")
    rest, held = ds.split(0.2, seed=3)
    assert (len(rest), len(held)) == (80, 20)
    assert sorted(e.line for e in rest.examples + held.examples) == list(range(1, 101))
    assert [e.line for e in held.examples] == sorted(e.line for e in held.examples)
    again = ds.split(0.2, seed=3)
    assert again == (rest, held)
    assert ds.split(0.2, seed=4)[1] != held
    assert held.label_names == ["0", "1"] and held.label_names is not ds.label_names
    assert [len(p) for p in Dataset(examples[:2], *_meta()).split(0.01)] == [1, 1]
    with pytest.raises(ValueError):
        ds.split(1.0)


def test_hold_out_rule_needs_enough_examples_on_both_sides() -> None:
    """A share is held out only when it is at least MIN_EVAL_EXAMPLES and leaves as many to train on; ``needed``
    is the smallest file that gets one (checked against every file size up to it)."""
    assert hold_out(30, 0.1).size == 0 and hold_out(194, 0.1).size == 0
    assert hold_out(195, 0.1).size == MIN_EVAL_EXAMPLES and hold_out(1200, 0.1).size == 120
    assert hold_out(39, 0.5).size == 0 and hold_out(40, 0.5).size == 20
    assert hold_out(10_000, 0.0) == HoldOut(10_000, 0.0, 0, 0)
    for fraction in (0.01, 0.05, 0.1, 0.2, 0.33, 0.5, 0.9):
        plan = hold_out(0, fraction)
        sizes = [hold_out(n, fraction).size for n in range(plan.needed + 1)]
        assert sizes[-1] >= MIN_EVAL_EXAMPLES and plan.needed - sizes[-1] >= MIN_EVAL_EXAMPLES
        assert not any(sizes[:-1]), fraction


def test_classification_split_is_stratified() -> None:
    """Each class gives its share of the held-out part: a 10 % class is evaluated, a single-example class
    stays in training."""
    labels = [0] * 170 + [1] * 20 + [2] * 9 + [3]
    examples = [Example(text=str(i), label=y, line=i + 1) for i, y in enumerate(labels)]
    ds = Dataset(examples, TaskType.CLASSIFICATION, DatasetFormat.JSONL, ["a", "b", "c", "d"], 4, "t.jsonl")
    for seed in range(5):
        rest, held = ds.split(0.1, seed=seed)
        assert len(held) == 20
        counts = {y: sum(e.label == y for e in held.examples) for y in range(4)}
        assert counts[0] == 17 and counts[1] == 2 and counts[2] == 1 and counts[3] == 0
        assert {e.label for e in rest.examples} == {0, 1, 2, 3}


def _meta() -> tuple[TaskType, DatasetFormat, list[str], int, str]:
    return TaskType.CLASSIFICATION, DatasetFormat.JSONL, ["0", "1"], 2, "t.jsonl"


def test_issue_and_error_rendering_and_pickling() -> None:
    issue = DatasetIssue("train.jsonl", 17, "label", "expected an integer class or a string label, got 1.5")
    assert str(issue) == "train.jsonl:17: field 'label': expected an integer class or a string label, got 1.5"
    assert str(DatasetIssue("a.csv", None, None, "file is empty")) == "a.csv: file is empty"
    error = DatasetError([issue])
    assert isinstance(error, ValueError)
    assert str(error) == f"train.jsonl: 1 problem found\n{issue}"
    copy = pickle.loads(pickle.dumps(error))
    assert copy.issues == [issue] and str(copy) == str(error)


def test_column_mapping_validation() -> None:
    assert ColumnMapping(text=3, label=1, has_header=False).columns() == {"text": 3, "label": 1}
    with pytest.raises(ValueError, match="0-based column indices"):
        ColumnMapping(text=3, has_header=False)
    with pytest.raises(ValueError, match="same column twice"):
        ColumnMapping(text="a", label="a")
    with pytest.raises(ValueError):
        ColumnMapping(text=-1)
    with pytest.raises(TypeError):
        ColumnMapping(text=True)
    with pytest.raises(ValueError):
        ColumnMapping(text=" ")


def test_argument_errors_are_value_errors() -> None:
    data = jsonl({"text": "a", "label": 0}, {"text": "b", "label": 1})
    with pytest.raises(ValueError, match="unknown task"):
        parse_dataset_bytes(data, "t.jsonl", task="summarize")
    with pytest.raises(ValueError, match="does not match"):
        parse_dataset_bytes(data, "t.jsonl", num_labels=3, label_names=["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        parse_dataset_bytes(data, "t.jsonl", label_names=["a", "a"])
    with pytest.raises(ValueError, match="only apply to classification"):
        parse_dataset_bytes(data, "t.jsonl", task="regression", num_labels=2)


def test_glue_mapping_names() -> None:
    assert glue_mapping("SST-2") == glue_mapping("sst2")
    assert glue_mapping("sts_b")[0] is TaskType.REGRESSION
    assert glue_mapping("qnli")[1] == ColumnMapping(text="question", text_pair="sentence", label="label")
    with pytest.raises(ValueError, match="available: sst2, cola, mrpc"):
        glue_mapping("mnli")
