"""Base models of the registry, as OpenAI-style model objects."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds at which this deployment registered the model.")
    owned_by: str
    architecture: str = Field(description="`encoder` (classification/regression) or `decoder` (also causal_lm).")
    tasks: list[str]
    description: str


class ModelsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
