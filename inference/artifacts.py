"""A fine-tuned model's stored archives as folders the loaders read: fetched from the artifact store (the local
directory, or the API's ``/internal/store`` with the worker token when ``Settings.api_url`` is set), checked
against the SHA-256 the API sent, unpacked.

:meth:`ArtifactFiles.unpacked` gives a temporary folder (deleted when the load is done: the model lives in memory);
:meth:`ArtifactFiles.kept` a folder kept under ``<work_dir>/inference/<sha256>`` for engines that read the files
again later (vLLM loads LoRA adapters by path).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sparsegrad_service.schemas.inference import StoredWeights
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore, StoreError, file_digest, make_store, unpack_archive

from .errors import InferenceError

COMPLETE = ".complete"
"""Written last into a kept folder: it was verified and fully unpacked."""


class ArtifactFiles:
    def __init__(self, settings: Settings, store: ArtifactStore | None = None) -> None:
        self.store: ArtifactStore = store if store is not None else make_store(settings)
        self.root = settings.work_dir / "inference"

    def _fetch_verified(self, artifact: StoredWeights, scratch: Path) -> Path:
        """The archive in ``scratch``; :class:`InferenceError` unless its SHA-256 is the one recorded."""
        try:
            archive = self.store.fetch(artifact.key, scratch / "archive.tar.gz")
        except StoreError as exc:
            raise InferenceError(500, f"The model's stored files cannot be read: {exc}",
                                 code="artifact_unavailable") from exc
        _, sha256 = file_digest(archive)
        if sha256 != artifact.sha256:
            raise InferenceError(500, f"The stored archive {artifact.key} has SHA-256 {sha256}, not the recorded "
                                 f"{artifact.sha256}; it was not loaded.", code="artifact_corrupted")
        return archive

    @contextlib.contextmanager
    def unpacked(self, artifact: StoredWeights) -> Iterator[Path]:
        """The archive's contents in a temporary folder, for as long as the ``with`` block runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="load-", dir=self.root) as tmp:
            archive = self._fetch_verified(artifact, Path(tmp))
            folder = unpack_archive(archive, Path(tmp) / "files")
            archive.unlink()
            yield folder

    def kept(self, artifact: StoredWeights) -> Path:
        """The archive's contents in ``<work_dir>/inference/<sha256>`` (fetched and verified once)."""
        folder = self.root / artifact.sha256
        if (folder / COMPLETE).is_file():
            return folder
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=self.root) as tmp:
            archive = self._fetch_verified(artifact, Path(tmp))
            staged = unpack_archive(archive, Path(tmp) / "files")
            (staged / COMPLETE).write_text(artifact.key)
            shutil.rmtree(folder, ignore_errors=True)
            staged.rename(folder)
        return folder
