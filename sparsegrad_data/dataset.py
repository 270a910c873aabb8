"""The validated dataset returned by the loaders, and its deterministic train/held-out split."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from sparsegrad_contract.defaults import MIN_EVAL_EXAMPLES

from .schema import DatasetFormat, Example, TaskType


@dataclass(frozen=True)
class HoldOut:
    """What holding out ``fraction`` of a file of ``examples`` gives: ``size`` examples for evaluation (0: none,
    the file is too small or ``fraction`` is 0) and ``needed``, the fewest examples a file needs for this
    ``fraction`` to be held out (0 when ``fraction`` is not in (0, 1))."""

    examples: int
    fraction: float
    size: int
    needed: int


def _hold_out_size(n_examples: int, fraction: float) -> int:
    size = round(n_examples * fraction)
    return size if size >= MIN_EVAL_EXAMPLES and n_examples - size >= MIN_EVAL_EXAMPLES else 0


def hold_out(n_examples: int, fraction: float) -> HoldOut:
    """The hold-out rule: a ``fraction`` share (``round(n × fraction)`` examples) is held out of a training file
    for evaluation only when it is at least :data:`~sparsegrad_contract.defaults.MIN_EVAL_EXAMPLES` examples and
    leaves at least as many to train on; otherwise nothing is held out (the API, the worker and the docs follow
    this one rule)."""
    if not 0.0 < fraction < 1.0:
        return HoldOut(n_examples, fraction, 0, 0)
    # round(n·f) >= M needs n·f >= M - ½, and n - round(n·f) >= M needs n·(1 - f) >= M - ½: start below both
    needed = max(2 * MIN_EVAL_EXAMPLES, math.floor((MIN_EVAL_EXAMPLES - 0.5) / min(fraction, 1.0 - fraction)) - 1)
    while not _hold_out_size(needed, fraction):
        needed += 1
    return HoldOut(n_examples, fraction, _hold_out_size(n_examples, fraction), needed)


def _stratified(labels: list[int | float | None], size: int, rng: random.Random) -> set[int]:
    """``size`` indices, each class giving its share (largest remainders first, ties in class order) from a
    seeded shuffle of its own examples, and keeping one for training while another class can give instead."""
    groups: dict[int | float | None, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    for members in groups.values():
        rng.shuffle(members)
    n = len(labels)
    quota = {y: len(m) * size / n for y, m in groups.items()}
    take = {y: min(math.floor(q), len(groups[y]) - 1) for y, q in quota.items()}
    order = sorted(groups, key=lambda y: (take[y] - quota[y], str(y)))
    for spare in (1, 0):  # first every class keeps one example for training; then any example may go
        for y in order:
            if sum(take.values()) == size:
                break
            if take[y] < len(groups[y]) - spare:
                take[y] += 1
    assert sum(take.values()) == size
    return {i for y, m in groups.items() for i in m[:take[y]]}


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

        ``held_out`` gets ``round(len * fraction)`` examples, clamped so that neither part is empty. The choice is
        seeded (``random.Random(seed)``); for classification it is stratified: each class gives its share of
        ``held_out`` (largest remainders first), so every class with enough examples is evaluated and, where
        possible, every class keeps an example for training. Both parts keep file order, and this dataset's
        task, format, label names and source. Whether a job should hold out at all is :func:`hold_out`'s rule.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
        if len(self.examples) < 2:
            raise ValueError(f"cannot split {len(self.examples)} example(s) into two non-empty parts")
        size = min(max(round(len(self.examples) * fraction), 1), len(self.examples) - 1)
        rng = random.Random(seed)
        if self.task is TaskType.CLASSIFICATION:
            held = _stratified([ex.label for ex in self.examples], size, rng)
        else:
            order = list(range(len(self.examples)))
            rng.shuffle(order)
            held = set(order[:size])
        rest = [ex for i, ex in enumerate(self.examples) if i not in held]
        held_out = [ex for i, ex in enumerate(self.examples) if i in held]
        names = self.label_names
        return (
            replace(self, examples=rest, label_names=None if names is None else list(names)),
            replace(self, examples=held_out, label_names=None if names is None else list(names)),
        )
