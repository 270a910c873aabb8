"""The trainer's event hooks: a callback class with no-op defaults, and a list that fans events out.

A service subclasses :class:`TrainerCallback` to stream phases, metrics and checkpoints, and to
cancel or pause a job: :meth:`TrainerCallback.should_stop` is checked before every optimizer step
(and between calibration passes); when it returns True the trainer checkpoints and returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..methods import PreparedModel

Phase = Literal["calibrating", "training", "evaluating", "saving"]
Spectra = dict[str, dict[str, list[float]]]
"""Per projection kind: ``{"out": eigenvalues of Σ G Gᵀ, "in": eigenvalues of Σ Gᵀ G}`` (descending)."""


class TrainerCallback:
    """Override what you need; every hook is a no-op by default."""

    def on_phase(self, name: Phase) -> None:
        """The run entered ``calibrating``, ``training``, ``evaluating`` or ``saving``."""

    def on_calibration_step(self, step: int, total: int, loss: float) -> None:
        """Calibration backward pass ``step`` of ``total`` finished with this loss."""

    def on_calibration_done(self, spectra: Spectra) -> None:
        """The HOSVD bases are known; their eigenvalue spectra per projection kind."""

    def on_prepared(self, prepared: PreparedModel) -> None:
        """The method is installed (SparseGrad calibrated): trainable parameters, bases, block sizes are known."""

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        """Training starts at ``start_step`` (> 0 when resumed) and ends at ``total_steps``."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Optimizer step ``step`` (1-based) finished. ``metrics`` has ``loss``, ``lr``, ``step_time_s``,
        ``tokens_per_s``, ``peak_memory_mb``, ``epoch``, and for SparseGrad ``topk_energy_share``."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """An evaluation after ``step`` steps (0: before training); keys are ``eval_*``."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """A resumable checkpoint of step ``step`` was written (atomically) at ``path``."""

    def should_stop(self) -> bool:
        """Return True to cancel or pause: the trainer checkpoints and returns with ``stopped=True``."""
        return False


class CallbackList(TrainerCallback):
    """Sends each event to every callback in order; stops when any callback asks to."""

    def __init__(self, callbacks: Iterable[TrainerCallback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_phase(self, name: Phase) -> None:
        for cb in self.callbacks:
            cb.on_phase(name)

    def on_calibration_step(self, step: int, total: int, loss: float) -> None:
        for cb in self.callbacks:
            cb.on_calibration_step(step, total, loss)

    def on_calibration_done(self, spectra: Spectra) -> None:
        for cb in self.callbacks:
            cb.on_calibration_done(spectra)

    def on_prepared(self, prepared: PreparedModel) -> None:
        for cb in self.callbacks:
            cb.on_prepared(prepared)

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(start_step, total_steps)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_step(step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_eval(step, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(step, path)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)
