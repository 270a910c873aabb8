"""The order of training batches: a deterministic, ``DataLoader``-free function of ``(seed, epoch)``, so a
resumed run restarts at an exact position (see :class:`BatchOrder`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN_STREAM = 0
CALIBRATION_STREAM = 1


def epoch_permutation(n: int, seed: int, epoch: int, stream: int = TRAIN_STREAM) -> list[int]:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch, stream)``."""
    if seed < 0 or epoch < 0:
        raise ValueError("seed and epoch must be >= 0")
    rng = np.random.default_rng([seed, epoch, stream])
    return [int(i) for i in rng.permutation(n)]


@dataclass(frozen=True)
class BatchOrder:
    """Micro-batches of an epoch, grouped into optimizer steps, as a pure function of ``(seed, epoch)``.

    ``batch_size`` rows per micro-batch (the last one of an epoch may be smaller), and
    ``accumulation`` micro-batches per optimizer step (the last step of an epoch may have fewer).
    With ``lengths`` (tokens per row), rows are grouped by length: the shuffled rows are cut into
    windows of ``LENGTH_WINDOW`` batches, each window is sorted by length and cut into batches,
    and the batches are shuffled — far less padding, still a fresh random order every epoch.
    """

    num_rows: int
    batch_size: int
    seed: int
    accumulation: int = 1
    shuffle: bool = True
    stream: int = TRAIN_STREAM
    lengths: tuple[int, ...] | None = None

    LENGTH_WINDOW = 50

    def __post_init__(self) -> None:
        if self.num_rows < 1 or self.batch_size < 1 or self.accumulation < 1:
            raise ValueError("num_rows, batch_size and accumulation must be >= 1")
        if self.lengths is not None and len(self.lengths) != self.num_rows:
            raise ValueError(f"lengths has {len(self.lengths)} entries for {self.num_rows} rows")

    @property
    def micro_batches_per_epoch(self) -> int:
        return -(-self.num_rows // self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.micro_batches_per_epoch // self.accumulation)

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """Row indices of every micro-batch of ``epoch``, in training order."""
        if not self.shuffle:
            order = list(range(self.num_rows))
        else:
            order = epoch_permutation(self.num_rows, self.seed, epoch, self.stream)
        if self.lengths is None or not self.shuffle:
            return [order[i : i + self.batch_size] for i in range(0, self.num_rows, self.batch_size)]
        lengths, window = self.lengths, self.batch_size * self.LENGTH_WINDOW
        batches: list[list[int]] = []
        for w in range(0, self.num_rows, window):
            chunk = sorted(order[w : w + window], key=lambda i: (-lengths[i], i))
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        # The smaller batch (if any) keeps its place at the end; the full ones are shuffled.
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [b for b in batches if len(b) != self.batch_size]
        shuffled = np.random.default_rng([self.seed, epoch, self.stream, 1]).permutation(len(full))
        return [full[int(i)] for i in shuffled] + rest

    def step(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        """The micro-batches (row indices) of optimizer step ``step_in_epoch`` of ``epoch``."""
        if not 0 <= step_in_epoch < self.steps_per_epoch:
            raise IndexError(f"step {step_in_epoch} outside epoch of {self.steps_per_epoch} steps")
        a = step_in_epoch * self.accumulation
        return self.micro_batches(epoch)[a : a + self.accumulation]
