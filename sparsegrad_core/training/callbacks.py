"""The trainer's event hooks: a callback class with no-op defaults, and a list that fans events out.

A service subclasses :class:`TrainerCallback` to stream phases, metrics and checkpoints, and to
cancel or pause a job: :meth:`TrainerCallback.should_stop` is checked before every optimizer step
(and between calibration passes); when it returns True the trainer checkpoints and returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..methods import PreparedModel

Phase = Literal["calibrating", "training", "evaluating", "saving"]
Spectra = dict[str, dict[str, list[float]]]
"""Per projection kind: ``{"out": eigenvalues of Σ G Gᵀ, "in": eigenvalues of Σ Gᵀ G}`` (descending)."""


@dataclass(frozen=True)
class CalibrationProgress:
    """Calibration after backward pass ``step`` of ``total`` (the passes that build the bases and, for fixed or
    block selection, the second pass that picks supports or block sizes), ``elapsed_s`` seconds after it
    started; ``loss`` is this pass's loss."""

    step: int
    total: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds until the last pass, at the mean pace so far (None before the first pass)."""
        if self.step <= 0:
            return None
        return max(self.total - self.step, 0) * self.elapsed_s / self.step


class TrainerCallback:
    """Override what you need; every hook is a no-op by default."""

    def on_phase(self, name: Phase) -> None:
        """The run entered ``calibrating``, ``training``, ``evaluating`` or ``saving``."""

    def on_calibration_step(self, progress: CalibrationProgress) -> None:
        """A calibration backward pass finished: how many of how many, its loss, the time taken and left."""

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

    def on_recalibrated(self, step: int, stats: dict[str, Any]) -> None:
        """The HOSVD bases were re-calibrated after step ``step`` (``recalibrate_every``): ``steps``, ``losses``,
        ``seconds`` and per kind ``kept_share`` (:func:`~sparsegrad_core.recalibration.recalibrate`)."""

    def should_stop(self) -> bool:
        """Return True to cancel or pause: the trainer checkpoints and returns with ``stopped=True``."""
        return False


def describe_recalibration(step: int, stats: dict[str, Any]) -> str:
    """One line for :meth:`TrainerCallback.on_recalibrated`'s event: when, how long, and per kind the top-k
    gradient energy the new bases keep over the old ones (the job's events and the terminal show the same)."""
    shares = ", ".join(f"{kind} {v['kept_share']:.2f}x" for kind, v in sorted(stats["kinds"].items()))
    return (f"HOSVD bases re-calibrated after step {step} ({stats['steps']} passes, {stats['seconds']:.1f} s); "
            f"top-k gradient energy kept vs. the previous bases: {shares}.")


class CallbackList(TrainerCallback):
    """Sends each event to every callback in order; stops when any callback asks to."""

    def __init__(self, callbacks: Iterable[TrainerCallback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_phase(self, name: Phase) -> None:
        for cb in self.callbacks:
            cb.on_phase(name)

    def on_calibration_step(self, progress: CalibrationProgress) -> None:
        for cb in self.callbacks:
            cb.on_calibration_step(progress)

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

    def on_recalibrated(self, step: int, stats: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_recalibrated(step, stats)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)
