"""The model a job starts from: a base model of the registry, or (continued training) one of the tenant's
fine-tuned models or checkpoints, loaded as base + the chain of stored weights that made it.

:func:`resolve_job_model` resolves the job's ``model`` (:func:`~sparsegrad_service.model_resolution.resolve_model`,
for the job's tenant); :func:`materialize` fetches each archive of the chain, checks its sha256, and merges it
into what came before (``sparsegrad_core.recipe.merge``: the base is loaded for the adapter's task and labels,
and a SparseGrad adapter's fingerprint check refuses a different base before anything changes), saving the
result as a model folder that ``finetune`` and ``load_base_for`` load like any local model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sparsegrad_core.recipe import merge
from sparsegrad_service.job_store import JobStore
from sparsegrad_service.model_resolution import ModelResolutionError, ModelWeights, ResolvedModel
from sparsegrad_service.registry import model_registry
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore, StoreError, file_digest, unpack_archive

from .errors import JobError


def resolve_job_model(settings: Settings, job_store: JobStore, model: str | None = None) -> ResolvedModel:
    """What the job trains from (``model``: another name of the job's tenant, e.g. its fine-tuned model); a
    name that does not resolve, or a model that cannot be loaded now, is a ``model_not_available`` JobError."""
    try:
        resolved = job_store.resolve_model(model_registry(settings), model)
    except ModelResolutionError as exc:
        raise JobError("model_not_available", exc.message, "model") from exc
    if not resolved.servable:
        raise JobError("model_not_available", f"model {resolved.name!r} cannot be loaded: {resolved.unservable}",
                       "model")
    return resolved


def fetch_weights(store: ArtifactStore, weights: ModelWeights, folder: Path) -> Path:
    """Fetch and unpack one archive of a chain into ``folder``; StoreError when it is missing or altered."""
    archive = store.fetch(weights.storage_key, folder.with_name(folder.name + ".tar.gz"))
    try:
        if file_digest(archive)[1] != weights.sha256:
            raise StoreError(f"{weights.storage_key} does not match its recorded sha256")
        return unpack_archive(archive, folder)
    finally:
        archive.unlink(missing_ok=True)


def materialize(store: ArtifactStore, resolved: ResolvedModel, work: Path) -> str:
    """What ``finetune`` loads to start from ``resolved``: the base model's source for a base model, else a
    folder under ``work`` holding the base with every archive of the chain applied in order. A SparseGrad
    adapter made on another base (its fingerprints differ) is a ``parent_model_mismatch`` JobError."""
    source = resolved.base.source
    previous: Path | None = None
    for i, weights in enumerate(resolved.chain):
        folder = fetch_weights(store, weights, work / f"link-{i}")
        if weights.format == "model":
            source, current = str(folder), folder
        else:
            current = work / f"model-{i}"
            try:
                merge(source, folder, current)
            except ValueError as exc:  # AdapterMismatchError: the fingerprints differ
                raise JobError("parent_model_mismatch", f"model {resolved.name!r} cannot be rebuilt from base "
                               f"model {resolved.base.name!r}: {exc}", "model") from exc
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            source = str(current)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        previous = current
    return source
