"""The trainer callback of a service job: phases, progress, metrics, checkpoints and stop requests,
batched into short SQL transactions.

* Metric points are buffered and flushed every ``Settings.metrics_flush_s`` (and at phase changes,
  checkpoints, evaluations and the end); each flush also updates the job's step, progress, ETA and
  trained tokens, and wakes live listeners.
* A ``metrics`` event is added at most every :data:`METRICS_EVENT_EVERY_S` of training, plus one per
  evaluation; calibration likewise (and at its last pass), with data ``{"phase": "calibrating", "step",
  "total", "eta_seconds", ...}``. ``phase`` events mark real phase changes: the trainer's brief ``saving`` around a periodic
  checkpoint is not one.
* Progress: calibration is the first 5 %, training 5–95 %, evaluation and saving the rest.
* With a :class:`~worker.integrations.JobTracking`, every metric point written also goes to the job's W&B /
  MLflow runs (same step, name and value).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from sparsegrad_core.methods import PreparedModel
from sparsegrad_core.training import TrainerCallback
from sparsegrad_core.training.callbacks import CalibrationProgress, Phase, Spectra, describe_recalibration
from sparsegrad_core.training.checkpoint import is_best_checkpoint
from sparsegrad_core.training.telemetry import json_safe
from sparsegrad_service.enums import EventType
from sparsegrad_service.models import utcnow

from .heartbeat import StopFlags
from .integrations import JobTracking
from .journal import Event, JobJournal

METRICS_EVENT_EVERY_S = 2.0
CALIBRATION_SHARE, TRAINING_END = 0.05, 0.95
PHASE_PROGRESS = {"evaluating": TRAINING_END, "saving": 0.97}

CheckpointSaver = Callable[[int, Path, dict[str, Any]], str | None]
"""``(step, checkpoint folder, checkpoint metrics) → checkpoint id`` (None: not stored)."""


def cuda_memory_metrics(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        "cuda_reserved_mb": torch.cuda.memory_reserved(device) / 2**20,
    }


def _duration(seconds: float) -> str:
    """``42 s``, ``4 min 22 s``, ``1 h 05 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


