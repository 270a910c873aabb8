"""A tenant's storage: the bytes its live files, checkpoints and artifacts hold in the artifact store."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class StorageCategory(BaseModel):
    count: int = Field(description="Objects stored.")
    bytes: int = Field(description="Their total size.")


class StorageUsage(BaseModel):
    object: Literal["storage"] = "storage"
    files: StorageCategory = Field(description="Uploaded dataset files (deleted ones excluded).")
    checkpoints: StorageCategory = Field(
        description="Resume checkpoints of jobs (a finished job keeps the deployment's `keep_finished_checkpoints`).")
    artifacts: StorageCategory = Field(description="Job outputs: adapters, merged models, metrics files.")
    total_bytes: int = Field(description="The three together.")
