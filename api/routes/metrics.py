"""A job's metric time series (train loss, eval metrics, lr, step time, tokens/s, memory...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from sparsegrad_service.models import MetricPoint
from sparsegrad_service.schemas import MetricsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import ContextDep, CurrentTenant
from ..ownership import tenant_job
from ..serializers import metric_point

router = APIRouter(prefix="/fine_tuning/jobs", tags=["metrics"], responses=error_responses(400, 401, 404))


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
async def list_metrics(
    job_id: str, tenant: CurrentTenant, context: ContextDep,
    name: Annotated[list[str] | None, Query(description="Metric names (repeat, or comma-separate). Default: all.")] = None,
    after_step: Annotated[int | None, Query(description="Only points with a larger step.")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Page size, 1-100000. Default 1000.")] = 1000,
) -> MetricsPublic:
    """List metric points ordered by (step, name). A page that has more after it ends at a whole step:
    continue with `after_step` = its last step."""
    names = sorted({n.strip() for value in name or [] for n in value.split(",") if n.strip()})
    return await context.read(lambda session: _list_metrics(session, tenant.id, job_id, names, after_step, limit))


def _list_metrics(session: Session, tenant_id: str, job_id: str, names: list[str], after_step: int | None,
                  limit: int) -> MetricsPublic:
    tenant_job(session, tenant_id, job_id)
    query = select(MetricPoint).where(MetricPoint.job_id == job_id)
    if names:
        query = query.where(MetricPoint.name.in_(names))
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    rows = list(session.scalars(query.order_by(MetricPoint.step, MetricPoint.name).limit(limit + 1)))
    has_more = len(rows) > limit
    if has_more and rows[limit].step == rows[limit - 1].step != rows[0].step:
        rows = [r for r in rows[:limit] if r.step != rows[limit].step]  # never split a step across pages
    rows = rows[:limit]
    available = list(session.scalars(select(MetricPoint.name).where(MetricPoint.job_id == job_id)
                                     .distinct().order_by(MetricPoint.name)))
    return MetricsPublic(data=[metric_point(r) for r in rows], names=available, has_more=has_more)
