"""The stored job spec: one typed, versioned contract between the API (which resolves a request into it) and the
worker (which converts it once into library objects). Torch-free; every default comes from
:mod:`sparsegrad_contract.defaults`.

``Job.spec`` holds ``JobSpec.model_dump(mode="json")``. :meth:`JobSpec.from_stored` reads every version: a spec
without ``version`` is version 1 (method parameters in per-method sections, OpenAI's ``"auto"`` allowed for a
default, values missing from older releases), upgraded here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparsegrad_contract import defaults as D
from sparsegrad_contract.defaults import MethodType, Scheduler, Selection, Setting, resolve_method
from sparsegrad_data import ColumnMapping, TaskType

SPEC_VERSION: Literal[2] = 2
_COLUMNS = ColumnMapping()  # the column names a task uses unless told otherwise


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Spec):
    """What the files hold and where each part of an example is."""

    type: TaskType = TaskType.CLASSIFICATION
    text_column: str | int = _COLUMNS.text
    text_pair_column: str | int | None = _COLUMNS.text_pair
    label_column: str | int = _COLUMNS.label
    messages_column: str = _COLUMNS.messages
    prompt_column: str = _COLUMNS.prompt
    completion_column: str = _COLUMNS.completion
    has_header: bool = _COLUMNS.has_header
    num_labels: int | None = None
    label_names: list[str] | None = None

    def mapping(self) -> ColumnMapping:
        return ColumnMapping(text=self.text_column, text_pair=self.text_pair_column, label=self.label_column,
                             messages=self.messages_column, prompt=self.prompt_column,
                             completion=self.completion_column, has_header=self.has_header)


class _Method(_Spec):
    setting: Setting = D.DEFAULT_SETTING


class SparseGradMethod(_Method):
    type: Literal[MethodType.sparsegrad] = MethodType.sparsegrad
    density: float = D.DENSITY
    calibration_steps: int = D.CALIBRATION_STEPS
    selection: Selection = D.JOB_SELECTION
    block_energy_share: float = D.BLOCK_ENERGY_SHARE
    block_max_cost: float = D.BLOCK_MAX_COST
    recalibrate_every: int = 0


class LoraMethod(_Method):
    type: Literal[MethodType.lora] = MethodType.lora
    rank: int | None = None
    """None: as many trainable MLP parameters as SparseGrad at ``density``."""
    alpha: float | None = None
    """None: ``2 × rank``."""
    dropout: float = D.LORA_DROPOUT
    density: float = D.DENSITY


class MePropMethod(_Method):
    type: Literal[MethodType.meprop] = MethodType.meprop
    density: float = D.DENSITY


class FullMethod(_Method):
    type: Literal[MethodType.full] = MethodType.full


MethodConfig = Annotated[SparseGradMethod | LoraMethod | MePropMethod | FullMethod, Field(discriminator="type")]


class ResolvedHyperparameters(_Spec):
    """The training loop, every value resolved."""

    n_epochs: int = D.N_EPOCHS
    batch_size: int = D.BATCH_SIZE
    learning_rate: float = D.LEARNING_RATE
    sparse_learning_rate: float | None = None
    max_seq_length: int = D.MAX_SEQ_LENGTH
    max_steps: int | None = None
    gradient_accumulation_steps: int = D.GRADIENT_ACCUMULATION_STEPS
    lr_scheduler: Scheduler = D.LR_SCHEDULER
    warmup_ratio: float = D.WARMUP_RATIO
    weight_decay: float = D.WEIGHT_DECAY
    max_grad_norm: float | None = None
    eval_every: int | None = None
    early_stopping_patience: int | None = None
    checkpoint_every: int | None = None
    """None: the deployment's ``Settings.checkpoint_every``."""
    group_by_length: bool = D.GROUP_BY_LENGTH
    original_share_every: int | None = D.ORIGINAL_SHARE_EVERY
    """None: off."""
    gradient_checkpointing: bool = D.GRADIENT_CHECKPOINTING


WANDB_NAME_FORBIDDEN = "/\\#?%:"
"""Characters W&B refuses in project and entity names."""
MAX_TRACKING_TAGS, MAX_TRACKING_TAG_CHARS = 20, 64


class WandbIntegration(_Spec):
    """OpenAI's ``wandb`` integration: the W&B run the job's metrics go to."""

    project: str = Field(min_length=1, max_length=128, description="W&B project of the run (created if missing).")
    name: str | None = Field(default=None, min_length=1, max_length=128,
                             description="Display name of the run. Default: the job id.")
    entity: str | None = Field(default=None, min_length=1, max_length=128,
                               description="W&B team or user. Default: the server's W&B key's default entity.")
    tags: list[str] = Field(
        default_factory=list, max_length=MAX_TRACKING_TAGS,
        description=f"Up to {MAX_TRACKING_TAGS} tags of 1-{MAX_TRACKING_TAG_CHARS} characters, besides the service's "
        "`sparsegrad/finetune`, `sparsegrad/{model}` and `sparsegrad/{job id}`. Default: none.")
    log_adapter: bool = Field(
        default=False, description="Also upload the trained adapter (the whole model for method `full`) to the run "
        "as an artifact once the job succeeds. Default false (adapters of large models are large).")

    @field_validator("project", "entity")
    @classmethod
    def _wandb_name(cls, value: str | None) -> str | None:
        if value is not None and (bad := next((c for c in value if c in WANDB_NAME_FORBIDDEN), None)):
            raise ValueError(f"{bad!r} is not allowed in a W&B name (nor any of {WANDB_NAME_FORBIDDEN!r})")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not 1 <= len(tag) <= MAX_TRACKING_TAG_CHARS:
                raise ValueError(f"tag {tag[:80]!r} must be 1-{MAX_TRACKING_TAG_CHARS} characters")
        return value


