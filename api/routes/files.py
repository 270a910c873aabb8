"""Dataset files: upload (validated at once), list, retrieve, download and delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from sparsegrad_service.models import File as FileRow
from sparsegrad_service.models import new_id, utcnow
from sparsegrad_service.retention import delete_objects, mark_file_deleted, unfinished_job_using_file
from sparsegrad_service.schemas import FileDeleted, FileObject, FilesPublic
from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.schemas.files import UPLOAD_PURPOSE
from sparsegrad_service.store import StoreError, file_key

from ..datasets import (
    column_mapping,
    filename_problem,
    form_column,
    invalid_filename,
    mapping_to_dict,
    read_capped,
    safe_filename,
    validate_dataset,
)
from ..deletion import delete_result_file
from ..deps import CurrentTenant, ReadsDep, SessionDep, SettingsDep, StoreDep
from ..errors import ApiError, conflict, not_found
from ..multipart import FormRoute
from ..ownership import read_file, tenant_file
from ..queries import file_cursor, files_page
from ..serializers import file_object

router = APIRouter(prefix="/files", tags=["files"], responses=error_responses(400, 401, 404), route_class=FormRoute)

TaskName = Literal["classification", "regression", "causal_lm"]


@router.post("", response_model=FileObject, responses=error_responses(413))
def upload_file(
    session: SessionDep, tenant: CurrentTenant, settings: SettingsDep, store: StoreDep,
    file: Annotated[UploadFile, File(description="JSONL, CSV or TSV dataset.")],
    purpose: Annotated[str, Form(description="Must be `fine-tune`.")],
    task: Annotated[TaskName | None, Form(description="Default: inferred from the records.")] = None,
    text_column: Annotated[str | None, Form(description="Default `text`; digits mean a 0-based index.")] = None,
    text_pair_column: Annotated[str | None, Form(description="Default: none.")] = None,
    label_column: Annotated[str | None, Form(description="Default `label`.")] = None,
    messages_column: Annotated[str | None, Form(description="Default `messages`.")] = None,
    prompt_column: Annotated[str | None, Form(description="Prompt key of prompt/completion JSONL. Default `prompt`.")] = None,
    completion_column: Annotated[str | None, Form(description="Completion key of prompt/completion JSONL. Default `completion`.")] = None,
    has_header: Annotated[bool | None, Form(description="CSV/TSV header row. Default true.")] = None,
) -> FileObject:
    """Upload a dataset file; it is validated now and refused with every bad line listed."""
    if purpose != UPLOAD_PURPOSE:
        raise ApiError(400, f"Invalid purpose '{purpose}': this service only accepts '{UPLOAD_PURPOSE}'.",
                       param="purpose",
                       code="invalid_purpose")
    problem = filename_problem(file.filename)
    if problem is not None:
        raise invalid_filename(file.filename, problem)
    data = read_capped(file.file, settings.max_upload_bytes)
    filename = safe_filename(file.filename)
    mapping = column_mapping(text=form_column(text_column), text_pair=form_column(text_pair_column),
                             label=form_column(label_column), messages=messages_column, prompt=prompt_column, completion=completion_column,
                             has_header=has_header)
    dataset = validate_dataset(data, filename, settings, task=task, mapping=mapping, param="file")
    file_id = new_id("file")
    try:
        stored = store.put_bytes(file_key(file_id), data)
    except StoreError as exc:
        raise ApiError(503, f"The file could not be stored: {exc}", type="server_error",
                       code="storage_unavailable") from exc
    row = FileRow(
        id=file_id, tenant_id=tenant.id, filename=filename, purpose=UPLOAD_PURPOSE, bytes=len(data),
        sha256=stored.sha256, status="processed", format=dataset.format.value,
        num_examples=len(dataset), task=dataset.task.value, mapping=mapping_to_dict(mapping),
        label_names=dataset.label_names, storage_key=stored.key, created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return file_object(row)


@router.get("", response_model=FilesPublic)
async def list_files(
    tenant: CurrentTenant, reads: ReadsDep,
    after: Annotated[str | None, Query(description="A file id: return the files after it in this order.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size, 1-10000. Default 100.")] = 100,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time. Default `desc`.")] = "desc",
    purpose: Annotated[str | None, Query(description="Only files with this purpose.")] = None,
) -> FilesPublic:
    """List the tenant's files, newest first."""
    cursor = None
    if after is not None:
        cursor = await reads.first(file_cursor(), {"file_id": after, "tenant_id": tenant.id})
        if cursor is None:
            raise ApiError(400, f"Invalid after: no such file '{after}'.", param="after", code="invalid_cursor")
    rows = await reads.all(files_page(tenant.id, purpose, cursor, order, limit + 1))
    page = [file_object(r) for r in rows[:limit]]
    return FilesPublic(data=page, has_more=len(rows) > limit, first_id=page[0].id if page else None,
                       last_id=page[-1].id if page else None)


@router.get("/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, tenant: CurrentTenant, reads: ReadsDep) -> FileObject:
    """Retrieve a file object."""
    return file_object(await read_file(reads, tenant.id, file_id))


@router.get("/{file_id}/content", response_class=FileResponse)
async def download_file(file_id: str, tenant: CurrentTenant, reads: ReadsDep, store: StoreDep) -> FileResponse:
    """Download the file's bytes as uploaded."""
    row = await read_file(reads, tenant.id, file_id)
    path = store.path(row.storage_key)
    if not path.is_file():
        raise ApiError(404, f"The contents of file '{file_id}' are missing from the store.", code="content_missing")
    return FileResponse(path, filename=row.filename, media_type="application/octet-stream",
                        headers={"X-Content-SHA256": row.sha256})


@router.delete("/{file_id}", response_model=FileDeleted, responses=error_responses(409))
def delete_file(file_id: str, session: SessionDep, tenant: CurrentTenant, store: StoreDep) -> FileDeleted:
    """Delete a file and its bytes; refused (409) while a job that has not finished trains or validates on it.
    A result file can be deleted too, except the archives of a fine-tuned model (delete the model instead)."""
    if delete_result_file(session, store, tenant.id, file_id):
        return FileDeleted(id=file_id)
    tenant_file(session, tenant.id, file_id, lock=True)
    storage_key = mark_file_deleted(session, file_id)
    if storage_key is None:
        job = unfinished_job_using_file(session, file_id)
        if job is None:  # deleted by a concurrent request
            raise not_found("file", file_id, param="file_id")
        role = "training_file" if job.training_file_id == file_id else "validation_file"
        raise conflict(f"File {file_id} is the {role} of job {job.id}, which is '{job.status}' and may still read "
                       "it; delete the file once the job has finished (or cancel the job).", "file_in_use")
    session.commit()
    delete_objects(store, [storage_key])
    return FileDeleted(id=file_id)
