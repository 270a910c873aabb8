"""JobRunner: one attempt at one fine-tuning job, from claiming it to its final status.

claim → heartbeat thread → re-validate the files → load the registered model → restore the last stored
checkpoint (if any) → calibrate / train / evaluate through ``sparsegrad_core`` with
:class:`~worker.callbacks.ServiceCallback` → store the artifacts → ``succeeded``; or ``cancelled`` /
``paused`` when asked, ``failed`` with ``invalid_training_file`` (and similar) for bad input or
``storage_error`` when the artifact store refuses a write, ``out_of_memory`` when an allocation fails,
``training_error`` for anything else. A database that stays unreachable longer than the writes wait for it
(the heartbeat timeout) ends the attempt without a verdict: the reaper requeues the job. A job taken away from this worker (see :mod:`worker.heartbeat`)
ends quietly. The run folder ``<work_dir>/<job_id>/attempt-<n>`` is always deleted: whatever a later
attempt needs is in the artifact store.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import OperationalError
from torch import nn

from sparsegrad_core.recipe import DataTokenizationError, finetune
from sparsegrad_core.training import GradientCheckpointingUnsupported, PeriodicRelease, TrainingCancelled
from sparsegrad_service.enums import EventType, JobStatus
from sparsegrad_service.job_spec import JobSpec
from sparsegrad_service.job_store import JobSnapshot, WorkerJobStore
from sparsegrad_service.live import LiveChannel
from sparsegrad_service.model_resolution import ResolvedModel
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore, StoreError, make_store

from .attempt import Attempt, Outcome, default_worker_id
from .callbacks import PreparedMessages, ServiceCallback
from .checkpoints import KEEP_STORED, restore_checkpoint, upload_checkpoint
from .data import load_job_data
from .device import release_memory, select_device
from .errors import JobError
from .finalize import TrainedRun, complete
from .heartbeat import HeartbeatThread, StopFlags
from .integrations import JobTracking
from .jobspec import method_spec, task_spec, training_arguments
from .journal import JobJournal, finish_job
from .parents import materialize, resolve_job_model

log = logging.getLogger("sparsegrad.worker")
MAX_ERROR_CHARS = 2000


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's refusal (a RuntimeError)."""
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or any(
        text in str(exc) for text in ("can't allocate memory", "not enough memory"))


