"""The worker's reading of a job's files: a validation share is held out only by the hold-out rule, and an event
says what the job trains and evaluates on either way."""

from __future__ import annotations

import json
from pathlib import Path

from sparsegrad_contract.defaults import MIN_EVAL_EXAMPLES
from sparsegrad_data import ColumnMapping, TaskType
from sparsegrad_service.store import LocalArtifactStore
from worker.data import FileRef, load_job_data
from worker.jobspec import TaskSpec


def _stored(tmp_path: Path, n: int) -> tuple[LocalArtifactStore, FileRef]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    rows = [{"text": f"sentence number {i}", "label": i % 2} for i in range(n)]
    store.put_bytes("files/train.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    return store, FileRef(id="file-1", filename="train.jsonl", storage_key="files/train.jsonl")


TASK = TaskSpec(TaskType.CLASSIFICATION, ColumnMapping(), None, None)


def _load(tmp_path: Path, n: int, split: float = 0.1):  # type: ignore[no-untyped-def]
    store, ref = _stored(tmp_path, n)
    return load_job_data(store, TASK, ref, None, validation_split=split, seed=0, max_bytes=1 << 20, max_examples=10_000)


def test_a_small_file_is_not_split_and_the_event_says_why(tmp_path: Path) -> None:
    """30 examples at 10 % would evaluate on 3 (accuracy swinging 0 → 1): the job trains on all 30 instead."""
    data = _load(tmp_path, 30)
    assert data.eval_source == "none" and data.eval is None and len(data.train) == 30
    message, event = data.describe()
    needed = event["min_examples_to_hold_out"]
    assert message.startswith("No evaluation: 30 examples are too few to hold out 0.1")
    assert f"needs at least {needed}" in message and "validation file" in message
    assert event["eval_examples"] == 0 and event["train_examples"] == 30 and event["min_eval_examples"] == MIN_EVAL_EXAMPLES
    assert _load(tmp_path / "just-short", needed - 1).eval is None


def test_a_large_enough_file_is_split_and_the_event_says_how_much(tmp_path: Path) -> None:
    data = _load(tmp_path, 1200)
    assert data.eval_source == "split" and data.eval is not None
    assert (len(data.train), len(data.eval)) == (1080, 120)
    assert {e.label for e in data.eval.examples} == {0, 1}
    message, event = data.describe()
    assert "held out 120 of 1,200 examples for evaluation" in message and "training on 1,080" in message
    assert (event["train_examples"], event["eval_examples"], event["eval_source"]) == (1080, 120, "split")
    smallest = _load(tmp_path / "smallest", event["min_eval_examples"] * 2, split=0.5)
    assert smallest.eval is not None and len(smallest.eval) == len(smallest.train) == MIN_EVAL_EXAMPLES
