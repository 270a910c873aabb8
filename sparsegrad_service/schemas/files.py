"""Files: uploaded datasets (the file object is OpenAI's, plus what validation found) and the result files of
jobs; lists and deletion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

UPLOAD_PURPOSE = "fine-tune"
"""The purpose of an uploaded dataset (the only one an upload may give)."""
RESULTS_PURPOSE = "fine-tune-results"
"""The purpose of a job's result files (its artifacts, listed in the job's ``result_files``)."""


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    filename: str
    created_at: int = Field(description="Unix seconds.")
    purpose: str = Field(description=f"`fine-tune` (uploads) or `{RESULTS_PURPOSE}` (a job's result files: its "
                         "metrics CSV and its adapter, LoRA and merged-model archives).")
    status: str = Field(description="`processed`: the file validated on upload (result files: written).")
    status_details: str | None = None
    expires_at: int | None = None
    num_examples: int | None = Field(description="Valid examples found (null for result files).")
    format: str = Field(description="`jsonl`, `csv` or `tsv`; result files: `csv` or `tar.gz`.")
    task: str | None = Field(description="Task the file validated as: classification, regression or causal_lm.")
    label_names: list[str] | None = Field(description="Class names (classification), in class-id order.")


class FilesPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
