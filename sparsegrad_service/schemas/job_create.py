"""The body of ``POST /v1/fine_tuning/jobs``: OpenAI's job request plus the SparseGrad task, method and
hyperparameters, every optional field with its default in its description (shown at ``/docs``).

Unknown fields are refused (400 naming them), except what OpenAI clients send: ``"auto"`` hyperparameters (the
default), ``learning_rate_multiplier``, ``method: {"type": "supervised", "supervised": {"hyperparameters": {...}}}``
(the service default method) and ``integrations`` (W&B, and MLflow in the same shape).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

from sparsegrad_contract import defaults as D
from sparsegrad_contract.defaults import JOB_SELECTION, RequestedMethod, Scheduler, Selection, Setting
from sparsegrad_service.job_spec import Integration
from sparsegrad_service.model_names import SUFFIX_CHARACTERS

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 64, 512


class StrictModel(BaseModel):
    """Unknown fields are refused, and so are NaN and infinite numbers (a bound check would call NaN too large)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _auto_to_none(value: Any) -> Any:
    """OpenAI clients send ``"auto"`` for "the service's default"."""
    return None if isinstance(value, str) and value.strip().lower() == "auto" else value


def _auto_number(value: Any) -> Any:
    """``"auto"`` → the default; a boolean is not a number (JSON ``true`` would otherwise pass as 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return _auto_to_none(value)


def _column(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a column name (string) or a 0-based column index (integer)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a column index must be >= 0")
        return value
    if not value.strip():
        raise ValueError("must be a non-empty column name")
    return value


Auto = BeforeValidator(_auto_to_none)
AutoNumber = BeforeValidator(_auto_number)
Column = Annotated[
    str | int, PlainValidator(_column),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 0}]}),
]


class TaskIn(StrictModel):
    """What the model learns and where each part of an example is in the files."""

    type: Literal["classification", "regression", "causal_lm"] | None = Field(
        default=None, description="Default: inferred from the training file: chat JSONL (`messages`) means causal_lm "
                          "(decoder models only), fractional labels regression, anything else classification.")
    text_column: Column = Field(default="text", description="Text field (JSONL key, CSV/TSV header or 0-based index). Default `text`.")
    text_pair_column: Column | None = Field(default=None, description="Second sentence of pair tasks. Default: none.")
    label_column: Column = Field(default="label", description="Label field. Default `label`.")
    messages_column: str = Field(default="messages", min_length=1, description="Chat messages key (causal_lm JSONL). Default `messages`.")
    prompt_column: str = Field(default="prompt", min_length=1, description="Prompt key of prompt/completion records (causal_lm JSONL). Default `prompt`.")
    completion_column: str = Field(default="completion", min_length=1, description="Completion key of prompt/completion records (causal_lm JSONL). Default `completion`.")
    has_header: bool = Field(default=True, description="CSV/TSV files have a header row. Default true; false needs indices.")
    num_labels: int | None = Field(default=None, ge=1, le=100_000, description="Classes (classification). Default: from the training file.")
    label_names: list[str] | None = Field(
        default=None, min_length=1, max_length=100_000,
        description="Class names in class-id order (classification). Default: from the training file.")


class SparseGradParams(StrictModel):
    density: float = Field(default=D.DENSITY, gt=0, le=1, description=f"Share of each MLP weight's rotated gradient entries updated per step, in (0, 1]. Default {D.DENSITY}.")
    calibration_steps: int = Field(default=D.CALIBRATION_STEPS, ge=1, le=1000, description=f"Backward passes that define the HOSVD bases, 1-1000. Default {D.CALIBRATION_STEPS}.")
    selection: Selection = Field(
        default=JOB_SELECTION,
        description="`block`: top-k inside a leading block of the HOSVD bases chosen at calibration (about half the "
        "exact method's step time at equal measured quality; the adapter is also offered as a PEFT LoRA); `dynamic`: "
        "fresh top-k of the whole rotated gradient every step (the paper's exact method); `fixed`: the calibration-time "
        f"support. Default `{JOB_SELECTION.value}`.")
    block_energy_share: float | None = Field(
        default=None, gt=0, le=1, description=f"Block selection: the block keeps at least this share of the top-k gradient energy on calibration, in (0, 1]. Default {D.BLOCK_ENERGY_SHARE}.")
    block_max_cost: float | None = Field(
        default=None, gt=0, le=100, description=f"Block selection: the block's step cost is at most this multiple of a dense weight gradient. Default {D.BLOCK_MAX_COST}.")
    recalibrate_every: int | None = Field(
        default=None, ge=0, le=10_000_000, description="Dynamic selection: recompute the HOSVD bases every N steps "
        "from `calibration_steps` fresh batches (the trained delta is kept exactly; the sparse optimizer's moments "
        f"restart). 0: never. Default {D.JOB_RECALIBRATE_EVERY} with `dynamic` selection, 0 with the others.")


class LoraParams(StrictModel):
    rank: int | None = Field(default=None, ge=1, le=1024, description="LoRA rank, 1-1024. Default: the rank with as many trainable MLP parameters as SparseGrad at `method.sparsegrad.density`.")
    alpha: float | None = Field(default=None, gt=0, le=10_000, description="LoRA alpha. Default `2 * rank`.")
    dropout: float = Field(default=D.LORA_DROPOUT, ge=0, lt=1, description=f"LoRA dropout in [0, 1). Default {D.LORA_DROPOUT}.")


class MePropParams(StrictModel):
    density: float = Field(default=D.DENSITY, gt=0, le=1, description=f"Share of output gradient entries kept, in (0, 1]. Default {D.DENSITY}.")


class Hyperparameters(StrictModel):
    """Training loop settings; absent, null or `"auto"` means the default given for each."""

    n_epochs: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=100, description=f"Passes over the training data, 1-100 (ignored with `max_steps`). Default {D.N_EPOCHS}.")
    batch_size: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=1024, description=f"Rows per micro-batch, 1-1024. Default {D.BATCH_SIZE}.")
    learning_rate: Annotated[float | None, AutoNumber] = Field(default=None, gt=0, le=1, description=f"Peak learning rate in (0, 1]. Default {D.PEFT_LEARNING_RATE:g} in the `peft` setting, {D.LEARNING_RATE:g} in the `paper` one and for full FT.")
    learning_rate_multiplier: Annotated[float | None, AutoNumber] = Field(
        default=None, gt=0, le=1000, description="OpenAI-style: learning_rate = the default learning rate of the method and setting × this. Exclusive with `learning_rate`.")
    sparse_learning_rate: Annotated[float | None, AutoNumber] = Field(default=None, gt=0, le=1, description="Learning rate of the SparseGrad entries. Default: `learning_rate`.")
    max_seq_length: Annotated[int | None, AutoNumber] = Field(default=None, ge=8, le=8192, description=f"Tokens per row after truncation, 8-8192. Default {D.MAX_SEQ_LENGTH}.")
    max_steps: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=10_000_000, description="Total optimizer steps (overrides `n_epochs`). Default: none.")
    gradient_accumulation_steps: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=1024, description=f"Micro-batches per optimizer step. Default {D.GRADIENT_ACCUMULATION_STEPS}.")
    lr_scheduler: Annotated[Scheduler | None, Auto] = Field(default=None, description=f"Schedule after warmup. Default `{D.LR_SCHEDULER.value}`.")
    warmup_ratio: Annotated[float | None, AutoNumber] = Field(default=None, ge=0, lt=1, description=f"Warmup share of the steps in [0, 1). Default {D.WARMUP_RATIO:g}.")
    weight_decay: Annotated[float | None, AutoNumber] = Field(default=None, ge=0, le=10, description=f"AdamW weight decay of dense matrices. Default {D.WEIGHT_DECAY:g}.")
    max_grad_norm: Annotated[float | None, AutoNumber] = Field(default=None, gt=0, le=1e6, description="Clip the gradient norm. Default: no clipping.")
    eval_every: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=10_000_000, description="Evaluate every N steps. Default: before and after training only.")
    early_stopping_patience: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=10_000, description="Stop after N evaluations without improvement. Default: never.")
    checkpoint_every: Annotated[int | None, AutoNumber] = Field(default=None, ge=1, le=10_000_000, description="Steps between resumable checkpoints. Default: the deployment's setting (50).")
    group_by_length: Annotated[bool | None, Auto] = Field(default=None, description=f"Batch rows of similar length (less padding). Default {str(D.GROUP_BY_LENGTH).lower()}.")
    original_share_every: Annotated[int | None, AutoNumber] = Field(
        default=None, ge=0, le=10_000_000, description=f"SparseGrad: every N steps log the top-k energy share in the original basis; 0 turns it off. Default {D.ORIGINAL_SHARE_EVERY}.")
    gradient_checkpointing: Annotated[bool | None, Auto] = Field(
        default=None, description="Recompute activations in the backward instead of keeping them: much less activation memory "
        f"(larger batches or models fit) for about 30% more compute per step. Models without support fail the job. Default {str(D.GRADIENT_CHECKPOINTING).lower()}.")


class SupervisedParams(StrictModel):
    hyperparameters: Hyperparameters | None = Field(default=None, description="As the top-level `hyperparameters`; these win.")


class MethodIn(StrictModel):
    """How the MLP projections train (every other parameter per `setting`)."""

    type: RequestedMethod = Field(
        default=RequestedMethod(D.DEFAULT_METHOD.value),
        description=f"Default `{D.DEFAULT_METHOD.value}`. `supervised` (OpenAI clients) means the default, "
                    f"{D.DEFAULT_METHOD.value}; `dpo` and `reinforcement` are refused.")
    setting: Setting = Field(
        default=D.DEFAULT_SETTING, description=f"`paper`: every non-MLP parameter trains densely; `peft`: only the task head besides the method. Default `{D.DEFAULT_SETTING.value}`.")
    sparsegrad: SparseGradParams | None = Field(default=None, description="SparseGrad parameters (defaults as listed).")
    lora: LoraParams | None = Field(default=None, description="LoRA parameters (defaults as listed).")
    meprop: MePropParams | None = Field(default=None, description="MeProp parameters (defaults as listed).")
    supervised: SupervisedParams | None = Field(default=None, description="OpenAI-style: hyperparameters of a supervised job.")
    dpo: dict[str, Any] | None = Field(default=None, description="Accepted for OpenAI compatibility; DPO is not supported.")
    reinforcement: dict[str, Any] | None = Field(default=None, description="Accepted for OpenAI compatibility; not supported.")


HOLD_OUT_RULE = (f"The share is held out only when it is at least {D.MIN_EVAL_EXAMPLES} examples and leaves at least as "
                 "many to train on; otherwise the job trains on the whole file without evaluation (an event says which).")


class JobCreate(StrictModel):
    """A fine-tuning job request. Only `model` and `training_file` are required."""

    model: str = Field(min_length=1, max_length=200, description=(
        "A base model from `GET /v1/models`, or (continued training) one of your fine-tuned models or checkpoints "
        "(`fine_tuned_model_checkpoint` names): the job starts from its weights."))
    training_file: str = Field(min_length=1, max_length=100, description="Id of an uploaded file (`purpose=fine-tune`).")
    validation_file: str | None = Field(
        default=None, max_length=100, description="Id of an uploaded evaluation file. Default: hold out `validation_split` of the training file. " + HOLD_OUT_RULE)
    task: TaskIn | None = Field(default=None, description="Default: the task and columns the training file validated with on upload.")
    method: MethodIn | None = Field(default=None, description=f"Default: {D.DEFAULT_METHOD.value}, density {D.DENSITY}, {D.CALIBRATION_STEPS} calibration steps, "
                    f"{JOB_SELECTION.value} selection, {D.DEFAULT_SETTING.value} setting.")
    hyperparameters: Hyperparameters | None = Field(default=None, description="Default: every hyperparameter at its default.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description=f"Seed of initialization, data order and dropout. Default {D.SEED}.")
    suffix: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Part of the fine-tuned model's name, `ft:{model}:{organization_id}:{suffix}:{job id}`: 1-64 ASCII "
        "letters, digits, `-`, `_` or `.` (anything else, such as `:`, `/`, spaces or control characters, is refused "
        "rather than changed). Default: none (the name has an empty suffix part).")
    metadata: dict[str, str] | None = Field(
        default=None, description=f"Up to {MAX_METADATA_KEYS} string pairs (keys ≤ {MAX_METADATA_KEY_CHARS}, values ≤ "
        f"{MAX_METADATA_VALUE_CHARS} characters). Default: none.")
    validation_split: float = Field(default=D.VALIDATION_SPLIT, gt=0, le=0.5, description=f"Share of the training file held out for evaluation when no `validation_file` is given, in (0, 0.5]. Default {D.VALIDATION_SPLIT}. " + HOLD_OUT_RULE)
    merge_model: bool = Field(default=False, description="Also produce a merged model artifact. Default false.")
    integrations: list[Integration] | None = Field(
        default=None, description="Tracking runs the job logs its parameters and metrics to, at most one of each type: "
        'OpenAI\'s `{"type": "wandb", "wandb": {"project": ...}}` (needs W&B configured on the server) and '
        '`{"type": "mlflow", "mlflow": {"experiment": ...}}` (needs `SPARSEGRAD_MLFLOW_TRACKING_URI`). Default: none.')

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys are allowed, got {len(value)}")
        for key, item in value.items():
            if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
                raise ValueError(f"key {key!r} must be 1-{MAX_METADATA_KEY_CHARS} characters")
            if len(item) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(f"the value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters")
        return value

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value is not None and (bad := next((c for c in value if c not in SUFFIX_CHARACTERS), None)) is not None:
            raise ValueError(f"{bad!r} at position {value.index(bad)} is not allowed: a suffix is part of the model "
                             "name ft:{model}:{organization_id}:{suffix}:{job id}, so it may only contain ASCII "
                             "letters, digits, '-', '_' and '.'")
        return value

    @field_validator("integrations")
    @classmethod
    def _one_of_each(cls, value: list[Integration] | None) -> list[Integration] | None:
        kinds = [entry.type for entry in value or []]
        if twice := sorted({kind for kind in kinds if kinds.count(kind) > 1}):
            raise ValueError(f"at most one {twice[0]} integration per job")
        return value
