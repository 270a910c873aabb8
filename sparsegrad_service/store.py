"""The artifact store: uploaded datasets, checkpoint archives and job outputs, under job-scoped keys.

Two implementations of one small interface:

* :class:`LocalArtifactStore` — a directory (the default; the API serves downloads from it). Writes go to a
  temporary file and are renamed into place, so a half-written object is never visible.
* :class:`HttpArtifactStore` — for workers on machines without the API's disk: the same operations through
  the API's ``/internal/store/{key}`` routes, authenticated with the worker token (``Settings.api_url``).

Keys are relative paths of ``[A-Za-z0-9._-]`` segments (``jobs/ftjob-…/artifacts/adapter.tar.gz``); anything
that could leave the store root (``..``, absolute paths, backslashes) is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

log = logging.getLogger("sparsegrad.store")
T = TypeVar("T")

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
CHUNK = 1024 * 1024


class StoreError(RuntimeError):
    """The store could not write or read an object (disk full, read-only, unreachable API...)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    bytes: int
    sha256: str


def check_key(key: str) -> str:
    parts = key.split("/")
    if not parts or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise ValueError(f"invalid store key {key!r}")
    return key


def file_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class ArtifactStore(Protocol):
    def put_file(self, key: str, src: Path) -> StoredObject: ...
    def put_bytes(self, key: str, data: bytes) -> StoredObject: ...
    def fetch(self, key: str, dest: Path) -> Path: ...
    def delete(self, key: str) -> None: ...


class LocalArtifactStore:
    """Objects are files under ``root``; writes are atomic (temp file + fsync + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise ValueError(f"store key {key!r} leaves the store")
        return path

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def write_stream(self, key: str, chunks: Iterator[bytes] | BinaryIO, max_bytes: int | None = None) -> StoredObject:
        """Write an object from chunks (or a binary file object) atomically; ``max_bytes`` caps its size."""
        target = self.path(key)
        digest, size = hashlib.sha256(), 0
        for attempt in range(3):  # a delete may remove the folder between mkdir and mkstemp
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise StoreError(f"cannot write to the artifact store at {target.parent}: it keeps "
                                     "disappearing") from None
            except OSError as exc:
                raise StoreError(f"cannot write to the artifact store at {target.parent}: "
                                 f"{exc.strerror or exc}") from exc
        source = iter(lambda: chunks.read(CHUNK), b"") if hasattr(chunks, "read") else chunks  # type: ignore[union-attr]
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in source:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise StoreError(f"object larger than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, target)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise StoreError(f"cannot write {key} to the artifact store: {exc.strerror or exc}") from exc
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return StoredObject(key, size, digest.hexdigest())

    def put_file(self, key: str, src: Path) -> StoredObject:
        with open(src, "rb") as f:
            return self.write_stream(key, f)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        return self.write_stream(key, iter([data]))

    def fetch(self, key: str, dest: Path) -> Path:
        source = self.path(key)
        if not source.is_file():
            raise StoreError(f"{key} is not in the artifact store")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest

    def delete(self, key: str) -> None:
        """Delete the object and the folders it leaves empty (a folder a writer is filling is never empty)."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        self._remove_empty_folders(path.parent)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a folder of keys), and the folders that leaves empty."""
        path = self.path(prefix)
        shutil.rmtree(path, ignore_errors=True)
        self._remove_empty_folders(path.parent)

    def _remove_empty_folders(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone)
                if folder.exists():
                    return
            folder = folder.parent


class _Transient(Exception):
    """An API answer worth retrying (502/503/504: restarting, overloaded, database briefly away)."""


class HttpArtifactStore:
    """The store reached through the API (``/internal/store/{key}``) with the worker token.

    Every operation is idempotent (a key is written whole or not at all), so connection failures and
    502/503/504 answers are retried with backoff for up to ``retry_s`` seconds: an API restart or a
    short outage delays a checkpoint instead of failing the job."""

    TRANSIENT = frozenset({502, 503, 504})

    def __init__(self, api_url: str, token: str, timeout: float = 600.0, retry_s: float = 120.0) -> None:
        import httpx

        self._client = httpx.Client(
            base_url=api_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
        self.retry_s = retry_s

    def _url(self, key: str) -> str:
        return f"/internal/store/{check_key(key)}"

    def _check(self, response: object, key: str) -> None:
        status = getattr(response, "status_code", 0)
        if status in self.TRANSIENT:
            raise _Transient(f"artifact store (API) answered {status} for {key}")
        if status >= 400:
            text = getattr(response, "text", "")
            raise StoreError(f"artifact store (API) answered {status} for {key}: {text[:300]}")

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        import httpx

        deadline = time.monotonic() + self.retry_s
        delay = 0.5
        while True:
            try:
                return operation()
            except (httpx.TransportError, _Transient) as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreError(f"cannot {what} through the API (gave up after {self.retry_s:.0f} s): "
                                     f"{exc}") from exc
                log.warning("artifact store: cannot %s (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except httpx.HTTPError as exc:
                raise StoreError(f"cannot {what} through the API: {exc}") from exc

    def put_file(self, key: str, src: Path) -> StoredObject:
        def upload() -> dict[str, Any]:
            with open(src, "rb") as f:
                response = self._client.put(self._url(key), content=iter(lambda: f.read(CHUNK), b""))
            self._check(response, key)
            return dict(response.json())

        body = self._retrying(f"upload {key}", upload)
        size, sha = file_digest(src)
        if body.get("sha256") != sha or body.get("bytes") != size:
            raise StoreError(f"upload of {key} was corrupted in transit (sha256 mismatch)")
        return StoredObject(key, size, sha)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            return self.put_file(key, Path(tmp.name))

    def fetch(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")

        def download() -> None:
            with self._client.stream("GET", self._url(key)) as response:
                if response.status_code >= 400:
                    response.read()
                self._check(response, key)
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)

        try:
            self._retrying(f"download {key}", download)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, dest)
        return dest

    def delete(self, key: str) -> None:
        def remove() -> None:
            response = self._client.delete(self._url(key))
            if response.status_code != 404:
                self._check(response, key)

        self._retrying(f"delete {key}", remove)

    def close(self) -> None:
        self._client.close()


def pack_directory(directory: Path, archive: Path, compresslevel: int = 9) -> Path:
    """``directory``'s contents as a gzipped tar whose members are relative paths (no leading folder).
    ``compresslevel=0`` stores without compressing (model tensors barely compress)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=compresslevel) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return archive


def unpack_archive(archive: Path, directory: Path) -> Path:
    """Extract a store archive safely (no absolute paths, links or ``..``) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(directory, filter="data")
    return directory


def make_store(settings: object) -> LocalArtifactStore | HttpArtifactStore:
    """The store this process uses: through the API when ``api_url`` is set (remote workers), else local."""
    from .settings import Settings

    assert isinstance(settings, Settings)
    if settings.api_url:
        return HttpArtifactStore(settings.api_url, settings.worker_secret())
    return LocalArtifactStore(settings.artifact_root)


def file_key(file_id: str) -> str:
    return f"files/{file_id}/data"


def job_prefix(job_id: str) -> str:
    """The folder of every object of job ``job_id`` (checkpoints, artifacts)."""
    return f"jobs/{job_id}"


def checkpoint_key(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}/checkpoints/step-{step:08d}.tar.gz"


def artifact_key(job_id: str, filename: str) -> str:
    return f"{job_prefix(job_id)}/artifacts/{filename}"
