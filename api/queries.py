"""The API's read statements: tenant-scoped ``Select``s of labelled columns (each row's attributes are the ORM
attribute names, so the serializers take them like ORM objects), run by ``Reads``. Statements that do not
depend on the request are built once, with bound parameters, so they are compiled once."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by, array
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator

from sparsegrad_service.enums import JobStatus
from sparsegrad_service.models import ApiKey, Artifact, Checkpoint, File, Job, JobEvent, MetricPoint, Tenant
from sparsegrad_service.schemas.files import RESULTS_PURPOSE, UPLOAD_PURPOSE
from sparsegrad_service.schemas.insight import INSIGHT_KEYS

from .reads import Query


def columns(model: Any) -> list[ColumnElement[Any]]:
    """Every mapped column of ``model`` under its attribute name (``Job.metadata_`` as ``metadata_``)."""
    return [getattr(model, attr.key).label(attr.key) for attr in sa_inspect(model).column_attrs]


class IdList(TypeDecorator[list[str]]):
    """Comma-joined ids as a list."""

    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> list[str]:
        return str(value).split(",") if value else []


class PerDialect(ColumnElement[Any]):
    """``postgresql`` on PostgreSQL, ``other`` elsewhere: one column, two spellings."""

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's declaration)
        ("postgresql", InternalTraversal.dp_clauseelement), ("other", InternalTraversal.dp_clauseelement)]

    def __init__(self, postgresql: ColumnElement[Any], other: ColumnElement[Any]) -> None:
        self.postgresql, self.other, self.type = postgresql, other, other.type


@compiles(PerDialect)
def _per_dialect(element: PerDialect, compiler: Any, **kw: Any) -> str:
    chosen = element.postgresql if compiler.dialect.name == "postgresql" else element.other
    return str(compiler.process(chosen, **kw))


def result_files_column() -> ColumnElement[list[str]]:
    """The job's artifact ids in creation order (ids never contain commas). PostgreSQL orders the aggregate
    itself; SQLite's ``group_concat`` reads an ordered subquery in its order."""
    postgresql = (select(func.string_agg(Artifact.id, aggregate_order_by(literal_column("','"), Artifact.created_at,
                                                                          Artifact.id)))
                  .where(Artifact.job_id == Job.id).scalar_subquery())
    ordered = (select(Artifact.id).where(Artifact.job_id == Job.id).order_by(Artifact.created_at, Artifact.id)
               .correlate(Job).subquery("job_artifacts_ordered"))
    other = select(func.group_concat(ordered.c.id)).scalar_subquery()
    return type_coerce(PerDialect(postgresql, other), IdList())


def queue_position_column() -> ColumnElement[int | None]:
    """1 + the number of jobs queued before this one, for a queued job (else NULL)."""
    ahead = aliased(Job, name="jobs_ahead")
    count = (select(func.count(ahead.id))
             .where(ahead.status == JobStatus.queued, ahead.queued_at < Job.queued_at)
             .scalar_subquery())
    return case((and_(Job.status == JobStatus.queued, Job.queued_at.is_not(None)), count + 1), else_=None)


def public_summary_column() -> ColumnElement[dict[str, Any] | None]:
    """``Job.summary`` without the method insight (``INSIGHT_KEYS``, the insight route's part), removed by the
    database: the spectra of a job (about 100 KB) never leave it for the job routes."""
    summary = cast(Job.summary, JSONB)
    postgresql = case((func.jsonb_typeof(summary) == "object",
                       summary.op("-")(cast(array(INSIGHT_KEYS), ARRAY(Text)))), else_=summary)
    other = func.json_remove(Job.summary, *(f"$.{key}" for key in INSIGHT_KEYS))
    return type_coerce(PerDialect(cast(postgresql, JSON), other), JSON)


def _jobs() -> Query:
    return select(*(c for c in columns(Job) if c.key != "summary"), public_summary_column().label("summary"),
                  queue_position_column().label("queue_position"), result_files_column().label("result_files"))


@functools.cache
def job_statement() -> Query:
    """One tenant's job by id (parameters ``job_id``, ``tenant_id``), with its queue position and artifact ids:
    everything ``JobPublic`` shows, in one round trip."""
    return _jobs().where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


