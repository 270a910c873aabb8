"""Uploaded dataset files: the file object (OpenAI's, plus what validation found), lists and deletion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    filename: str
    created_at: int = Field(description="Unix seconds.")
    purpose: str
    status: str = Field(description="`processed`: the file validated on upload.")
    status_details: str | None = None
    expires_at: int | None = None
    num_examples: int = Field(description="Valid examples found.")
    format: str = Field(description="`jsonl`, `csv` or `tsv`.")
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