class ServiceCallback(TrainerCallback):
    """Reports one training attempt to SQL through a :class:`JobJournal`."""

    def __init__(
        self, journal: JobJournal, flags: StopFlags, *, flush_every_s: float, device: torch.device,
        save_checkpoint: CheckpointSaver, trained_tokens: int = 0, tracking: JobTracking | None = None,
    ) -> None:
        """``tracking``: the job's W&B / MLflow runs, which get every metric point written and the trainable
        parameter count."""
        self.journal, self.flags, self.flush_every_s, self.device = journal, flags, flush_every_s, device
        self.tracking = tracking
        self.save_checkpoint = save_checkpoint
        self.trained_tokens = float(trained_tokens)
        self.phase: str | None = None
        self.step, self.total_steps = 0, 0
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.insight: dict[str, Any] = {}
        """What the method shows of itself (``MethodInsight``'s keys of ``Job.summary``): spectra, block."""
        self._rows: list[tuple[int, str, float]] = []
        self._events: list[Event] = []
        self._job: dict[str, Any] = {}
        self._flushed_at = self._event_at = self._calibration_event_at = -math.inf
        self._rate: deque[tuple[float, int]] = deque(maxlen=20)

    # ------------------------------------------------------------------------------------------ writes
    def flush(self) -> None:
        """Write what is buffered (metric points, events, job progress) in one transaction."""
        self._flushed_at = time.monotonic()
        if not (self._rows or self._events or self._job):
            return
        rows, events, job = self._rows, self._events, self._job
        self._rows, self._events, self._job = [], [], {}
        if self.journal.write(events=events, metrics=rows, job=job) and self.tracking is not None:
            self.tracking.log_metrics(rows)

    def _progress(self, step: int) -> float:
        if not self.total_steps:
            return CALIBRATION_SHARE
        return CALIBRATION_SHARE + (TRAINING_END - CALIBRATION_SHARE) * min(step / self.total_steps, 1.0)

    def _eta(self, step: int) -> Any:
        now = time.monotonic()
        self._rate.append((now, step))
        (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return utcnow() + timedelta(seconds=(self.total_steps - step) * (t1 - t0) / (s1 - s0))

    # ------------------------------------------------------------------------------------------ hooks
    def on_phase(self, name: Phase) -> None:
        if name == "saving" or name == self.phase:
            return  # "saving" is announced by the runner; a periodic checkpoint is no phase change
        self.enter_phase(name)

    def enter_phase(self, name: str) -> None:
        """Record a phase change (Job.phase, a ``phase`` event) and flush."""
        if name == self.phase:
            return
        self.phase = name
        self._events.append((EventType.phase, f"Phase: {name}", {"phase": name}))
        self._job["phase"] = name
        if name in PHASE_PROGRESS and (name != "evaluating" or self.step >= self.total_steps > 0):
            self._job["progress"] = PHASE_PROGRESS[name]
        self.flush()

    def on_calibration_step(self, progress: CalibrationProgress) -> None:
        step, total = progress.step, progress.total
        self._rows.append((step, "calibration_loss", progress.loss))
        self._job["progress"] = CALIBRATION_SHARE * step / max(total, 1)
        now = time.monotonic()
        if now - self._calibration_event_at >= METRICS_EVENT_EVERY_S or step == total:
            self._calibration_event_at = now
            eta = progress.eta_s
            left = f", about {_duration(eta)} left" if eta is not None and step < total else ""
            self._events.append((EventType.metrics,
                                 f"Calibration pass {step}/{total}: loss={progress.loss:.4f}{left}",
                                 {"phase": "calibrating", "step": step, "total": total, "eta_seconds": eta,
                                  "elapsed_seconds": progress.elapsed_s, "calibration_loss": progress.loss}))
        if now - self._flushed_at >= self.flush_every_s or step == total:
            self.flush()

    def on_calibration_done(self, spectra: Spectra) -> None:
        self.insight["spectra"] = spectra
        self._job["summary"] = json_safe(self.insight)
        kinds = ", ".join(f"{kind} ({len(s.get('out', []))}×{len(s.get('in', []))})" for kind, s in spectra.items())
        self._events.append((EventType.message, f"HOSVD bases ready for {len(spectra)} projection kinds: {kinds}.",
                             {"kinds": sorted(spectra)}))
        self.flush()

    def on_recalibrated(self, step: int, stats: dict[str, Any]) -> None:
        kept = {kind: v["kept_share"] for kind, v in stats["kinds"].items()}
        self._events.append((EventType.message, describe_recalibration(step, stats),
                             {"step": step, "kept_share": json_safe(kept), "seconds": stats["seconds"]}))
        self.flush()

    def on_prepared(self, prepared: PreparedModel) -> None:
        if self.tracking is not None:
            self.tracking.log_params({"trainable_params": prepared.trainable_params})
        block = chosen_block(prepared)
        if block is not None:
            self.insight["block"] = block
            self._job["summary"] = json_safe(self.insight)
            self.flush()

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        self.step, self.total_steps = start_step, total_steps
        self._job.update(step=start_step, total_steps=total_steps, progress=self._progress(start_step))
        self.flush()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        values = {**_finite(metrics), **cuda_memory_metrics(self.device)}
        self.step, self.last_train = step, values
        self.trained_tokens += values.get("tokens_per_s", 0.0) * values.get("step_time_s", 0.0)
        self._rows.extend((step, name, value) for name, value in values.items())
        self._job.update(step=step, progress=self._progress(step), estimated_finish=self._eta(step),
                         trained_tokens=int(self.trained_tokens))
        now = time.monotonic()
        if now - self._event_at >= METRICS_EVENT_EVERY_S:
            self._event_at = now
            loss = values.get("loss", math.nan)
            self._events.append((EventType.metrics, f"Step {step}/{self.total_steps}: training loss={loss:.4f}",
                                 {"step": step, "total_steps": self.total_steps, **values}))
        if now - self._flushed_at >= self.flush_every_s:
            self.flush()

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        values = _finite(metrics)
        self.last_eval = values
        self._rows.extend((step, name, value) for name, value in values.items())
        shown = ", ".join(f"{k}={v:.4f}" for k, v in values.items())
        what = "before training" if step == 0 else f"at step {step}"
        self._events.append((EventType.metrics, f"Evaluation {what}: {shown}", {"step": step, **values}))
        self.flush()

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.flush()
        flags = self.flags.current
        if is_best_checkpoint(path) or flags.lost or flags.cancel:
            return  # a cancelled job will not resume: no need to store its last state
        metrics: dict[str, Any] = {"step": step, "trained_tokens": int(self.trained_tokens)}
        if "loss" in self.last_train:
            metrics["train_loss"] = self.last_train["loss"]
        if "epoch" in self.last_train:
            metrics["epoch"] = self.last_train["epoch"]
        if "eval_loss" in self.last_eval:
            metrics["valid_loss"] = self.last_eval["eval_loss"]
        checkpoint_id = self.save_checkpoint(step, path, metrics)
        if checkpoint_id is not None:
            self.journal.event(EventType.checkpoint, f"Checkpoint saved at step {step}.",
                               {"step": step, "checkpoint_id": checkpoint_id})

    def should_stop(self) -> bool:
        return self.flags.refresh().stop


def chosen_block(prepared: PreparedModel) -> dict[str, Any] | None:
    """SparseGrad's block selection: the rule and, per projection kind, the block chosen at calibration."""
    block = prepared.basis.stats.get("block") if prepared.basis is not None else None
    return dict(block) if block else None


class PreparedMessages(TrainerCallback):
    """Once the method is installed, tell the job's events what it chose: block sizes and trainable parameters."""

    def __init__(self, journal: JobJournal, model_name: str) -> None:
        self.journal, self.model_name = journal, model_name

    def on_prepared(self, prepared: PreparedModel) -> None:
        spec = prepared.spec
        block = chosen_block(prepared)
        if block:
            chosen = "; ".join(
                f"{kind} {c['r_out']}×{c['r_in']}"
                + (f" (keeps {c['kept_share']:.3f} of the top-k energy on calibration)" if c.get("kept_share") else "")
                for kind, c in block["kinds"].items())
            sizes = {kind: {k: v for k, v in c.items() if k != "grid"} for kind, c in block["kinds"].items()}
            self.journal.event(EventType.message, f"Block selection, {block['rule']}: {chosen}.",
                               {"block": {"rule": block["rule"], "kinds": sizes}})
        self.journal.event(EventType.message,
                           f"Method {spec.type} ({spec.setting} setting) on {self.model_name}: "
                           f"{prepared.trainable_params:,} trainable parameters.",
                           {"method": spec.type, "trainable_params": prepared.trainable_params})
