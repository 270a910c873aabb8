"""A job's outputs (adapter archive, merged model archive, metrics CSV): list, describe and download."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from sparsegrad_service.schemas import ArtifactPublic, ArtifactsPublic
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, ReadsDep, StoreDep
from ..errors import ApiError
from ..ownership import read_artifact, read_job
from ..queries import artifacts_statement
from ..serializers import artifact_object

router = APIRouter(tags=["artifacts"], responses=error_responses(401, 404))


@router.get("/fine_tuning/jobs/{job_id}/artifacts", response_model=ArtifactsPublic)
async def list_artifacts(job_id: str, tenant: CurrentTenant, reads: ReadsDep) -> ArtifactsPublic:
    """List a job's artifacts."""
    await read_job(reads, tenant.id, job_id)
    rows = await reads.all(artifacts_statement(), {"job_id": job_id})
    return ArtifactsPublic(data=[artifact_object(r) for r in rows])


@router.get("/artifacts/{artifact_id}", response_model=ArtifactPublic)
async def retrieve_artifact(artifact_id: str, tenant: CurrentTenant, reads: ReadsDep) -> ArtifactPublic:
    """Retrieve an artifact's description (kind, size, sha256)."""
    return artifact_object(await read_artifact(reads, tenant.id, artifact_id))


@router.get("/artifacts/{artifact_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The artifact's bytes."}})
async def download_artifact(artifact_id: str, tenant: CurrentTenant, reads: ReadsDep, store: StoreDep) -> FileResponse:
    """Download an artifact; `X-Content-SHA256` carries its checksum."""
    row = await read_artifact(reads, tenant.id, artifact_id)
    path = store.path(row.storage_key)
    if not path.is_file():
        raise ApiError(404, f"The contents of artifact '{artifact_id}' are missing from the store.",
                       code="content_missing")
    return FileResponse(path, filename=row.filename, headers={"X-Content-SHA256": row.sha256})
