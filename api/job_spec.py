"""Turn the method and hyperparameters of a ``JobCreate`` into the normalized ``Job.spec`` shape of the
service contract (every default filled in; the worker trusts it). Pure: no database, no files."""

from __future__ import annotations

from typing import Any

from sparsegrad_contract.defaults import DEFAULT_METHOD, MethodType, resolve_method

from .errors import ApiError
from .schemas import Hyperparameters, JobCreate, MethodIn
from .schemas.job_create import (
    DEFAULT_LEARNING_RATE,
    HYPERPARAMETER_DEFAULTS,
    LoraParams,
    MePropParams,
    SparseGradParams,
)

TRAINING_METHODS = tuple(m.value for m in MethodType)


def normalize_method(method: MethodIn | None) -> dict[str, Any]:
    """``{"type", "setting", "sparsegrad", "lora", "meprop"}`` with defaults; ``supervised`` → SparseGrad."""
    method = method or MethodIn()
    try:
        kind = resolve_method(method.type).value
    except ValueError:
        raise ApiError(400, f"Method type '{method.type.value}' is not supported; use one of: "
                       f"{', '.join(TRAINING_METHODS)} (or 'supervised', which means {DEFAULT_METHOD.value}).",
                       param="method.type", code="unsupported_method") from None
    sparsegrad = method.sparsegrad or SparseGradParams()
    lora = method.lora or LoraParams()
    meprop = method.meprop or MePropParams()
    return {
        "type": kind, "setting": method.setting.value,
        "sparsegrad": sparsegrad.model_dump(exclude_none=True), "lora": lora.model_dump(), "meprop": meprop.model_dump(),
    }


def _merged(body: JobCreate) -> tuple[Hyperparameters, str]:
    """Top-level hyperparameters overlaid with ``method.supervised.hyperparameters`` (which win), and the
    param prefix to blame in errors."""
    top = body.hyperparameters or Hyperparameters()
    inner = body.method.supervised.hyperparameters if body.method and body.method.supervised else None
    if inner is None:
        return top, "hyperparameters"
    values = top.model_dump(exclude_unset=True) | inner.model_dump(exclude_unset=True)
    return Hyperparameters.model_validate(values), "method.supervised.hyperparameters"


def normalize_hyperparameters(body: JobCreate, checkpoint_every: int) -> dict[str, Any]:
    """Every hyperparameter of the contract; ``learning_rate_multiplier`` becomes ``learning_rate``."""
    hp, prefix = _merged(body)
    values = hp.model_dump()
    multiplier = values.pop("learning_rate_multiplier")
    if multiplier is not None:
        if values["learning_rate"] is not None:
            raise ApiError(400, f"Set either {prefix}.learning_rate or {prefix}.learning_rate_multiplier, not both.",
                           param=f"{prefix}.learning_rate_multiplier", code="invalid_value")
        values["learning_rate"] = DEFAULT_LEARNING_RATE * multiplier
    normalized = {name: (default if values[name] is None else values[name])
                  for name, default in HYPERPARAMETER_DEFAULTS.items()}
    if normalized["checkpoint_every"] is None:
        normalized["checkpoint_every"] = checkpoint_every
    if normalized["original_share_every"] == 0:
        normalized["original_share_every"] = None
    return normalized
