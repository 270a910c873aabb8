"""What the delete routes share: the refusals of what is still in use (409) and removing what a committed
delete left in the artifact store and in the workers' scratch folders."""

from __future__ import annotations

import shutil

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sparsegrad_service.models import Artifact, Job
from sparsegrad_service.retention import MODEL_ARTIFACT_KINDS, delete_objects, job_built_on, job_scratch
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


def refuse_while_trained_on(session: Session, job: Job, what: str) -> None:
    """409 while another job starts from ``job``'s fine-tuned model or one of its checkpoints and still needs
    it (continued training: its model is built on this one)."""
    user = job_built_on(session, job)
    if user is not None:
        uses = f"its model {user.fine_tuned_model} is built on" if user.fine_tuned_model else "it fine-tunes"
        raise conflict(f"Cannot delete {what}: job {user.id} ('{user.status}') started from {user.model} and {uses} "
                       "it; delete that job or its model first.", "model_in_use")


def remove_job_storage(store: LocalArtifactStore, settings: Settings, job_id: str, keys: list[str]) -> None:
    """After a job's rows were deleted: its objects, anything else under its store folder (a write cut short),
    and the folders a worker on this machine left for it."""
    delete_objects(store, keys)
    store.delete_prefix(job_prefix(job_id))
    for folder in job_scratch(settings.work_dir, job_id):
        shutil.rmtree(folder, ignore_errors=True)


def delete_result_file(session: Session, store: LocalArtifactStore, tenant_id: str, file_id: str) -> bool:
    """Delete a result file (a job's artifact, as the Files API shows it); False when the tenant has none by
    that id. A file that is part of a fine-tuned model (its adapter, LoRA or merged archive) is a 409 that
    names the model to delete instead: the model is deleted whole or not at all."""
    found = session.execute(select(Artifact, Job).join(Job, Job.id == Artifact.job_id)
                            .where(Artifact.id == file_id, Job.tenant_id == tenant_id)
                            .with_for_update(of=Artifact)).first()
    if found is None:
        return False
    artifact, job = found
    if artifact.kind in {str(kind) for kind in MODEL_ARTIFACT_KINDS}:
        owner = f"fine-tuned model {job.fine_tuned_model}" if job.fine_tuned_model else f"job {job.id}"
        raise conflict(f"File {file_id} ({artifact.kind}) is part of {owner}: delete the model "
                       "(DELETE /v1/models/{model}) or the job (DELETE /v1/fine_tuning/jobs/{id}) instead.",
                       "file_is_model")
    session.execute(delete(Artifact).where(Artifact.id == file_id))
    session.commit()
    delete_objects(store, [artifact.storage_key])
    return True