def failure(exc: BaseException, device: str) -> dict[str, Any]:
    """The job error for an unexpected exception: ``storage_error``, ``out_of_memory`` (with what to change)
    or ``training_error``, with the exception's message."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, StoreError):
        return {"code": "storage_error", "message": message[:MAX_ERROR_CHARS], "param": None}
    if is_out_of_memory(exc):
        advice = (f"The job ran out of memory on {device}. Lower hyperparameters.batch_size or max_seq_length "
                  "(gradient_accumulation_steps keeps the effective batch size). ")
        return {"code": "out_of_memory", "message": (advice + message)[:MAX_ERROR_CHARS],
                "param": "hyperparameters"}
    return {"code": "training_error", "message": message[:MAX_ERROR_CHARS], "param": None}


class JobRunner:
    """Runs job ``job_id`` once: ``JobRunner(settings, job_id).run()``.

    ``store`` replaces the configured artifact store, ``worker_id`` the ``hostname:pid`` default.
    With ``keep_model`` the trained model stays reachable as :attr:`trained_model` (tests).
    """

    def __init__(self, settings: Settings, job_id: str, *, store: ArtifactStore | None = None,
                 worker_id: str | None = None, keep_model: bool = False) -> None:
        self.settings, self.job_id = settings, job_id
        self.store: ArtifactStore = store if store is not None else make_store(settings)
        self.worker_id = worker_id or default_worker_id()
        self.keep_model = keep_model
        self.trained_model: nn.Module | None = None

    # ------------------------------------------------------------------------------------------ attempt
    def run(self) -> Outcome:
        settings = self.settings
        device = select_device(settings.cpu_bf16, settings.cuda_graphs)
        job_store = WorkerJobStore(settings.sql_url, self.job_id, self.worker_id, retry_s=settings.heartbeat_timeout_s)
        job = job_store.claim(device.description)
        if job is None:
            log.info("job %s is not claimable (taken, cancelled, paused or finished); skipping", self.job_id)
            return Outcome.skipped
        try:
            flags = StopFlags(job_store, settings.stop_check_s)
            heartbeat = HeartbeatThread(flags, settings.heartbeat_interval_s)
            run_dir = self._fresh_run_dir(job)
            journal = JobJournal(job_store, flags, LiveChannel(settings), store=self.store,
                                 keep_checkpoints=settings.keep_finished_checkpoints)
        except Exception as exc:  # the job is claimed: never leave it running with nobody on it
            log.exception("job %s: attempt setup failed", job.id)
            message = f"the worker could not set up the run: {exc}"[:MAX_ERROR_CHARS]
            finish_job(job_store, JobStatus.failed, message, self.store, settings.keep_finished_checkpoints,
                       error={"code": "worker_setup_error", "param": None, "message": message})
            return Outcome.failed
        attempt = Attempt(job, job_store, device, run_dir, flags, journal, heartbeat)
        heartbeat.start()
        log.info("job %s: attempt %d of %d on %s", job.id, job.attempt, job.max_attempts, device.description)
        try:
            return self._train(attempt)
        except JobError as exc:
            return self._fail(attempt, exc.as_error())
        except OperationalError as exc:  # the database stayed away longer than the writes wait for it
            log.error("job %s: the database is unreachable (%s); leaving the job to the reaper, which requeues it "
                      "from its last checkpoint", job.id, str(exc).splitlines()[0])
            return Outcome.interrupted
        except Exception as exc:
            if flags.current.lost:
                log.warning("job %s was taken away while failing: %s", job.id, exc)
                return Outcome.lost
            log.exception("job %s failed", job.id)
            return self._fail(attempt, failure(exc, device.description))
        finally:
            heartbeat.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()  # the job's folder, unless something else is in it
            release_memory(device.device)

    def _fresh_run_dir(self, job: JobSnapshot) -> Path:
        """``<work_dir>/<job_id>/attempt-<n>``, empty; folders left by earlier (dead) attempts are removed."""
        job_dir = self.settings.work_dir / job.id
        if job_dir.is_dir():
            for old in job_dir.iterdir():
                shutil.rmtree(old, ignore_errors=True)
        run_dir = job_dir / f"attempt-{job.attempt}"
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    def _train(self, attempt: Attempt) -> Outcome:
        settings, job, journal = self.settings, attempt.job, attempt.journal
        start = resolve_job_model(settings, attempt.job_store)
        try:
            spec = JobSpec.from_stored(job.spec)
        except ValueError as exc:
            raise JobError("invalid_job_spec", f"the stored job spec is invalid: {exc}", "spec") from exc
        data = load_job_data(
            self.store, task_spec(spec), job.training_file, job.validation_file,
            validation_split=spec.validation_split, seed=job.seed, max_bytes=settings.max_upload_bytes,
            max_examples=settings.max_upload_examples,
        )
        try:
            method = method_spec(spec)
            args = training_arguments(spec, seed=job.seed, output_dir=attempt.run_dir,
                                      default_checkpoint_every=settings.checkpoint_every, bf16=attempt.device.bf16,
                                      cuda_graphs=attempt.device.cuda_graphs)
        except (TypeError, ValueError) as exc:
            raise JobError("invalid_hyperparameters", str(exc), "hyperparameters") from exc
        journal.event(EventType.message, *data.describe())
        source = self._start_from(attempt, start)

        resume_from, trained_tokens = None, 0
        stored = attempt.job_store.latest_checkpoint()
        if stored is not None:
            resume_from = restore_checkpoint(self.store, stored, attempt.run_dir)
            attempt.resumed_step, trained_tokens = stored.step, int(stored.metrics.get("trained_tokens") or 0)
            journal.event(EventType.message, f"Resuming from checkpoint at step {stored.step}.",
                          {"step": stored.step, "checkpoint_id": stored.id})

        callback = ServiceCallback(
            journal, attempt.flags, flush_every_s=settings.metrics_flush_s, device=attempt.device.device,
            save_checkpoint=lambda step, path, metrics: self._store_checkpoint(attempt, step, path, metrics),
            trained_tokens=trained_tokens, tracking=JobTracking.open(settings, job, spec, journal, attempt.run_dir),
        )
        try:
            run = finetune(source, data.train, data.eval, method, args,
                           callbacks=[callback, PreparedMessages(journal, job.model),
                                      PeriodicRelease()],
                           resume_from=resume_from,
                           device=attempt.device.device, run_info={"model": job.model, "job_id": job.id})
        except DataTokenizationError as exc:
            raise JobError("invalid_training_file", str(exc), "training_file") from exc
        except TrainingCancelled:
            callback.flush()
            return self._stopped(attempt, step=0, checkpointed=False)
        except GradientCheckpointingUnsupported as exc:
            raise JobError("invalid_hyperparameters", f"{exc} (model {job.model})",
                           "hyperparameters.gradient_checkpointing") from exc
        result = run.result
        callback.flush()
        if result.stopped:
            return self._stopped(attempt, step=result.global_step, checkpointed=result.checkpoint is not None)
        flags = attempt.flags.refresh()
        if flags.lost:
            return Outcome.lost
        if flags.cancel:
            return self._stopped(attempt, step=result.global_step, checkpointed=False)
        if self.keep_model:
            self.trained_model = run.prepared.model
        trained = TrainedRun(source, start.base.name, run.prepared, run.tokenizer, data, args, result, callback,
                             spec.merge_model)
        return complete(self.settings, self.store, attempt, trained)

    # ------------------------------------------------------------------------------------------ pieces
    def _start_from(self, attempt: Attempt, start: ResolvedModel) -> str:
        """The model source training loads: the base model's, or (continued training) the base with the chain of
        the fine-tuned model or checkpoint the job names applied, built in the run folder."""
        if not start.chain:
            return start.base.source
        parent = start.lineage[-1]
        attempt.journal.event(
            EventType.message, f"Continuing from {parent.model} (job {parent.fine_tuning_job_id}): base model "
            f"{start.base.name} with {len(start.chain)} stored weight archive(s) applied.",
            {"lineage": [asdict(entry) for entry in start.lineage]})
        return materialize(self.store, start, attempt.run_dir / "parent")

    def _store_checkpoint(self, attempt: Attempt, step: int, path: Path, metrics: dict[str, Any]) -> str | None:
        keep = max(KEEP_STORED, self.settings.keep_finished_checkpoints)  # the newest become models if it succeeds
        stored = upload_checkpoint(attempt.job_store, self.store, step, path, attempt.run_dir / ".upload", metrics,
                                   keep)
        if stored is None:
            attempt.flags.set(lost=True)
            return None
        return stored.id

    def _stopped(self, attempt: Attempt, *, step: int, checkpointed: bool) -> Outcome:
        flags = attempt.flags.current
        if flags.lost:
            return Outcome.lost
        attempt.heartbeat.stop()
        if flags.cancel:
            attempt.journal.finish(JobStatus.cancelled, f"Job cancelled at step {step}.")
            return Outcome.cancelled
        if checkpointed:
            message = f"Job paused at step {step}; resuming continues from the checkpoint at step {step}."
        elif attempt.resumed_step is not None:
            message = f"Job paused; resuming continues from the checkpoint at step {attempt.resumed_step}."
        else:
            message = "Job paused before training started; resuming starts it from the beginning."
        attempt.journal.finish(JobStatus.paused, message)
        return Outcome.paused

    def _fail(self, attempt: Attempt, error: dict[str, Any]) -> Outcome:
        attempt.heartbeat.stop()
        if attempt.journal.finish(JobStatus.failed, str(error["message"]), error=error):
            return Outcome.failed
        return Outcome.lost
