"""``resolve_model``: base names, a tenant's fine-tuned models and their checkpoints resolve to the chain of
stored weights that loads them; another tenant's, unknown, unfinished and deleted names each raise their own
error. Rows only (no training)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import update
from worker_helpers import create_job, job_spec

from sparsegrad_service.db import session_scope
from sparsegrad_service.model_names import checkpoint_model_name, fine_tuned_model_name, parse_model_name
from sparsegrad_service.model_resolution import (
    LineageEntry,
    ModelDeleted,
    ModelNotFound,
    ModelNotReady,
    ModelOfAnotherTenant,
    UnknownModel,
    model_lineage,
    resolve_model,
)
from sparsegrad_service.models import Artifact, Checkpoint, Job, Tenant, utcnow
from sparsegrad_service.registry import model_registry
from sparsegrad_service.settings import Settings


def succeed(settings: Settings, job_id: str, *, kind: str = "adapter", steps: tuple[int, ...] = (8, 20)) -> str:
    """Mark job ``job_id`` succeeded with an artifact of ``kind`` and checkpoint models at ``steps``."""
    with session_scope(settings.sql_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        root = parse_model_name(job.model)
        base = job.model if root is None else session.get(Job, root.job_id).fine_tuned_model.split(":")[1]  # type: ignore[union-attr]
        job.status, job.finished_at = "succeeded", utcnow()  # type: ignore[assignment]
        job.fine_tuned_model = fine_tuned_model_name(base, job.tenant_id, None, job_id)
        session.add(Artifact(job_id=job_id, kind=kind, filename=f"{job_id}-{kind}.tar.gz", bytes=10,
                             sha256="a" * 64, storage_key=f"jobs/{job_id}/artifacts/{kind}"))
        for step in steps:
            session.add(Checkpoint(job_id=job_id, step=step, model_kind=kind, model_key=f"jobs/{job_id}/ckpt-{step}",
                                   model_bytes=5, model_sha256="b" * 64))
        return job.fine_tuned_model


def child_of(settings: Settings, parent_job: str, model: str) -> str:
    """A queued job of the parent's tenant whose ``model`` is ``model``."""
    with session_scope(settings.sql_url) as session:
        parent = session.get(Job, parent_job)
        assert parent is not None
        child = Job(tenant_id=parent.tenant_id, model=model, training_file_id=parent.training_file_id,
                    spec=job_spec(), status="queued", seed=1)
        session.add(child)
        session.flush()
        return child.id


def test_names_resolve_to_their_chain_and_lineage(sqlite_db: str, make_settings: Callable[..., Settings],
                                                  sst2_bytes: bytes) -> None:
    settings = make_settings(sqlite_db)
    registry = model_registry(settings)
    parent = create_job(settings, sst2_bytes[:2000])
    name = succeed(settings, parent)
    ckpt = checkpoint_model_name(name, 8)
    child = child_of(settings, parent, ckpt)
    child_name = succeed(settings, child, steps=(5,))
    with session_scope(settings.sql_url) as session:
        tenant = session.get(Job, parent).tenant_id  # type: ignore[union-attr]
        base = resolve_model(session, tenant, "tiny-bert", registry)
        assert base.kind == "base" and base.chain == () and base.servable and base.base.name == "tiny-bert"

        model = resolve_model(session, tenant, name, registry)
        assert (model.kind, model.job_id, model.step, model.task, model.method) == (
            "fine_tuned", parent, None, "classification", "sparsegrad")
        assert [w.storage_key for w in model.chain] == [f"jobs/{parent}/artifacts/adapter"]
        assert model.lineage == (LineageEntry("tiny-bert"), LineageEntry(name, parent))

        checkpoint = resolve_model(session, tenant, ckpt, registry)
        assert (checkpoint.kind, checkpoint.step, checkpoint.weights.format) == ("checkpoint", 8, "adapter")  # type: ignore[union-attr]
        assert checkpoint.weights.storage_key == f"jobs/{parent}/ckpt-8"  # type: ignore[union-attr]

        grandchild = resolve_model(session, tenant, checkpoint_model_name(child_name, 5), registry)
        assert child_name.startswith("ft:tiny-bert:")  # the root base names the model
        assert [w.storage_key for w in grandchild.chain] == [f"jobs/{parent}/ckpt-8", f"jobs/{child}/ckpt-5"]
        assert [e.model for e in grandchild.lineage] == ["tiny-bert", ckpt, checkpoint_model_name(child_name, 5)]
        assert grandchild.servable and grandchild.base.name == "tiny-bert"
        assert model_lineage(session, tenant, ckpt, registry) == [LineageEntry("tiny-bert"),
                                                                  LineageEntry(ckpt, parent, 8)]


def test_a_whole_model_starts_the_chain_again(sqlite_db: str, make_settings: Callable[..., Settings],
                                              sst2_bytes: bytes) -> None:
    settings = make_settings(sqlite_db)
    parent = create_job(settings, sst2_bytes[:2000])
    name = succeed(settings, parent)
    child = child_of(settings, parent, name)
    child_name = succeed(settings, child, kind="merged_model")
    with session_scope(settings.sql_url) as session:
        tenant = session.get(Job, parent).tenant_id  # type: ignore[union-attr]
        resolved = resolve_model(session, tenant, child_name, model_registry(settings))
        assert [w.format for w in resolved.chain] == ["model"] and resolved.merged == resolved.weights


def test_each_refusal_has_its_own_error(sqlite_db: str, make_settings: Callable[..., Settings],
                                        sst2_bytes: bytes) -> None:
    settings = make_settings(sqlite_db)
    registry = model_registry(settings)
    parent = create_job(settings, sst2_bytes[:2000])
    name = succeed(settings, parent)
    running = create_job(settings, sst2_bytes[:2000])
    with session_scope(settings.sql_url) as session:
        tenant = session.get(Job, parent).tenant_id  # type: ignore[union-attr]
        other = Tenant(name="other")
        session.add(other)
        session.flush()
        other_id = other.id
        running_tenant = session.get(Job, running).tenant_id  # type: ignore[union-attr]

    def error(tenant_id: str, model: str) -> type[Exception]:
        with session_scope(settings.sql_url) as session, pytest.raises(Exception) as caught:
            resolve_model(session, tenant_id, model, registry)
        return caught.type

    assert error(tenant, "gpt-nothing") is UnknownModel
    assert error(tenant, name.replace(parent, "ftjob-0000")) is ModelNotFound
    assert error(tenant, name + "x") is ModelNotFound  # a name its job does not have
    assert error(tenant, checkpoint_model_name(name, 9)) is ModelNotFound  # a step not kept as a model
    assert error(other_id, name) is ModelOfAnotherTenant
    assert error(other_id, checkpoint_model_name(name, 8)) is ModelOfAnotherTenant
    assert str(ModelOfAnotherTenant("m", "x")) == "x"
    assert error(running_tenant, fine_tuned_model_name("tiny-bert", running_tenant, None, running)) is ModelNotReady
    with session_scope(settings.sql_url) as session:
        session.execute(update(Job).where(Job.id == parent).values(model_deleted_at=utcnow()))
    assert error(tenant, name) is ModelDeleted
    assert error(tenant, checkpoint_model_name(name, 8)) is ModelDeleted
