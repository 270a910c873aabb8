"""Appending to a job's record: typed events and metric points (the append-only job tables)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .enums import EventLevel, EventType
from .models import JobEvent, MetricPoint, utcnow


def add_event(
    session: Session, job_id: str, type: EventType | str, message: str, *,
    data: dict[str, Any] | None = None, level: EventLevel | str = EventLevel.info,
) -> JobEvent:
    event = JobEvent(job_id=job_id, type=str(type), message=message, data=data, level=str(level))
    session.add(event)
    session.flush()
    return event


def insert_metrics(session: Session, job_id: str, rows: Iterable[tuple[int, str, float]]) -> int:
    """Append (step, name, value) points; a point that already exists (a step replayed after resuming from
    a checkpoint) is skipped, so the series never has duplicates."""
    values = [{"job_id": job_id, "step": int(s), "name": n, "value": float(v), "created_at": utcnow()}
              for s, n, v in rows if v is not None and v == v]  # drop NaN
    if not values:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(MetricPoint).values(values).on_conflict_do_nothing(
            constraint="uq_job_metrics_job_step_name")
    elif dialect == "sqlite":
        stmt = sqlite.insert(MetricPoint).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - other databases insert one by one
        for v in values:
            exists = session.scalar(select(MetricPoint.id).where(
                MetricPoint.job_id == job_id, MetricPoint.step == v["step"], MetricPoint.name == v["name"]))
            if exists is None:
                session.add(MetricPoint(**v))
        return len(values)
    session.execute(stmt)
    return len(values)
