"""What a job gets when it leaves something out: the methods, settings and selections a job may name and every
default, from the job contract (the dashboard's new-job form fills itself from this)."""

from __future__ import annotations

from fastapi import APIRouter

from sparsegrad_contract import defaults as D
from sparsegrad_contract.defaults import MethodType, RequestedMethod, Selection, Setting
from sparsegrad_service.job_spec import JobSpec, ResolvedHyperparameters
from sparsegrad_service.schemas import MethodIn
from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.schemas.defaults import JobDefaults
from sparsegrad_service.schemas.jobs import PublicHyperparameters

from ..deps import CurrentTenant, SettingsDep
from ..job_spec import resolve_method_config

router = APIRouter(prefix="/fine_tuning", tags=["fine-tuning jobs"], responses=error_responses(401))


@router.get("/defaults", response_model=JobDefaults)
async def job_defaults(settings: SettingsDep, _tenant: CurrentTenant) -> JobDefaults:
    """The defaults a job request resolves to (the same values `POST /v1/fine_tuning/jobs` fills in)."""
    methods = sorted(MethodType, key=lambda m: m is not D.DEFAULT_METHOD)
    method = {m.value: resolve_method_config(MethodIn(type=RequestedMethod(m.value))) for m in methods}
    default = method[D.DEFAULT_METHOD.value]
    spec = JobSpec(method=default, hyperparameters=ResolvedHyperparameters(
        checkpoint_every=settings.checkpoint_every, learning_rate=D.default_learning_rate(default.type, default.setting)))
    return JobDefaults(
        methods=methods, settings=list(Setting), selections=list(Selection), method=method,
        learning_rates={m.value: {s.value: D.default_learning_rate(m, s) for s in Setting} for m in methods},
        hyperparameters=PublicHyperparameters.of(spec.hyperparameters, default), validation_split=spec.validation_split,
        min_eval_examples=D.MIN_EVAL_EXAMPLES, seed=D.SEED,
    )
