"""Job statuses, phases, event types and artifact kinds (strings in SQL and JSON)."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    paused = "paused"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE_STATUSES = frozenset({JobStatus.queued, JobStatus.running, JobStatus.cancelling})


class JobPhase(StrEnum):
    calibrating = "calibrating"
    training = "training"
    evaluating = "evaluating"
    saving = "saving"


class EventType(StrEnum):
    message = "message"
    phase = "phase"
    metrics = "metrics"
    checkpoint = "checkpoint"
    error = "error"


class EventLevel(StrEnum):
    info = "info"
    warn = "warn"
    error = "error"


class ArtifactKind(StrEnum):
    adapter = "adapter"
    lora = "lora"  # a block-selection SparseGrad adapter as a standard PEFT LoRA adapter
    merged_model = "merged_model"
    metrics = "metrics"
