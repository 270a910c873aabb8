"""``GET /v1/fine_tuning/defaults``: the methods, settings and selections a job may name, and every default a
request resolves to (the dashboard's new-job form fills itself from this)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sparsegrad_contract.defaults import MethodType, Selection, Setting
from sparsegrad_service.job_spec import MethodConfig

from .jobs import PublicHyperparameters


class JobDefaults(BaseModel):
    object: Literal["fine_tuning.defaults"] = "fine_tuning.defaults"
    methods: list[MethodType] = Field(description="The training methods, the default first.")
    settings: list[Setting]
    selections: list[Selection]
    method: dict[str, MethodConfig] = Field(description="Each method's parameters when the request gives none.")
    hyperparameters: PublicHyperparameters = Field(description="Every hyperparameter's default in this deployment, "
                                                   "for the default method in the default setting.")
    learning_rates: dict[str, dict[str, float]] = Field(description=(
        "The default learning rate per method and setting (a request that sets none gets it): larger in the "
        "`peft` setting, where only the method's entries and the head train."))
    validation_split: float
    min_eval_examples: int = Field(description="The fewest examples a held-out evaluation share may have (and the fewest "
                                   "it must leave to train on); a smaller file trains without evaluation.")
    seed: int
