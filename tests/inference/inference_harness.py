"""Helpers of the inference server tests: a fine-tuned model as the API describes it (:class:`Trained`), storing an
export folder as a job's archive, the server's settings and a base model's description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sparsegrad_service.schemas.inference import ServedModel, StoredWeights
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore, pack_directory

TOKEN = "inference-test-token-0123456789"


@dataclass(frozen=True)
class Trained:
    """A fine-tuned model in the store: what the API would send, and the export folder it came from."""

    served: ServedModel
    export_dir: Path
    source: str
    """The base model's folder."""


def store_folder(store: LocalArtifactStore, folder: Path, key: str, fmt: str = "adapter") -> StoredWeights:
    """``folder`` packed and stored under ``key`` as the worker stores a job's outputs."""
    archive = pack_directory(folder, folder.parent / f"{folder.name}.tar.gz")
    stored = store.put_file(key, archive)
    return StoredWeights(key=key, sha256=stored.sha256, format=fmt)  # type: ignore[arg-type]


def server_settings(root: Path, tiny_llama_dir: Path, tiny_model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": root / "data", "worker_token": TOKEN, "redis_url": None, "database_url": None,
        "models": {"tiny-llama": str(tiny_llama_dir), "tiny-bert": str(tiny_model_dir)},
        **overrides}
    return Settings(**values)  # type: ignore[arg-type]



def base_model(name: str = "tiny-llama") -> dict[str, object]:
    return ServedModel(name=name, base=name, task="causal_lm").model_dump()
