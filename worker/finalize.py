"""Close a completed training run: store its artifacts, write the job summary, mark it succeeded.

The trainer has already evaluated and exported (``<run>/adapter`` or ``<run>/model``). Here: the
``saving`` phase, the artifacts (see :mod:`worker.artifacts`), the newest checkpoints as models (see
:func:`worker.checkpoints.store_checkpoint_models`), ``Job.summary``, ``fine_tuned_model`` (OpenAI's
``ft:{base}:{org}:{suffix}:{job_id}`` with the root base model, see :mod:`sparsegrad_service.model_names`),
``trained_tokens``, then ``succeeded`` and a final
message. Nothing is written once the job is no longer this worker's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from sparsegrad_core.methods import PreparedModel, lora_export_dir
from sparsegrad_core.recipe import merge
from sparsegrad_core.training import TrainingArguments, TrainResult
from sparsegrad_core.training.export import read_training_info
from sparsegrad_core.training.telemetry import json_safe
from sparsegrad_service.allocator import process_allocator
from sparsegrad_service.enums import ArtifactKind, EventType, JobStatus
from sparsegrad_service.job_store import StoredArtifact
from sparsegrad_service.model_names import fine_tuned_model_name
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore

from .artifacts import discard_artifacts, store_folder, store_metrics
from .attempt import Attempt, Outcome
from .callbacks import ServiceCallback
from .checkpoints import store_checkpoint_models
from .data import JobData
from .probe import reference_outputs

SUMMARY_KEYS = (
    "method", "setting", "task", "model", "before", "after", "best", "trainable_params", "total_params", "steps",
    "total_steps", "epochs", "early_stopped", "train_time_s", "calibration_time_s", "train_examples",
    "eval_examples", "peak_memory_mb", "peak_memory_definition",
)


@dataclass
class TrainedRun:
    """What a completed training run left for finalization."""

    model_source: str
    """What training loaded: the base model's source, or the folder of the model it continued from."""
    base_name: str
    """The root base model's name (the ``{base}`` of the fine-tuned model's name)."""
    prepared: PreparedModel
    tokenizer: PreTrainedTokenizerBase
    data: JobData
    args: TrainingArguments
    result: TrainResult
    callback: ServiceCallback
    merge_model: bool
    """The job asked for a merged model too."""


def _artifact_event(attempt: Attempt, artifact: StoredArtifact) -> None:
    attempt.journal.event(
        EventType.message, f"Saved {artifact.kind} artifact {artifact.filename} ({artifact.bytes:,} bytes).",
        {"artifact_id": artifact.id, "kind": artifact.kind.value, "bytes": artifact.bytes, "sha256": artifact.sha256},
    )


def _interrupted(attempt: Attempt) -> Outcome | None:
    """``lost`` or ``cancelled`` when saving must stop before the next artifact; None to go on."""
    flags = attempt.flags.refresh()
    if flags.lost or attempt.journal.lost:
        return Outcome.lost
    return Outcome.cancelled if flags.cancel else None


def _store_outputs(settings: Settings, store: ArtifactStore, attempt: Attempt, run: TrainedRun,
                   stored: list[StoredArtifact]) -> Outcome | None:
    """Store every artifact (each appended to ``stored``); stops with ``lost`` or ``cancelled`` as soon as the
    job is either."""
    job_store = attempt.job_store
    export_dir = run.result.export_dir
    assert export_dir is not None, "the trainer exports completed runs (save_final)"
    scratch = attempt.run_dir / ".artifacts"
    is_adapter = run.prepared.method.exports_adapter
    kind = ArtifactKind.adapter if is_adapter else ArtifactKind.merged_model
    if stop := _interrupted(attempt):
        return stop
    stored.append(store_folder(job_store, store, kind, export_dir, scratch))
    _artifact_event(attempt, stored[-1])
    lora_dir = lora_export_dir(export_dir)
    if lora_dir.is_dir():  # block selection: the adapter as a standard PEFT LoRA too
        stored.append(store_folder(job_store, store, ArtifactKind.lora, lora_dir, scratch))
        _artifact_event(attempt, stored[-1])
        if stop := _interrupted(attempt):
            return stop
    elif error := read_training_info(export_dir).get("lora_export_error"):
        attempt.journal.event(EventType.message, f"No LoRA-format adapter: {error}")
    if is_adapter and run.merge_model:
        merged = attempt.run_dir / "merged"
        merge(run.model_source, export_dir, merged)
        if stop := _interrupted(attempt):
            return stop
        stored.append(store_folder(job_store, store, ArtifactKind.merged_model, merged, scratch))
        _artifact_event(attempt, stored[-1])
    if stop := _interrupted(attempt):
        return stop
    kept = store_checkpoint_models(job_store, store, run.prepared, run.tokenizer, export_dir, run.result.global_step,
                                   settings.keep_finished_checkpoints, scratch, _final_metrics(run))
    if kept:
        attempt.journal.event(EventType.message, f"Checkpoints kept as models: steps {', '.join(map(str, kept))}.",
                              {"steps": kept})
    run.callback.flush()
    if stop := _interrupted(attempt):
        return stop
    stored.append(store_metrics(job_store, store))
    _artifact_event(attempt, stored[-1])
    return None


