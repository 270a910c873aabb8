"""A job's tracking integrations (W&B, MLflow): one tracking run per job, fed with what the job records anyway.

* The run belongs to the job, not to the attempt: the W&B run id is the job id (a later attempt resumes it), the
  MLflow run carries the tag ``sparsegrad.job_id`` (a later attempt finds it in its experiment and goes on).
* Parameters once when the run opens: model, job and file ids, seed, task, the resolved method and
  hyperparameters; ``trainable_params`` once the method is installed.
* Metrics: every point the job writes to SQL, with its step, name and value (loss, lr, memory, eval_*, ...);
  ``calibration_*`` points are per calibration pass (W&B's ``calibration/pass`` axis), the rest per optimizer
  step (``train/global_step``).
* When the job ends (succeeded, failed, cancelled or paused) the run is closed with that status; with
  ``log_adapter`` a succeeded job's exported adapter (or model) folder is uploaded first.
* A backend that fails (not configured on this worker, client not installed, server unreachable, store
  unwritable) is switched off for the rest of the attempt with a ``message`` event of level ``warn``; the job
  goes on. The clients are imported only when a job asks for them (``pip install 'sparsegrad[integrations]'``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sparsegrad_service.enums import EventLevel, EventType, JobStatus
from sparsegrad_service.integrations import LABELS, missing_setting
from sparsegrad_service.job_spec import Integration, JobSpec, MlflowEntry, MlflowIntegration, WandbIntegration
from sparsegrad_service.job_store import JobSnapshot
from sparsegrad_service.settings import Settings

from .journal import JobJournal

log = logging.getLogger("sparsegrad.worker.integrations")

MetricRow = tuple[int, str, float]
TRAIN_STEP, CALIBRATION_PASS = "train/global_step", "calibration/pass"
CALIBRATION_PREFIX = "calibration_"
JOB_TAG = "sparsegrad.job_id"
MAX_PARAM_CHARS = 500
MLFLOW_BATCH = 1000
INSTALL_HINT = "pip install 'sparsegrad[integrations]'"
MLFLOW_STATUS = {JobStatus.succeeded: "FINISHED", JobStatus.failed: "FAILED", JobStatus.cancelled: "KILLED"}
"""A finished job's MLflow run status; a paused job's run is ``SCHEDULED`` until a later attempt goes on."""
EXPORT_FOLDERS = ("adapter", "model")
"""Where the trainer exports a finished run inside the attempt's folder (adapter methods, then full FT)."""


def job_params(job: JobSnapshot, spec: JobSpec) -> dict[str, Any]:
    """What the job trains with, nested (W&B's config); :func:`flat` makes MLflow's params of it."""
    task = spec.task.model_dump(mode="json", exclude={"label_names"})
    return {
        "job_id": job.id, "model": job.model, "organization_id": job.tenant_id, "seed": job.seed,
        "training_file": job.training_file.id,
        "validation_file": job.validation_file.id if job.validation_file else None,
        "validation_split": spec.validation_split, "task": task,
        "method": spec.method.model_dump(mode="json"), "hyperparameters": spec.hyperparameters.model_dump(mode="json"),
    }


def flat(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"method": {"density": 0.01}}`` → ``{"method.density": "0.01"}``, values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:MAX_PARAM_CHARS]
    return out


def export_folder(run_dir: Path) -> Path | None:
    return next((run_dir / name for name in EXPORT_FOLDERS if (run_dir / name).is_dir()), None)


