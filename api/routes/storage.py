"""The tenant's storage: how many bytes its files, checkpoints and artifacts hold."""

from __future__ import annotations

from fastapi import APIRouter

from sparsegrad_service.schemas import StorageCategory, StorageUsage
from sparsegrad_service.schemas.common import error_responses

from ..deps import CurrentTenant, ReadsDep
from ..queries import storage_statement

router = APIRouter(prefix="/storage", tags=["storage"], responses=error_responses(401))


@router.get("", response_model=StorageUsage)
async def get_storage(tenant: CurrentTenant, reads: ReadsDep) -> StorageUsage:
    """Bytes and objects the tenant stores, by kind, counted from its live files, checkpoints and artifacts
    (deleting them gives the bytes back)."""
    row = await reads.first(storage_statement(), {"tenant_id": tenant.id})
    kinds = {name: StorageCategory(count=int(getattr(row, f"{name}_count") or 0),
                                   bytes=int(getattr(row, f"{name}_bytes") or 0))
             for name in ("files", "checkpoints", "artifacts")}
    return StorageUsage(files=kinds["files"], checkpoints=kinds["checkpoints"], artifacts=kinds["artifacts"],
                        total_bytes=sum(kind.bytes for kind in kinds.values()))
