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
    hyperparameters: PublicHyperparameters = Field(description="Every hyperparameter's default in this deployment.")
    validation_split: float
    min_eval_examples: int = Field(description="The fewest examples a held-out evaluation share may have (and the fewest "
                                   "it must leave to train on); a smaller file trains without evaluation.")
    seed: int