class TrackingRun:
    """One backend's run of one job; every method may raise (:class:`JobTracking` guards them)."""

    kind = ""
    log_adapter = False

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def start(self, params: dict[str, Any]) -> dict[str, Any]:
        """Open (or resume) the run; returns what the job's event shows of it (ids, url)."""
        raise NotImplementedError

    def log_params(self, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def log_metrics(self, rows: Sequence[MetricRow]) -> None:
        raise NotImplementedError

    def log_folder(self, folder: Path) -> None:
        raise NotImplementedError

    def finish(self, status: JobStatus, values: dict[str, Any]) -> None:
        raise NotImplementedError


class WandbRun(TrackingRun):
    kind = "wandb"

    def __init__(self, settings: Settings, job: JobSnapshot, config: WandbIntegration) -> None:
        self.settings, self.job, self.config = settings, job, config
        self.log_adapter = config.log_adapter
        self.run: Any = None

    def start(self, params: dict[str, Any]) -> dict[str, Any]:
        import wandb

        settings, job, config = self.settings, self.job, self.config
        key = settings.wandb_api_key.get_secret_value() if settings.wandb_api_key else None
        root = settings.wandb_root
        root.mkdir(parents=True, exist_ok=True)
        client_settings: dict[str, Any] = {"api_key": key, "mode": settings.wandb_mode, "console": "off",
                                           "silent": True, "save_code": False, "disable_git": True}
        if settings.wandb_base_url:
            client_settings["base_url"] = settings.wandb_base_url
        tags = [*config.tags, "sparsegrad/finetune", f"sparsegrad/{job.model}"[:64], f"sparsegrad/{job.id}"]
        self.run = wandb.init(
            project=config.project, entity=config.entity, name=config.name or job.id, id=job.id, resume="allow",
            tags=list(dict.fromkeys(tags)), config=params, dir=root, reinit="create_new", allow_val_change=True,
            settings=client_settings)
        self.run.define_metric(TRAIN_STEP)
        self.run.define_metric(CALIBRATION_PASS)
        self.run.define_metric(f"{CALIBRATION_PREFIX}*", step_metric=CALIBRATION_PASS)
        self.run.define_metric("*", step_metric=TRAIN_STEP)
        return {"run_id": self.run.id, "project": config.project, "entity": self.run.entity or config.entity,
                "url": self.run.url, "mode": settings.wandb_mode, "dir": str(Path(self.run.dir).parent)}

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, rows: Sequence[MetricRow]) -> None:
        for (axis, step), values in _by_step(rows).items():
            self.run.log({**values, axis: step})

    def log_folder(self, folder: Path) -> None:
        import wandb

        artifact = wandb.Artifact(f"{self.job.id}-{folder.name}", type="model",
                                  metadata={"job_id": self.job.id, "model": self.job.model})
        artifact.add_dir(str(folder))
        self.run.log_artifact(artifact)

    def finish(self, status: JobStatus, values: dict[str, Any]) -> None:
        self.run.summary.update({"status": status.value, "fine_tuned_model": values.get("fine_tuned_model")})
        self.run.finish(exit_code=0 if status in (JobStatus.succeeded, JobStatus.paused) else 1)


class MlflowRun(TrackingRun):
    kind = "mlflow"

    def __init__(self, settings: Settings, job: JobSnapshot, config: MlflowIntegration) -> None:
        self.settings, self.job, self.config = settings, job, config
        self.log_adapter = config.log_adapter
        self.experiment = config.experiment or f"{settings.mlflow_experiment}/{job.tenant_id}"
        self.client: Any = None
        self.run_id = ""

    def start(self, params: dict[str, Any]) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        uri = str(self.settings.mlflow_tracking_uri)
        self.client = client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(self.experiment)
        earlier = client.search_runs([experiment_id], f"tags.`{JOB_TAG}` = '{self.job.id}'", max_results=1)
        if earlier:
            self.run_id = earlier[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {JOB_TAG: self.job.id, "sparsegrad.model": self.job.model,
                    "sparsegrad.organization_id": self.job.tenant_id}
            self.run_id = client.create_run(experiment_id, tags=tags,
                                            run_name=self.config.run_name or self.job.id).info.run_id
        self.log_params(params)
        url = f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{self.run_id}" \
            if uri.startswith(("http://", "https://")) else None
        return {"run_id": self.run_id, "experiment": self.experiment, "experiment_id": experiment_id, "url": url}

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat(params).items()])

    def log_metrics(self, rows: Sequence[MetricRow]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for step, name, value in rows]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MLFLOW_BATCH])

    def log_folder(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path=folder.name)

    def finish(self, status: JobStatus, values: dict[str, Any]) -> None:
        self.client.set_tag(self.run_id, "sparsegrad.status", status.value)
        if values.get("fine_tuned_model"):
            self.client.set_tag(self.run_id, "sparsegrad.fine_tuned_model", values["fine_tuned_model"])
        if status in MLFLOW_STATUS:
            self.client.set_terminated(self.run_id, MLFLOW_STATUS[status])
        else:  # paused: a later attempt goes on with this run
            self.client.update_run(self.run_id, status="SCHEDULED")