def has_metadata(key: str, value: str) -> ColumnElement[bool]:
    """The job's metadata maps ``key`` to ``value`` (any key: no JSON path is spelled from it)."""
    entries = func.json_each(Job.metadata_).table_valued("key", "value")
    other = select(entries.c.key).where(entries.c.key == key, entries.c.value == value).exists()
    return PerDialect(Job.metadata_.op("->>")(key) == value, other)


def no_metadata() -> ColumnElement[bool]:
    """The job has no metadata (none given, JSON null or an empty object)."""
    return or_(Job.metadata_.is_(None), cast(Job.metadata_, Text).in_(["null", "{}"]))


def jobs_page(tenant_id: str, after: Any | None, status: JobStatus | None, limit: int, *,
              metadata: dict[str, str] | None = None, without_metadata: bool = False) -> Query:
    """A page of the tenant's jobs, newest first, after the job ``after`` (a row of ``job_cursor``); only those
    with ``status``, with every pair of ``metadata``, or (``without_metadata``) with none."""
    query = _jobs().where(Job.tenant_id == tenant_id, *(has_metadata(k, v) for k, v in (metadata or {}).items()))
    if status is not None:
        query = query.where(Job.status == status)
    if without_metadata:
        query = query.where(no_metadata())
    if after is not None:
        query = query.where(or_(Job.created_at < after.created_at,
                                (Job.created_at == after.created_at) & (Job.id < after.id)))
    return query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)


@functools.cache
def job_insight_statement() -> Query:
    """One tenant's job's spec and full stored results, insight included (parameters ``job_id``, ``tenant_id``)."""
    return select(Job.id.label("id"), Job.spec.label("spec"), Job.summary.label("summary")).where(
        Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


@functools.cache
def job_cursor() -> Query:
    """A tenant's job's ``id`` and ``created_at`` (parameters ``job_id``, ``tenant_id``): the ownership check of
    the routes under a job, and a page cursor."""
    return select(Job.id.label("id"), Job.created_at.label("created_at")).where(
        Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


@functools.cache
def api_key_statement() -> Query:
    """The key with hash ``key_hash`` and its tenant's name."""
    return (select(*columns(ApiKey), Tenant.name.label("tenant_name")).join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.key_hash == bindparam("key_hash")))


@functools.cache
def api_key_by_id_statement() -> Query:
    """Whether the key with id ``key_id`` is revoked."""
    return select(ApiKey.revoked_at).where(ApiKey.id == bindparam("key_id"))


def uploaded_files(tenant_id: Any) -> Query:
    """The tenant's live (not deleted) uploads."""
    return select(*columns(File)).where(File.tenant_id == tenant_id, File.deleted_at.is_(None))


def result_files(tenant_id: Any) -> Query:
    """The artifacts of the tenant's jobs as files of the Files API (purpose ``fine-tune-results``), in the
    columns of ``uploaded_files`` (what only an upload has is NULL)."""
    given: dict[str, Any] = {
        "id": Artifact.id, "tenant_id": Job.tenant_id, "filename": Artifact.filename, "bytes": Artifact.bytes,
        "purpose": cast(literal(RESULTS_PURPOSE), String), "status": cast(literal("processed"), String),
        "sha256": Artifact.sha256, "storage_key": Artifact.storage_key, "created_at": Artifact.created_at}
    shaped = [given.get(attr.key, type_coerce(null(), attr.columns[0].type)).label(attr.key)
              for attr in sa_inspect(File).column_attrs]
    return select(*shaped).join(Job, Job.id == Artifact.job_id).where(Job.tenant_id == tenant_id)


@functools.cache
def file_statement() -> Query:
    """A tenant's live upload by id (parameters ``file_id``, ``tenant_id``)."""
    return uploaded_files(bindparam("tenant_id")).where(File.id == bindparam("file_id"))


@functools.cache
def result_file_statement() -> Query:
    """A result file of one of the tenant's jobs by id (parameters ``file_id``, ``tenant_id``)."""
    return result_files(bindparam("tenant_id")).where(Artifact.id == bindparam("file_id"))


def files_page(tenant_id: str, purpose: str | None, after: Any | None, order: str, limit: int) -> Query:
    """A page of the tenant's uploads and result files, by creation time, after the file ``after`` (a row of
    ``file_cursor``)."""
    branches = [query for kind, query in ((UPLOAD_PURPOSE, uploaded_files(tenant_id)),
                                          (RESULTS_PURPOSE, result_files(tenant_id))) if purpose in (None, kind)]
    if not branches:
        branches = [uploaded_files(tenant_id).where(File.purpose == purpose)]
    files = (branches[0] if len(branches) == 1 else union_all(*branches)).subquery("tenant_files")
    query = select(*files.c)
    if after is not None:
        if order == "desc":
            query = query.where(or_(files.c.created_at < after.created_at,
                                    (files.c.created_at == after.created_at) & (files.c.id < after.id)))
        else:
            query = query.where(or_(files.c.created_at > after.created_at,
                                    (files.c.created_at == after.created_at) & (files.c.id > after.id)))
    if order == "desc":
        return query.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit)
    return query.order_by(files.c.created_at.asc(), files.c.id.asc()).limit(limit)


