"""What the delete routes share: the refusals of what is still in use (409) and removing what a committed
delete left in the artifact store and in the workers' scratch folders."""

from __future__ import annotations

import shutil

from sparsegrad_service.models import Job
from sparsegrad_service.retention import delete_objects, job_scratch
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore, job_prefix

from .errors import conflict
from .timestamps import as_utc


def refuse_while_merging(job: Job, what: str) -> None:
    """409 while a merged model of ``job`` was asked for and no merge run has finished since."""
    if job.merge_requested_at is not None:
        requested = as_utc(job.merge_requested_at).isoformat(timespec="seconds")
        raise conflict(f"Cannot delete {what}: a merged model of job {job.id} was requested at {requested} and "
                       "no worker has finished it yet; try again once the merge is done.", "merge_in_progress")


def remove_job_storage(store: LocalArtifactStore, settings: Settings, job_id: str, keys: list[str]) -> None:
    """After a job's rows were deleted: its objects, anything else under its store folder (a write cut short),
    and the folders a worker on this machine left for it."""
    delete_objects(store, keys)
    store.delete_prefix(job_prefix(job_id))
    for folder in job_scratch(settings.work_dir, job_id):
        shutil.rmtree(folder, ignore_errors=True)
