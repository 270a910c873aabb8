"""A job's resumable checkpoints, in OpenAI's checkpoint shape, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sparsegrad_service.schemas import CheckpointsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, ReadsDep
from ..errors import ApiError
from ..ownership import read_job
from ..queries import checkpoint_step_statement, checkpoints_page
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