def _by_step(rows: Iterable[MetricRow]) -> dict[tuple[str, int], dict[str, float]]:
    """Points grouped by (axis, step), in the order they came: one W&B ``log`` call each."""
    groups: dict[tuple[str, int], dict[str, float]] = {}
    for step, name, value in rows:
        axis = CALIBRATION_PASS if name.startswith(CALIBRATION_PREFIX) else TRAIN_STEP
        groups.setdefault((axis, step), {})[name] = value
    return groups


def _run_for(settings: Settings, job: JobSnapshot, entry: Integration) -> TrackingRun:
    if isinstance(entry, MlflowEntry):
        return MlflowRun(settings, job, entry.mlflow)
    return WandbRun(settings, job, entry.wandb)


class JobTracking:
    """The tracking runs of one attempt at one job, each guarded: a failure becomes a warning event and switches
    that backend off; nothing here raises into training."""

    def __init__(self, journal: JobJournal, run_dir: Path) -> None:
        self.journal, self.run_dir = journal, run_dir
        self.runs: list[TrackingRun] = []
        self.finished = False

    @classmethod
    def open(cls, settings: Settings, job: JobSnapshot, spec: JobSpec, journal: JobJournal,
             run_dir: Path) -> JobTracking | None:
        """Start the job's tracking runs (None when it has none); closed when the journal finishes the job."""
        entries: list[Integration] = list(spec.integrations)
        if settings.mlflow_all_jobs and settings.mlflow_tracking_uri and not any(e.type == "mlflow" for e in entries):
            entries.append(MlflowEntry(type="mlflow"))
        if not entries:
            return None
        tracking = cls(journal, run_dir)
        params = job_params(job, spec)
        for entry in entries:
            tracking._start(settings, job, entry, params)
        journal.finish_listeners.append(tracking.finish)
        return tracking

    def _start(self, settings: Settings, job: JobSnapshot, entry: Integration, params: dict[str, Any]) -> None:
        kind, label = entry.type, LABELS[entry.type]
        if (setting := missing_setting(settings, kind)) is not None:
            self._warn(kind, f"{label} logging is off: {setting} is not set on this worker.", None)
            return
        run = _run_for(settings, job, entry)
        try:
            shown = run.start(params)
        except ImportError as exc:
            self._warn(kind, f"{label} logging is off: its client is not installed on this worker "
                       f"({INSTALL_HINT}).", exc)
            return
        except Exception as exc:
            self._warn(kind, f"{label} logging is off: opening the run failed ({_short(exc)}).", exc)
            return
        self.runs.append(run)
        where = f" {shown['url']}" if shown.get("url") else ""
        self.journal.event(EventType.message, f"Logging to {label} run {shown['run_id']}.{where}",
                           {"integration": entry.type, **shown})

    def _warn(self, kind: str, message: str, exc: BaseException | None) -> None:
        log.warning("job %s: %s", self.journal.job_id, message, exc_info=exc)
        data = {"integration": kind, "error": _short(exc) if exc else None}
        if not self.finished:
            self.journal.event(EventType.message, message + " The job goes on without it.", data,
                               level=EventLevel.warn)
            return
        try:  # the job has ended: this worker holds it no more, but its events still say what happened
            self.journal.job_store.add_event(EventType.message, message, data, level=EventLevel.warn)
            self.journal.notify()
        except Exception:
            log.exception("job %s: recording the warning failed", self.journal.job_id)

    def _each(self, what: str, call: Any) -> None:
        for run in list(self.runs):
            try:
                call(run)
            except Exception as exc:
                self.runs.remove(run)
                self._warn(run.kind, f"{run.label} logging stopped: {what} failed ({_short(exc)}).", exc)

    def log_metrics(self, rows: Sequence[MetricRow]) -> None:
        if rows:
            self._each("logging metrics", lambda run: run.log_metrics(rows))

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("logging parameters", lambda run: run.log_params(params))

    def finish(self, status: JobStatus, values: dict[str, Any]) -> None:
        """Close every run with the job's status (uploading the export first where asked and succeeded)."""
        self.finished = True
        folder = export_folder(self.run_dir) if status is JobStatus.succeeded else None
        if folder is not None:
            self._each("uploading the adapter", lambda run: run.log_adapter and run.log_folder(folder))
        self._each("closing the run", lambda run: run.finish(status, values))
        self.runs = []


def _short(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    return text.splitlines()[0][:300] if text else ""