@functools.cache
def file_cursor() -> Query:
    """Any of the tenant's uploads (deleted ones included) or result files by id (parameters ``file_id``,
    ``tenant_id``)."""
    uploads = select(File.id.label("id"), File.created_at.label("created_at")).where(
        File.id == bindparam("file_id"), File.tenant_id == bindparam("tenant_id"))
    results = (select(Artifact.id.label("id"), Artifact.created_at.label("created_at"))
               .join(Job, Job.id == Artifact.job_id)
               .where(Artifact.id == bindparam("file_id"), Job.tenant_id == bindparam("tenant_id")))
    either = union_all(uploads, results).subquery("file_cursor")
    return select(either.c.id, either.c.created_at)


def fine_tuned_models(tenant_id: Any) -> Query:
    """The tenant's fine-tuned models (its succeeded jobs' ``fine_tuned_model``, unless deleted), newest first."""
    return (select(Job.id.label("id"), Job.model.label("model"), Job.fine_tuned_model.label("fine_tuned_model"),
                   Job.tenant_id.label("tenant_id"), Job.spec.label("spec"), Job.finished_at.label("finished_at"),
                   Job.created_at.label("created_at"))
            .where(Job.tenant_id == tenant_id, Job.status == JobStatus.succeeded, Job.fine_tuned_model.is_not(None),
                   Job.model_deleted_at.is_(None))
            .order_by(Job.finished_at.desc(), Job.id.desc()))


@functools.cache
def fine_tuned_models_statement() -> Query:
    """``fine_tuned_models`` of tenant ``tenant_id``."""
    return fine_tuned_models(bindparam("tenant_id", type_=String()))


@functools.cache
def fine_tuned_model_statement() -> Query:
    """The tenant's fine-tuned model ``name``, made by job ``job_id`` (parameters ``tenant_id``, ``job_id``,
    ``name``)."""
    return fine_tuned_models(bindparam("tenant_id", type_=String())).where(
        Job.id == bindparam("job_id"), Job.fine_tuned_model == bindparam("name"))


@functools.cache
def artifact_statement() -> Query:
    """An artifact of one of the tenant's jobs (parameters ``artifact_id``, ``tenant_id``)."""
    return (select(*columns(Artifact)).join(Job, Job.id == Artifact.job_id)
            .where(Artifact.id == bindparam("artifact_id"), Job.tenant_id == bindparam("tenant_id")))


@functools.cache
def artifacts_statement() -> Query:
    """A job's artifacts in creation order (parameter ``job_id``)."""
    return (select(*columns(Artifact)).where(Artifact.job_id == bindparam("job_id"))
            .order_by(Artifact.created_at, Artifact.id))


def events_page(job_id: str, after: int | None, order: str, limit: int) -> Query:
    query = select(*columns(JobEvent)).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.seq < after if order == "desc" else JobEvent.seq > after)
    return query.order_by(JobEvent.seq.desc() if order == "desc" else JobEvent.seq.asc()).limit(limit)


