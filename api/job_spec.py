"""Resolve the method and hyperparameters of a ``JobCreate`` into the typed job spec
(:class:`sparsegrad_service.job_spec.JobSpec`) the worker runs: every default the contract's. Pure: no
database, no files."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from sparsegrad_contract.defaults import (
    DEFAULT_METHOD,
    MethodType,
    Selection,
    default_learning_rate,
    job_recalibrate_every,
    resolve_method,
)
from sparsegrad_service.job_spec import JobSpec, MethodConfig, ResolvedHyperparameters, SparseGradMethod
from sparsegrad_service.schemas import Hyperparameters as HyperparametersIn
from sparsegrad_service.schemas import JobCreate, MethodIn
from sparsegrad_service.schemas.job_create import SparseGradParams

from .errors import ApiError

TRAINING_METHODS = tuple(m.value for m in MethodType)
_METHOD_CONFIG: TypeAdapter[Any] = TypeAdapter(MethodConfig)


def resolve_method_config(method: MethodIn | None) -> MethodConfig:
    """The method the job trains with, its parameters resolved; ``supervised`` → the default method."""
    method = method or MethodIn()
    try:
        kind = resolve_method(method.type)
    except ValueError:
        raise ApiError(400, f"Method type '{method.type.value}' is not supported; use one of: "
                       f"{', '.join(TRAINING_METHODS)} (or 'supervised', which means {DEFAULT_METHOD.value}).",
                       param="method.type", code="unsupported_method") from None
    given = {MethodType.sparsegrad: method.sparsegrad, MethodType.lora: method.lora,
             MethodType.meprop: method.meprop}.get(kind)
    params = given.model_dump(exclude_none=True) if given is not None else {}
    if kind is MethodType.lora:  # LoRA's default rank matches SparseGrad's trainable parameters at its density
        params["density"] = (method.sparsegrad or SparseGradParams()).density
    config: MethodConfig = _METHOD_CONFIG.validate_python({"type": kind, "setting": method.setting, **params})
    if isinstance(config, SparseGradMethod) and "recalibrate_every" not in params:
        config = config.model_copy(update={"recalibrate_every": job_recalibrate_every(config.selection)})
    if isinstance(config, SparseGradMethod) and config.recalibrate_every and config.selection is not Selection.dynamic:
        raise ApiError(400, f"method.sparsegrad.recalibrate_every needs selection 'dynamic' (got "
                       f"'{config.selection.value}'): a block or fixed delta cannot be re-expressed in new bases.",
                       param="method.sparsegrad.recalibrate_every", code="invalid_value")
    return config


def _merged(body: JobCreate) -> tuple[HyperparametersIn, str]:
    """Top-level hyperparameters overlaid with ``method.supervised.hyperparameters`` (which win), and the
    param prefix to blame in errors."""
    top = body.hyperparameters or HyperparametersIn()
    inner = body.method.supervised.hyperparameters if body.method and body.method.supervised else None
    if inner is None:
        return top, "hyperparameters"
    given_top, given_inner = top.model_dump(exclude_unset=True), inner.model_dump(exclude_unset=True)
    for name in sorted(given_top.keys() & given_inner.keys()):
        if given_top[name] != given_inner[name]:
            raise ApiError(400, f"hyperparameters.{name} ({_shown(given_top[name])}) and "
                           f"method.supervised.hyperparameters.{name} ({_shown(given_inner[name])}) disagree; "
                           "set it in one place.", param=f"method.supervised.hyperparameters.{name}",
                           code="conflicting_values")
    return HyperparametersIn.model_validate(given_top | given_inner), "method.supervised.hyperparameters"


def _shown(value: Any) -> str:
    return '"auto"' if value is None else repr(value)


def resolve_hyperparameters(body: JobCreate, checkpoint_every: int, method: MethodConfig) -> ResolvedHyperparameters:
    """Every hyperparameter resolved: an unset learning rate becomes the default of ``method`` and its setting, a
    ``learning_rate_multiplier`` that default times the multiplier, an unset ``checkpoint_every`` the deployment's,
    ``original_share_every`` 0 "off" (None)."""
    hp, prefix = _merged(body)
    values = hp.model_dump(exclude_none=True)
    multiplier = values.pop("learning_rate_multiplier", None)
    default_lr = default_learning_rate(method.type, method.setting)
    if multiplier is not None:
        if "learning_rate" in values:
            raise ApiError(400, f"Set either {prefix}.learning_rate or {prefix}.learning_rate_multiplier, not both.",
                           param=f"{prefix}.learning_rate_multiplier", code="invalid_value")
        values["learning_rate"] = default_lr * multiplier
    values.setdefault("learning_rate", default_lr)
    values.setdefault("checkpoint_every", checkpoint_every)
    if values.get("original_share_every") == 0:
        values["original_share_every"] = None
    return ResolvedHyperparameters(**values)


def resolve_spec(body: JobCreate, task: dict[str, Any], checkpoint_every: int) -> JobSpec:
    asked = body.model_dump(mode="json", exclude_unset=True, include={"method", "hyperparameters"})
    method = resolve_method_config(body.method)
    return JobSpec(task=task, method=method,  # type: ignore[arg-type]
                   hyperparameters=resolve_hyperparameters(body, checkpoint_every, method),
                   validation_split=body.validation_split, merge_model=body.merge_model,
                   integrations=list(body.integrations or []),
                   requested={"method": asked.get("method"), "hyperparameters": asked.get("hyperparameters")})
