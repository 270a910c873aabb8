"""The body of ``POST /v1/fine_tuning/jobs``: OpenAI's job request plus the SparseGrad task, method and
hyperparameters, every optional field with its default in its description (shown at ``/docs``).

Unknown fields are refused (400 naming them), except what OpenAI clients send: ``integrations`` (null or
empty), ``"auto"`` hyperparameters (the default), ``learning_rate_multiplier`` and
``method: {"type": "supervised", "supervised": {"hyperparameters": {...}}}`` (the service default method).
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

DEFAULT_SEED = 42
DEFAULT_LEARNING_RATE = 1e-4
HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    "n_epochs": 3, "batch_size": 16, "learning_rate": DEFAULT_LEARNING_RATE, "sparse_learning_rate": None,
    "max_seq_length": 128, "max_steps": None, "gradient_accumulation_steps": 1, "lr_scheduler": "constant",
    "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": None, "eval_every": None,
    "early_stopping_patience": None, "checkpoint_every": None, "group_by_length": True, "original_share_every": 25,
    "gradient_checkpointing": False,
}
"""Normalized defaults (``checkpoint_every`` None here means ``Settings.checkpoint_every``)."""

MAX_METADATA_KEYS = 16


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _auto_to_none(value: Any) -> Any:
    """OpenAI clients send ``"auto"`` for "the service's default"."""
    return None if isinstance(value, str) and value.strip().lower() == "auto" else value


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
    has_header: bool = Field(default=True, description="CSV/TSV files have a header row. Default true; false needs indices.")
    num_labels: int | None = Field(default=None, ge=1, le=100_000, description="Classes (classification). Default: from the training file.")
    label_names: list[str] | None = Field(
        default=None, min_length=1, max_length=100_000,
        description="Class names in class-id order (classification). Default: from the training file.")


class SparseGradParams(StrictModel):
    density: float = Field(default=0.01, gt=0, le=1, description="Share of each MLP weight's rotated gradient entries updated per step, in (0, 1]. Default 0.01.")
    calibration_steps: int = Field(default=10, ge=1, le=1000, description="Backward passes that define the HOSVD bases, 1-1000. Default 10.")
    selection: Literal["dynamic", "fixed", "block"] = Field(
        default="block",  # sparsegrad_core.config.JOB_SELECTION (the API does not import the library; a test ties them)
        description="`block`: top-k inside a leading block of the HOSVD bases chosen at calibration (about half the "
        "exact method's step time at equal measured quality; the adapter is also offered as a PEFT LoRA); `dynamic`: "
        "fresh top-k of the whole rotated gradient every step (the paper's exact method); `fixed`: the calibration-time "
        "support. Default `block`.")
    block_energy_share: float | None = Field(
        default=None, gt=0, le=1, description="Block selection: the block keeps at least this share of the top-k gradient energy on calibration, in (0, 1]. Default: the library's `SparseGradConfig.block_energy_share`.")
    block_max_cost: float | None = Field(
        default=None, gt=0, le=100, description="Block selection: the block's step cost is at most this multiple of a dense weight gradient. Default: the library's `SparseGradConfig.block_max_cost`.")


class LoraParams(StrictModel):
    rank: int | None = Field(default=None, ge=1, le=1024, description="LoRA rank, 1-1024. Default: the rank with as many trainable MLP parameters as SparseGrad at `method.sparsegrad.density`.")
    alpha: float | None = Field(default=None, gt=0, le=10_000, description="LoRA alpha. Default `2 * rank`.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout in [0, 1). Default 0.")


class MePropParams(StrictModel):
    density: float = Field(default=0.01, gt=0, le=1, description="Share of output gradient entries kept, in (0, 1]. Default 0.01.")


class Hyperparameters(StrictModel):
    """Training loop settings; absent, null or `"auto"` means the default given for each."""

    n_epochs: Annotated[int | None, Auto] = Field(default=None, ge=1, le=100, description="Passes over the training data, 1-100 (ignored with `max_steps`). Default 3.")
    batch_size: Annotated[int | None, Auto] = Field(default=None, ge=1, le=1024, description="Rows per micro-batch, 1-1024. Default 16.")
    learning_rate: Annotated[float | None, Auto] = Field(default=None, gt=0, le=1, description="Peak learning rate in (0, 1]. Default 1e-4.")
    learning_rate_multiplier: Annotated[float | None, Auto] = Field(
        default=None, gt=0, le=1000, description="OpenAI-style: learning_rate = 1e-4 × this. Exclusive with `learning_rate`.")
    sparse_learning_rate: Annotated[float | None, Auto] = Field(default=None, gt=0, le=1, description="Learning rate of the SparseGrad entries. Default: `learning_rate`.")
    max_seq_length: Annotated[int | None, Auto] = Field(default=None, ge=8, le=8192, description="Tokens per row after truncation, 8-8192. Default 128.")
    max_steps: Annotated[int | None, Auto] = Field(default=None, ge=1, le=10_000_000, description="Total optimizer steps (overrides `n_epochs`). Default: none.")
    gradient_accumulation_steps: Annotated[int | None, Auto] = Field(default=None, ge=1, le=1024, description="Micro-batches per optimizer step. Default 1.")
    lr_scheduler: Annotated[Literal["constant", "linear", "cosine"] | None, Auto] = Field(default=None, description="Schedule after warmup. Default `constant`.")
    warmup_ratio: Annotated[float | None, Auto] = Field(default=None, ge=0, lt=1, description="Warmup share of the steps in [0, 1). Default 0.")
    weight_decay: Annotated[float | None, Auto] = Field(default=None, ge=0, le=10, description="AdamW weight decay of dense matrices. Default 0.")
    max_grad_norm: Annotated[float | None, Auto] = Field(default=None, gt=0, le=1e6, description="Clip the gradient norm. Default: no clipping.")
    eval_every: Annotated[int | None, Auto] = Field(default=None, ge=1, le=10_000_000, description="Evaluate every N steps. Default: before and after training only.")
    early_stopping_patience: Annotated[int | None, Auto] = Field(default=None, ge=1, le=10_000, description="Stop after N evaluations without improvement. Default: never.")
    checkpoint_every: Annotated[int | None, Auto] = Field(default=None, ge=1, le=10_000_000, description="Steps between resumable checkpoints. Default: the deployment's setting (50).")
    group_by_length: Annotated[bool | None, Auto] = Field(default=None, description="Batch rows of similar length (less padding). Default true.")
    original_share_every: Annotated[int | None, Auto] = Field(
        default=None, ge=0, le=10_000_000, description="SparseGrad: every N steps log the top-k energy share in the original basis; 0 turns it off. Default 25.")
    gradient_checkpointing: Annotated[bool | None, Auto] = Field(
        default=None, description="Recompute activations in the backward instead of keeping them: much less activation memory "
        "(larger batches or models fit) for about 30% more compute per step. Models without support fail the job. Default false.")


class SupervisedParams(StrictModel):
    hyperparameters: Hyperparameters | None = Field(default=None, description="As the top-level `hyperparameters`; these win.")


class MethodIn(StrictModel):
    """How the MLP projections train (every other parameter per `setting`)."""

    type: Literal["sparsegrad", "lora", "meprop", "full", "supervised", "dpo", "reinforcement"] = Field(
        default="sparsegrad", description="Default `sparsegrad`. `supervised` (OpenAI clients) means the default, SparseGrad; "
                                  "`dpo` and `reinforcement` are refused.")
    setting: Literal["paper", "peft"] = Field(
        default="paper", description="`paper`: every non-MLP parameter trains densely; `peft`: only the task head besides the method. Default `paper`.")
    sparsegrad: SparseGradParams | None = Field(default=None, description="SparseGrad parameters (defaults as listed).")
    lora: LoraParams | None = Field(default=None, description="LoRA parameters (defaults as listed).")
    meprop: MePropParams | None = Field(default=None, description="MeProp parameters (defaults as listed).")
    supervised: SupervisedParams | None = Field(default=None, description="OpenAI-style: hyperparameters of a supervised job.")
    dpo: dict[str, Any] | None = Field(default=None, description="Accepted for OpenAI compatibility; DPO is not supported.")
    reinforcement: dict[str, Any] | None = Field(default=None, description="Accepted for OpenAI compatibility; not supported.")


class JobCreate(StrictModel):
    """A fine-tuning job request. Only `model` and `training_file` are required."""

    model: str = Field(min_length=1, max_length=200, description="A base model from `GET /v1/models`.")
    training_file: str = Field(min_length=1, max_length=100, description="Id of an uploaded file (`purpose=fine-tune`).")
    validation_file: str | None = Field(
        default=None, max_length=100, description="Id of an uploaded evaluation file. Default: hold out `validation_split` of the training file.")
    task: TaskIn | None = Field(default=None, description="Default: the task and columns the training file validated with on upload.")
    method: MethodIn | None = Field(default=None, description="Default: SparseGrad, density 0.01, 10 calibration steps, block selection, paper setting.")
    hyperparameters: Hyperparameters | None = Field(default=None, description="Default: every hyperparameter at its default.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Seed of initialization, data order and dropout. Default 42.")
    suffix: str | None = Field(default=None, min_length=1, max_length=64, description="Added to the fine-tuned model name. Default: none.")
    metadata: dict[str, str] | None = Field(
        default=None, description=f"Up to {MAX_METADATA_KEYS} string pairs (keys ≤ 64, values ≤ 512 characters). Default: none.")
    validation_split: float = Field(default=0.1, gt=0, le=0.5, description="Share of the training file held out for evaluation when no `validation_file` is given, in (0, 0.5]. Default 0.1.")
    merge_model: bool = Field(default=False, description="Also produce a merged model artifact. Default false.")
    integrations: list[Any] | None = Field(default=None, description="OpenAI compatibility: only null or [] (no integrations).")

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys are allowed, got {len(value)}")
        for key, item in value.items():
            if not key or len(key) > 64:
                raise ValueError(f"key {key!r} must be 1-64 characters")
            if len(item) > 512:
                raise ValueError(f"the value of {key!r} is longer than 512 characters")
        return value

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("integrations are not supported by this service (send null or [])")
        return value
