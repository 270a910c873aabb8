"""What the job routes answer: the job object (OpenAI's fine-tuning job plus progress fields), its events,
metrics, checkpoints and artifacts, and their lists. Timestamps are unix seconds (null when unset)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from sparsegrad_contract.defaults import default_learning_rate
from sparsegrad_service.job_spec import Integration, MethodConfig, ModelRef, ResolvedHyperparameters, TaskSpec


class PublicHyperparameters(ResolvedHyperparameters):
    """Every hyperparameter the job runs with, and OpenAI's ``learning_rate_multiplier`` it amounts to."""

    learning_rate_multiplier: float = Field(description=(
        "OpenAI's multiplier: `learning_rate` over the default learning rate of the job's method and setting "
        "(1.0 for a job that set none)."))

    @classmethod
    def of(cls, hyperparameters: ResolvedHyperparameters, method: MethodConfig) -> PublicHyperparameters:
        """The public form of a job's resolved hyperparameters, its multiplier relative to ``method``'s default."""
        base = default_learning_rate(method.type, method.setting)
        return cls(**dict(hyperparameters), learning_rate_multiplier=hyperparameters.learning_rate / base)


class JobError(BaseModel):
    code: str | None
    message: str
    param: str | None = None


class JobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    status: str = Field(description="validating_files, queued, running, paused, cancelling, succeeded, failed or cancelled.")
    model: str = Field(description="What the job fine-tunes: a base model, or (continued training) one of your "
                       "fine-tuned models or checkpoints.")
    lineage: list[ModelRef] = Field(default_factory=list, description=(
        "The models the job starts from, the root base model first and `model` last, each with the job that made "
        "it and the checkpoint step; just `model` when it is a base model. The fine-tuned model is named after the "
        "root base model."))
    created_at: int
    started_at: int | None
    finished_at: int | None
    error: JobError | None
    method: dict[str, Any] = Field(description='What the job trains with: `{"type": T, T: {parameters}, "setting": "paper"|"peft"}`, '
                                   'every parameter resolved (`supervised` is the default method).')
    hyperparameters: PublicHyperparameters = Field(description="Every hyperparameter, defaults filled in.")
    requested: dict[str, Any] | None = Field(
        default=None, description="`method` and `hyperparameters` as the request gave them (fields it left out are "
        "absent; null stands for `auto`); null for jobs created before this was recorded.")
    training_file: str
    validation_file: str | None
    trained_tokens: int | None
    result_files: list[str] = Field(
        description="The job's result files, files of the Files API (purpose `fine-tune-results`): the metrics CSV in "
        "OpenAI's result-file columns and the adapter, LoRA and merged-model archives; also `GET /v1/artifacts/{id}`.")
    fine_tuned_model: str | None
    estimated_finish: int | None
    metadata: dict[str, str] | None
    seed: int
    suffix: str | None
    organization_id: str
    integrations: list[Integration] = Field(default_factory=list, description="The tracking integrations the job "
                                            "logs to, as requested; their runs are named in the job's events.")
    phase: str | None = Field(description="While running: calibrating, training, evaluating or saving.")
    progress: float = Field(description="0-1: calibration is the first 5%, training 5-95%, evaluation and saving the rest.")
    queue_position: int | None = Field(description="1 + queued jobs ahead of this one (all tenants); null unless queued.")
    task: TaskSpec = Field(description="Task type and column mapping, with num_labels/label_names.")
    attempts: int
    step: int
    total_steps: int | None
    summary: dict[str, Any] | None = Field(
        description="Results: before/after evaluation, trainable parameters, steps, timings. The method insight "
        "(spectra, block sizes, reference outputs) is at `GET /v1/fine_tuning/jobs/{id}/insight`.")
    pause_requested: bool = Field(description="A pause was asked for and the running job has not reached it yet.")
    validation_split: float = Field(description="Share of the training file held out when there is no validation_file (0: none).")
    merge_model: bool = Field(description="The job also produces a merged_model artifact.")


class JobsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool


class JobEventPublic(BaseModel):
    id: str = Field(description="`ftevent-<seq>`; the seq orders events and resumes streams.")
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str = Field(description="message, phase, metrics, checkpoint or error.")
    data: dict[str, Any] | None


class JobEventsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventPublic]
    has_more: bool


class MetricPointPublic(BaseModel):
    step: int
    name: str
    value: float
    created_at: int


class MetricsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[MetricPointPublic]
    names: list[str] = Field(description="Every metric name the job has recorded.")
    has_more: bool


class CheckpointPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str | None = Field(description=(
        "The checkpoint's model name, `<fine-tuned model>:ckpt-step-<N>`: usable as `model` for inference and for "
        "a new job (continued training). Null while it is only a resume point (its job has not succeeded)."))
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int
    resumable: bool = Field(description="The job can resume from it (a paused or running job's checkpoint).")
    format: Literal["adapter", "model"] | None = Field(
        default=None, description="What the content route downloads: `adapter` (an adapter archive over the "
        "model the job trained from, as the job's adapter artifact) or `model` (the whole model); null: no model.")
    bytes: int | None = Field(default=None, description="Size of the downloadable model archive.")
    sha256: str | None = Field(default=None, description="Its SHA-256 (also the download's `X-Content-SHA256`).")


class CheckpointsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointPublic]
    has_more: bool
    first_id: str | None
    last_id: str | None


class ArtifactPublic(BaseModel):
    id: str
    object: Literal["artifact"] = "artifact"
    kind: str = Field(description="adapter, merged_model or metrics.")
    filename: str
    bytes: int
    sha256: str
    created_at: int
    fine_tuning_job_id: str


class ArtifactsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ArtifactPublic]
    has_more: bool = False


class JobDeleted(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    deleted: bool = True
