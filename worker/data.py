"""Re-validate a job's dataset files: fetch their bytes through the artifact store interface (a local
directory or the API, never an assumed shared disk) and parse them with ``sparsegrad_data``.

The validation file is read with the training file's label names, so class ids agree. Without one, a
``validation_split`` share of the training file is held out (a seeded split; the API refuses a file too small
to split, :data:`sparsegrad_data.MIN_EXAMPLES_TO_SPLIT`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sparsegrad_data import Dataset, DatasetError, TaskType, can_split, parse_dataset_bytes
from sparsegrad_service.job_store import FileRef
from sparsegrad_service.store import ArtifactStore

from .errors import JobError
from .jobspec import TaskSpec


@dataclass
class JobData:
    train: Dataset
    eval: Dataset | None
    eval_source: str
    """``validation_file``, ``split`` (held out of the training file) or ``none``."""


def read_file(store: ArtifactStore, ref: FileRef) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sparsegrad-file-") as tmp:
        return store.fetch(ref.storage_key, Path(tmp) / "data").read_bytes()


def parse(data: bytes, ref: FileRef, task: TaskSpec, *, max_bytes: int, max_examples: int,
          label_names: list[str] | None = None, num_labels: int | None = None) -> Dataset:
    classification = task.task == TaskType.CLASSIFICATION
    names = label_names if label_names is not None else task.label_names
    return parse_dataset_bytes(
        data, ref.filename, task.task, task.mapping,
        num_labels=(num_labels if names is None else None) if classification else None,
        label_names=names if classification else None,
        max_bytes=max_bytes, max_examples=max_examples,
    )


def load_job_data(
    store: ArtifactStore, task: TaskSpec, training: FileRef, validation: FileRef | None, *,
    validation_split: float, seed: int, max_bytes: int, max_examples: int,
) -> JobData:
    """Parse the training (and validation) file; raises :class:`~worker.errors.JobError` listing every
    problem found (code ``invalid_training_file`` or ``invalid_validation_file``)."""
    try:
        train = parse(read_file(store, training), training, task, max_bytes=max_bytes,
                      max_examples=max_examples, num_labels=task.num_labels)
    except DatasetError as exc:
        raise JobError("invalid_training_file", str(exc), "training_file") from exc
    if validation is not None:
        try:
            held = parse(read_file(store, validation), validation, task, max_bytes=max_bytes,
                         max_examples=max_examples, label_names=train.label_names)
        except DatasetError as exc:
            raise JobError("invalid_validation_file", str(exc), "validation_file") from exc
        return JobData(train, held, "validation_file")
    if 0.0 < validation_split < 1.0 and can_split(len(train)):
        rest, held = train.split(validation_split, seed)
        return JobData(rest, held, "split")
    return JobData(train, None, "none")
