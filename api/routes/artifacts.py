"""A job's outputs (adapter archive, merged model archive, metrics CSV): list, describe and download."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select

from sparsegrad_service.models import Artifact
from sparsegrad_service.schemas import ArtifactPublic, ArtifactsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import ContextDep, CurrentTenant, SessionDep
from ..errors import ApiError
from ..ownership import tenant_artifact, tenant_job
from ..serializers import artifact_object

router = APIRouter(tags=["artifacts"], responses=error_responses(401, 404))


@router.get("/fine_tuning/jobs/{job_id}/artifacts", response_model=ArtifactsPublic)
def list_artifacts(job_id: str, session: SessionDep, tenant: CurrentTenant) -> ArtifactsPublic:
    """List a job's artifacts."""
    tenant_job(session, tenant.id, job_id)
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id)
                           .order_by(Artifact.created_at, Artifact.id))
    return ArtifactsPublic(data=[artifact_object(r) for r in rows])


@router.get("/artifacts/{artifact_id}", response_model=ArtifactPublic)
def retrieve_artifact(artifact_id: str, session: SessionDep, tenant: CurrentTenant) -> ArtifactPublic:
    """Retrieve an artifact's description (kind, size, sha256)."""
    return artifact_object(tenant_artifact(session, tenant.id, artifact_id))


@router.get("/artifacts/{artifact_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The artifact's bytes."}})
def download_artifact(artifact_id: str, session: SessionDep, tenant: CurrentTenant, context: ContextDep) -> FileResponse:
    """Download an artifact; `X-Content-SHA256` carries its checksum."""
    row = tenant_artifact(session, tenant.id, artifact_id)
    path = context.store.path(row.storage_key)
    if not path.is_file():
        raise ApiError(404, f"The contents of artifact '{artifact_id}' are missing from the store.",
                       code="content_missing")
    return FileResponse(path, filename=row.filename, headers={"X-Content-SHA256": row.sha256})