class MlflowIntegration(_Spec):
    """The MLflow run the job's metrics go to, on the server's MLflow tracking server."""

    experiment: str | None = Field(
        default=None, min_length=1, max_length=500,
        description="MLflow experiment (created if missing). Default: `{prefix}/{organization_id}`, the prefix "
        "being the server's `SPARSEGRAD_MLFLOW_EXPERIMENT`.")
    run_name: str | None = Field(default=None, min_length=1, max_length=250,
                                 description="Name of the run. Default: the job id.")
    log_adapter: bool = Field(
        default=False, description="Also upload the trained adapter (the whole model for method `full`) to the run "
        "as artifacts once the job succeeds. Default false.")


class WandbEntry(_Spec):
    type: Literal["wandb"]
    wandb: WandbIntegration


class MlflowEntry(_Spec):
    type: Literal["mlflow"]
    mlflow: MlflowIntegration = MlflowIntegration()


Integration = Annotated[WandbEntry | MlflowEntry, Field(discriminator="type")]
"""One tracking integration of a job: OpenAI's ``{"type": "wandb", "wandb": {...}}``, or this service's
``{"type": "mlflow", "mlflow": {...}}`` (same shape)."""


class ModelRef(_Spec):
    """One model of a job's lineage: its name, the job that made it (None: a base model), the checkpoint's step."""

    model: str
    fine_tuning_job_id: str | None = None
    step: int | None = None


class JobSpec(_Spec):
    """Everything the worker needs to know of a job besides its files, model, seed and suffix."""

    version: Literal[2] = SPEC_VERSION
    task: TaskSpec = TaskSpec()
    method: MethodConfig = SparseGradMethod()
    hyperparameters: ResolvedHyperparameters = ResolvedHyperparameters()
    validation_split: float = D.VALIDATION_SPLIT
    """Share of the training file held out when the job names no validation file; 0: none."""
    merge_model: bool = False
    integrations: list[Integration] = Field(default_factory=list)
    """Tracking runs the worker logs the job to (see :mod:`worker.integrations`)."""
    requested: dict[str, Any] | None = None
    """The request's ``method`` and ``hyperparameters`` as given (JSON, unset fields left out; null stands for
    ``"auto"``), echoed in the job object next to what they resolved to. Not read by the worker."""
    lineage: list[ModelRef] | None = None
    """Continued training: the models the job starts from as they were when it was created, the root base model
    first and the fine-tuned model or checkpoint the job names (its ``model``) last; None when ``model`` is a base
    model. Shown in the job object; not read by the worker (it resolves ``model`` itself)."""

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> JobSpec:
        """The spec of a ``Job.spec`` of any version; raises ``ValueError`` (pydantic's, naming the field)."""
        stored = dict(stored or {})
        if stored.get("version") is None:
            stored = _upgrade_v1(stored)
        return cls.model_validate(stored)

    def stored(self) -> dict[str, Any]:
        """What ``Job.spec`` holds."""
        return self.model_dump(mode="json")


def _given(section: Any) -> dict[str, Any]:
    """A version-1 section without its null and ``"auto"`` values (both meant "the default")."""
    if not isinstance(section, dict):
        return {}
    return {k: v for k, v in section.items() if v is not None and v != "auto"}


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    value = spec.get(name)
    return value if isinstance(value, dict) else {}


def _upgrade_v1(spec: dict[str, Any]) -> dict[str, Any]:
    """Version 1: ``method = {type, setting, sparsegrad: {...}, lora: {...}, meprop: {...}}``; a method without
    ``setting`` ran the paper setting (the default then); a SparseGrad section without ``selection`` predates
    selections and ran the exact method; a hyperparameter stored as null kept the
    default, except those whose null has a meaning (``original_share_every``: off; ``checkpoint_every``: the
    deployment's; the optional ones: not set)."""
    method = _section(spec, "method")
    kind = resolve_method(str(method.get("type") or D.DEFAULT_METHOD.value))
    params = _given(method.get(kind.value))
    if kind is MethodType.sparsegrad:
        params.setdefault("selection", D.STORED_SPEC_SELECTION.value)
    sg_density = _given(method.get(MethodType.sparsegrad.value)).get("density")
    if kind is MethodType.lora and sg_density is not None:
        params.setdefault("density", sg_density)
    hp_in = _section(spec, "hyperparameters")
    hp = _given(hp_in)
    for nullable in ("original_share_every", "checkpoint_every", "max_steps", "sparse_learning_rate",
                     "max_grad_norm", "eval_every", "early_stopping_patience"):
        if nullable in hp_in and hp_in[nullable] is None:
            hp[nullable] = None
    task_in = _section(spec, "task")
    task = _given(task_in)
    if "text_pair_column" in task_in:
        task["text_pair_column"] = task_in["text_pair_column"]
    return {
        "version": SPEC_VERSION,
        "task": task,
        "method": {"type": kind.value, "setting": _given(method).get("setting", D.STORED_SPEC_SETTING.value), **params},
        "hyperparameters": hp,
        "validation_split": spec.get("validation_split") or 0.0,
        "merge_model": bool(spec.get("merge_model", False)),
    }
