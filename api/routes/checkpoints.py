"""A job's checkpoints, in OpenAI's checkpoint shape, newest first; a succeeded job's are models
(``fine_tuned_model_checkpoint``), each downloadable as an archive."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from sparsegrad_service.model_names import checkpoint_model_name
from sparsegrad_service.schemas import CheckpointsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, ReadsDep, StoreDep
from ..errors import ApiError, not_found
from ..ownership import read_job
from ..queries import checkpoint_model_statement, checkpoint_step_statement, checkpoints_page
from ..serializers import checkpoint_object

router = APIRouter(prefix="/fine_tuning/jobs", tags=["checkpoints"], responses=error_responses(400, 401, 404))


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
async def list_checkpoints(
    job_id: str, tenant: CurrentTenant, reads: ReadsDep,
    after: Annotated[str | None, Query(description="A checkpoint id: return older checkpoints.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100. Default 10.")] = 10,
) -> CheckpointsPublic:
    """List a job's checkpoints, newest step first."""
    await read_job(reads, tenant.id, job_id)
    before_step = None
    if after is not None:
        cursor = await reads.first(checkpoint_step_statement(), {"checkpoint_id": after, "job_id": job_id})
        if cursor is None:
            raise ApiError(400, f"Invalid after: no such checkpoint '{after}'.", param="after", code="invalid_cursor")
        before_step = cursor.step
    rows = await reads.all(checkpoints_page(job_id, before_step, limit + 1))
    page = [checkpoint_object(r) for r in rows[:limit]]
    return CheckpointsPublic(data=page, has_more=len(rows) > limit, first_id=page[0].id if page else None,
                             last_id=page[-1].id if page else None)


@router.get("/{job_id}/checkpoints/{checkpoint_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "The checkpoint's model archive (.tar.gz)."}})
async def download_checkpoint(job_id: str, checkpoint_id: str, tenant: CurrentTenant, reads: ReadsDep,
                              store: StoreDep) -> FileResponse:
    """Download a checkpoint's model (adapter or whole model); `X-Content-SHA256` carries its checksum."""
    row = await reads.first(checkpoint_model_statement(),
                            {"checkpoint_id": checkpoint_id, "job_id": job_id, "tenant_id": tenant.id})
    if row is None:
        raise not_found("checkpoint model", checkpoint_id, param="checkpoint_id")
    path = store.path(row.model_key)
    if not path.is_file():
        raise ApiError(404, f"The contents of checkpoint '{checkpoint_id}' are missing from the store.",
                       code="content_missing")
    name = checkpoint_model_name(row.fine_tuned_model, row.step).replace(":", "_")
    return FileResponse(path, filename=f"{name}.tar.gz", headers={"X-Content-SHA256": row.model_sha256})
