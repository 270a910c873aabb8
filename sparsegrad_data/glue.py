"""Column mappings for the GLUE tasks' TSV files (train.tsv / dev.tsv as the GLUE download script writes them)."""

from __future__ import annotations

from .schema import ColumnMapping, TaskType

_GLUE: dict[str, tuple[TaskType, ColumnMapping]] = {
    # header: sentence, label (0/1)
    "sst2": (TaskType.CLASSIFICATION, ColumnMapping(text="sentence", label="label")),
    # no header; columns: source, label (0/1), original mark, sentence
    "cola": (TaskType.CLASSIFICATION, ColumnMapping(text=3, label=1, has_header=False)),
    # header (after a UTF-8 BOM): Quality, #1 ID, #2 ID, #1 String, #2 String
    "mrpc": (
        TaskType.CLASSIFICATION,
        ColumnMapping(text="#1 String", text_pair="#2 String", label="Quality"),
    ),
    # header: index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score
    "stsb": (TaskType.REGRESSION, ColumnMapping(text="sentence1", text_pair="sentence2", label="score")),
    # header: index, question, sentence, label (entailment / not_entailment)
    "qnli": (TaskType.CLASSIFICATION, ColumnMapping(text="question", text_pair="sentence", label="label")),
    # header: index, sentence1, sentence2, label (entailment / not_entailment)
    "rte": (TaskType.CLASSIFICATION, ColumnMapping(text="sentence1", text_pair="sentence2", label="label")),
    # header: id, qid1, qid2, question1, question2, is_duplicate (0/1)
    "qqp": (
        TaskType.CLASSIFICATION,
        ColumnMapping(text="question1", text_pair="question2", label="is_duplicate"),
    ),
}


def glue_mapping(name: str) -> tuple[TaskType, ColumnMapping]:
    """The task and column mapping for a GLUE task: sst2, cola, mrpc, stsb, qnli, rte or qqp.

    Names are case-insensitive and may contain ``-`` or ``_`` (``"SST-2"``, ``"sts_b"``). String labels
    (QNLI, RTE) are numbered in sorted order, so ``entailment`` is 0 and ``not_entailment`` is 1.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _GLUE:
        raise ValueError(f"unknown GLUE task {name!r}; available: {', '.join(_GLUE)}")
    return _GLUE[key]
