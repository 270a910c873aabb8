"""The worker's reading of a job's files: the validation share is held out by the same rule the API checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsegrad_data import MIN_EXAMPLES_TO_SPLIT, ColumnMapping, TaskType
from sparsegrad_service.store import LocalArtifactStore
from worker.data import FileRef, load_job_data
from worker.jobspec import TaskSpec


def _stored(tmp_path: Path, n: int) -> tuple[LocalArtifactStore, FileRef]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    rows = [{"text": f"sentence number {i}", "label": i % 2} for i in range(n)]
    store.put_bytes("files/train.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    return store, FileRef(id="file-1", filename="train.jsonl", storage_key="files/train.jsonl")


TASK = TaskSpec(TaskType.CLASSIFICATION, ColumnMapping(), None, None)


@pytest.mark.parametrize("n", [MIN_EXAMPLES_TO_SPLIT, 5, 19, 20])
def test_every_file_the_api_accepts_is_split_for_evaluation(n: int, tmp_path: Path) -> None:
    """The API accepts a job without a validation file from MIN_EXAMPLES_TO_SPLIT examples; the worker must
    then hold out a share (a 2-19 example file used to train with no evaluation at all)."""
    store, ref = _stored(tmp_path, n)
    data = load_job_data(store, TASK, ref, None, validation_split=0.1, seed=0, max_bytes=1 << 20, max_examples=1000)
    assert data.eval_source == "split"
    assert data.eval is not None and len(data.eval) == max(1, round(0.1 * n))
    assert len(data.train) + len(data.eval) == n
