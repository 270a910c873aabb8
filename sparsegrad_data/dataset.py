"""The validated dataset returned by the loaders, and its deterministic train/held-out split."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .schema import DatasetFormat, Example, TaskType

MIN_EXAMPLES_TO_SPLIT = 2
"""The fewest examples a training file can have and still hold out a validation share (one example on each
side). The API refuses a job below it that names no validation file; the worker splits every file from it."""


def can_split(n_examples: int) -> bool:
    """Whether ``n_examples`` can be split into a training part and a held-out part, both non-empty."""
    return n_examples >= MIN_EXAMPLES_TO_SPLIT


@dataclass
class Dataset:
    """Validated examples of one file.

    For classification, ``label_names[i]`` is the name of class id ``i`` (ids written as integers in
    the file get the names ``"0"``, ``"1"``, ...) and ``num_labels == len(label_names)``; both are None
    for regression and causal_lm. ``source`` is the file name.
    """

    examples: list[Example]
    task: TaskType
    format: DatasetFormat
    label_names: list[str] | None
    num_labels: int | None
    source: str

    def __len__(self) -> int:
        return len(self.examples)

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split into ``(rest, held_out)``, with ``held_out`` holding ``fraction`` of the examples.

        The choice is a seeded shuffle (``random.Random(seed)``), not stratified; both parts keep
        file order. ``held_out`` gets ``round(len * fraction)`` examples, clamped so that neither part is
        empty. Both parts keep this dataset's task, format, label names and source.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
        if not can_split(len(self.examples)):
            raise ValueError(f"cannot split {len(self.examples)} example(s) into two non-empty parts")
        size = min(max(round(len(self.examples) * fraction), 1), len(self.examples) - 1)
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        held = set(order[:size])
        rest = [ex for i, ex in enumerate(self.examples) if i not in held]
        held_out = [ex for i, ex in enumerate(self.examples) if i in held]
        names = self.label_names
        return (
            replace(self, examples=rest, label_names=None if names is None else list(names)),
            replace(self, examples=held_out, label_names=None if names is None else list(names)),
        )
