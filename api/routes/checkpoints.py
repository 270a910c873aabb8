"""A job's resumable checkpoints, in OpenAI's checkpoint shape, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from sparsegrad_service.models import Checkpoint
from sparsegrad_service.schemas import CheckpointsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, SessionDep
from ..errors import ApiError
from ..ownership import tenant_job
from ..serializers import checkpoint_object

router = APIRouter(prefix="/fine_tuning/jobs", tags=["checkpoints"], responses=error_responses(400, 401, 404))


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
def list_checkpoints(
    job_id: str, session: SessionDep, tenant: CurrentTenant,
    after: Annotated[str | None, Query(description="A checkpoint id: return older checkpoints.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100. Default 10.")] = 10,
) -> CheckpointsPublic:
    """List a job's checkpoints, newest step first."""
    tenant_job(session, tenant.id, job_id)
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after is not None:
        step = session.scalar(select(Checkpoint.step).where(Checkpoint.id == after, Checkpoint.job_id == job_id))
        if step is None:
            raise ApiError(400, f"Invalid after: no such checkpoint '{after}'.", param="after", code="invalid_cursor")
        query = query.where(Checkpoint.step < step)
    rows = list(session.scalars(query.order_by(Checkpoint.step.desc()).limit(limit + 1)))
    page = [checkpoint_object(r) for r in rows[:limit]]
    return CheckpointsPublic(data=page, has_more=len(rows) > limit, first_id=page[0].id if page else None,
                             last_id=page[-1].id if page else None)