@functools.cache
def events_after_statement() -> Query:
    """Up to ``limit`` events of ``job_id`` after seq ``after``, in order."""
    return (select(*columns(JobEvent)).where(JobEvent.job_id == bindparam("job_id"), JobEvent.seq > bindparam("after"))
            .order_by(JobEvent.seq).limit(bindparam("limit")))


@functools.cache
def job_status_statement() -> Query:
    """The status of job ``job_id`` (any tenant's: the caller checked ownership)."""
    return select(Job.status.label("status")).where(Job.id == bindparam("job_id"))


def metrics_page(job_id: str, names: list[str], after_step: int | None, limit: int) -> Query:
    query = select(*columns(MetricPoint)).where(MetricPoint.job_id == job_id)
    if names:
        query = query.where(MetricPoint.name.in_(names))
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    return query.order_by(MetricPoint.step, MetricPoint.name).limit(limit)


@functools.cache
def metric_names_statement() -> Query:
    return (select(MetricPoint.name.label("name")).where(MetricPoint.job_id == bindparam("job_id"))
            .distinct().order_by(MetricPoint.name))


@functools.cache
def checkpoint_model_statement() -> Query:
    """The model archive of checkpoint ``checkpoint_id`` of job ``job_id`` of tenant ``tenant_id`` (no row: none)."""
    return (select(Checkpoint.step.label("step"), Checkpoint.model_key.label("model_key"),
                   Checkpoint.model_sha256.label("model_sha256"), Job.fine_tuned_model.label("fine_tuned_model"))
            .join(Job, Job.id == Checkpoint.job_id)
            .where(Checkpoint.id == bindparam("checkpoint_id"), Checkpoint.job_id == bindparam("job_id"),
                   Job.tenant_id == bindparam("tenant_id"), Checkpoint.model_key.is_not(None),
                   Job.fine_tuned_model.is_not(None)))


@functools.cache
def checkpoint_step_statement() -> Query:
    return select(Checkpoint.step.label("step")).where(Checkpoint.id == bindparam("checkpoint_id"),
                                                       Checkpoint.job_id == bindparam("job_id"))


def checkpoints_page(job_id: str, before_step: int | None, limit: int) -> Query:
    """The job's checkpoints, newest first, with the job's ``fine_tuned_model`` (which names the models)."""
    query = (select(*columns(Checkpoint), Job.fine_tuned_model.label("fine_tuned_model"))
             .join(Job, Job.id == Checkpoint.job_id).where(Checkpoint.job_id == job_id))
    if before_step is not None:
        query = query.where(Checkpoint.step < before_step)
    return query.order_by(Checkpoint.step.desc()).limit(limit)


@functools.cache
def jobs_per_status_statement() -> Query:
    """How many jobs each status has (all tenants: the Prometheus gauge)."""
    return select(Job.status.label("status"), func.count(Job.id).label("jobs")).group_by(Job.status)


@functools.cache
def storage_statement() -> Query:
    """What tenant ``tenant_id`` stores, from its live rows: ``files_count``, ``files_bytes``, and the same for
    ``checkpoints`` (of its jobs: resume archives and checkpoint models, each an object) and ``artifacts``; one
    row."""
    tenant = bindparam("tenant_id", type_=String())
    tenant_jobs = select(Job.id).where(Job.tenant_id == tenant)
    of_jobs = [Checkpoint.job_id.in_(tenant_jobs)]
    live: dict[str, list[tuple[Any, list[Any]]]] = {
        "files": [(File.bytes, [File.tenant_id == tenant, File.deleted_at.is_(None)])],
        "checkpoints": [(Checkpoint.bytes, of_jobs), (Checkpoint.model_bytes, of_jobs)],
        "artifacts": [(Artifact.bytes, [Artifact.job_id.in_(tenant_jobs)])]}

    def total(parts: list[tuple[Any, list[Any]]], measure: Any) -> Any:
        return sum((select(measure(size)).where(*where).scalar_subquery() for size, where in parts),
                   start=literal(0))

    return select(*(column for name, parts in live.items() for column in (
        total(parts, func.count).label(f"{name}_count"),
        total(parts, lambda size: func.coalesce(func.sum(size), 0)).label(f"{name}_bytes"))))
