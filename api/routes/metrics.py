"""A job's metric time series (train loss, eval metrics, lr, step time, tokens/s, memory...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sparsegrad_service.models import MAX_INTEGER
from sparsegrad_service.schemas import MetricsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, ReadsDep
from ..ownership import read_job
from ..queries import metric_names_statement, metrics_page
from ..serializers import metric_point

router = APIRouter(prefix="/fine_tuning/jobs", tags=["metrics"], responses=error_responses(400, 401, 404))


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
async def list_metrics(
    job_id: str, tenant: CurrentTenant, reads: ReadsDep,
    name: Annotated[list[str] | None, Query(description="Metric names (repeat, or comma-separate). Default: all.")] = None,
    after_step: Annotated[int | None, Query(ge=-MAX_INTEGER, le=MAX_INTEGER,
                                            description="Only points with a larger step.")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Page size, 1-100000. Default 1000.")] = 1000,
) -> MetricsPublic:
    """List metric points ordered by (step, name). A page that has more after it ends at a whole step:
    continue with `after_step` = its last step."""
    names = sorted({n.strip() for value in name or [] for n in value.split(",") if n.strip()})
    await read_job(reads, tenant.id, job_id)
    rows = await reads.all(metrics_page(job_id, names, after_step, limit + 1))
    has_more = len(rows) > limit
    if has_more and rows[limit].step == rows[limit - 1].step != rows[0].step:
        rows = [r for r in rows[:limit] if r.step != rows[limit].step]  # never split a step across pages
    available = await reads.all(metric_names_statement(), {"job_id": job_id})
    return MetricsPublic(data=[metric_point(r) for r in rows[:limit]], names=[r.name for r in available],
                         has_more=has_more)
