"""Models as OpenAI-style model objects: the registry's base models and a tenant's fine-tuned models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds, fixed: when a bundled model entered the registry, an operator's "
                         "model's files' modification time (0 for a hub id), a fine-tuned model's job's finish.")
    owned_by: str = Field(description="`sparsegrad` (bundled), `operator` (configured by the operator) or, for a "
                          "fine-tuned model, the organization id of its tenant.")
    architecture: str = Field(description="`encoder` (classification/regression) or `decoder` (also causal_lm); "
                              "`unknown` for a fine-tuned model whose base model is no longer registered.")
    tasks: list[str]
    description: str = Field(description="What the model is: its weights and shape, or what it was fine-tuned from.")
    parent: str | None = Field(default=None, description="A fine-tuned model's base model; null for a base model.")
    fine_tuning_job_id: str | None = Field(default=None, description="The job that made a fine-tuned model.")


class ModelsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