def _final_metrics(run: TrainedRun) -> dict[str, Any]:
    """The final step's checkpoint metrics, as the periodic checkpoints record theirs."""
    metrics: dict[str, Any] = {"step": run.result.global_step, "trained_tokens": int(run.callback.trained_tokens)}
    if "loss" in run.callback.last_train:
        metrics["train_loss"] = run.callback.last_train["loss"]
    if "eval_loss" in (run.result.final_eval or {}):
        metrics["valid_loss"] = (run.result.final_eval or {})["eval_loss"]
    return json_safe(metrics)  # type: ignore[no-any-return]


def _summary(attempt: Attempt, run: TrainedRun) -> dict[str, Any]:
    summary = {k: run.result.summary.get(k) for k in SUMMARY_KEYS if k in run.result.summary}
    summary.update(
        device=attempt.device.description, precision="bf16 autocast" if run.args.bf16 else "fp32",
        cuda_graphs=run.result.summary.get("cuda_graphs"), allocator=process_allocator(),
        eval_source=run.data.eval_source, attempts=attempt.job.attempt,
        **run.callback.insight,
        probe=reference_outputs(run.prepared.model, run.tokenizer, run.data.eval or run.data.train,
                                run.args.max_seq_length),
    )
    return json_safe(summary)  # type: ignore[no-any-return]


def _final_message(run: TrainedRun, name: str) -> str:
    before, after = run.result.before_eval or {}, run.result.final_eval or {}
    key = next((k for k in ("eval_accuracy", "eval_pearson", "eval_loss") if k in after), None)
    change = ""
    if key is not None and math.isfinite(after[key]):
        start = before.get(key)
        shown = f"{start:.4f} → " if start is not None and math.isfinite(start) else ""
        change = f"; {key} {shown}{after[key]:.4f}"
    return (f"Fine-tuning job succeeded: {run.result.global_step} steps in {run.result.train_time_s:.1f} s of "
            f"training{change}. Fine-tuned model: {name}.")


def complete(settings: Settings, store: ArtifactStore, attempt: Attempt, run: TrainedRun) -> Outcome:
    """Save the run and mark the job succeeded. A pause that arrives now is void (training is over); a cancel
    wins until the job is marked succeeded, and leaves no artifact behind."""
    run.callback.enter_phase("saving")
    if attempt.flags.refresh().pause:
        attempt.journal.event(EventType.message,
                              "Training had finished when the pause arrived; completing the job instead.")
    summary = _summary(attempt, run)
    stored: list[StoredArtifact] = []
    stop = _store_outputs(settings, store, attempt, run, stored)
    if stop == Outcome.cancelled:
        discard_artifacts(attempt.job_store, store, stored)
        attempt.heartbeat.stop()
        removed = f"; its {len(stored)} stored artifact(s) were removed" if stored else ""
        final = attempt.journal.finish(JobStatus.cancelled, f"Job cancelled while saving{removed}.")
        return Outcome.cancelled if final else Outcome.lost
    if stop is not None:
        return stop
    job = attempt.job
    name = fine_tuned_model_name(run.base_name, job.tenant_id, job.suffix, job.id)
    attempt.heartbeat.stop()
    final = attempt.journal.finish(
        JobStatus.succeeded, _final_message(run, name), fine_tuned_model=name, summary=summary,
        trained_tokens=int(run.callback.trained_tokens), progress=1.0, step=run.result.global_step,
        total_steps=run.result.total_steps,
    )
    if final == JobStatus.cancelled:  # the cancel came after the last artifact; finish dropped the rows
        discard_artifacts(attempt.job_store, store, stored)
        return Outcome.cancelled
    return Outcome.succeeded if final else Outcome.lost
