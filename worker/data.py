"""Re-validate a job's dataset files: fetch their bytes through the artifact store interface (a local
directory or the API, never an assumed shared disk) and parse them with ``sparsegrad_data``.

The validation file is read with the training file's label names, so class ids agree. Without one, a
``validation_split`` share of the training file is held out (a seeded split, stratified for classification) when
the file is large enough by :func:`sparsegrad_data.hold_out`'s rule; else the job trains on the whole file and
is not evaluated.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sparsegrad_contract.defaults import MIN_EVAL_EXAMPLES
from sparsegrad_data import Dataset, DatasetError, HoldOut, TaskType, hold_out, parse_dataset_bytes
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
    hold_out: HoldOut | None = None
    """Without a validation file: what the hold-out rule gave for the training file."""

    def describe(self) -> tuple[str, dict[str, object]]:
        """The event that says what the job trains and evaluates on, and why (its message and data)."""
        n_train, n_eval = len(self.train), 0 if self.eval is None else len(self.eval)
        data: dict[str, object] = {"train_examples": n_train, "eval_examples": n_eval, "eval_source": self.eval_source}
        task = self.train.task.value
        if self.eval is not None and self.eval_source == "validation_file":
            return (f"Validated {self.train.source} and {self.eval.source}: training on {n_train:,} examples, "
                    f"evaluating on the validation file's {n_eval:,}; task {task}.", data)
        plan = self.hold_out
        assert plan is not None
        data.update(validation_split=plan.fraction, min_eval_examples=MIN_EVAL_EXAMPLES)
        if plan.size:
            return (f"Validated {self.train.source}: held out {plan.size:,} of {plan.examples:,} examples for "
                    f"evaluation (validation_split {plan.fraction:g}), training on {n_train:,}; task {task}.", data)
        if not plan.needed:
            why = f"validation_split is {plan.fraction:g}"
        else:
            data["min_examples_to_hold_out"] = plan.needed
            why = (f"{plan.examples:,} examples are too few to hold out {plan.fraction:g} of them (that needs at "
                   f"least {plan.needed:,}, so that {MIN_EVAL_EXAMPLES} or more are evaluated and as many trained on)")
        return (f"No evaluation: {why}; training on all {n_train:,} examples of {self.train.source}, task {task}. "
                "Upload a validation file to evaluate.", data)


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
    plan = hold_out(len(train), validation_split)
    if plan.size:
        rest, held = train.split(validation_split, seed)
        return JobData(rest, held, "split", plan)
    return JobData(train, None, "none", plan)
