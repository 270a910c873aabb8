"""What a job's method shows of itself: SparseGrad's calibration spectra and chosen blocks, the trained
model's reference outputs. Kept out of the job object, which stays the size of OpenAI's."""

from __future__ import annotations

from fastapi import APIRouter

from sparsegrad_service.schemas.common import error_responses
from sparsegrad_service.schemas.insight import JobInsight

from ..deps import CurrentTenant, ReadsDep
from ..errors import not_found
from ..queries import job_insight_statement
from ..serializers import job_insight

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning jobs"], responses=error_responses(401, 404))


@router.get("/{job_id}/insight", response_model=JobInsight)
async def retrieve_insight(job_id: str, tenant: CurrentTenant, reads: ReadsDep) -> JobInsight:
    """Retrieve the job's method insight: calibration spectra, block sizes, reference outputs (each null until known)."""
    row = await reads.first(job_insight_statement(), {"job_id": job_id, "tenant_id": tenant.id})
    if row is None:
        raise not_found("fine-tuning job", job_id, param="job_id")
    return job_insight(row)
