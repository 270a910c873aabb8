"""``SparseGradClient``: the service's REST API (``/v1``) over httpx, with typed errors, resumable event
streams and verified artifact downloads.

Every method returns the API's own response models (:mod:`sparsegrad_service.schemas`: ``JobPublic``,
``FileObject``, ``JobsPublic``...), the shapes of the OpenAI fine-tuning API plus the service's fields; an
error answer raises :class:`ApiError` whose message names the field, line or value at fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from sparsegrad_service.enums import TERMINAL_STATUSES
from sparsegrad_service.schemas import (
    ArtifactsPublic,
    CheckpointsPublic,
    FileDeleted,
    FileObject,
    FilesPublic,
    Hyperparameters,
    JobDefaults,
    JobDeleted,
    JobEventPublic,
    JobEventsPublic,
    JobInsight,
    JobPublic,
    JobsPublic,
    MethodIn,
    MetricsPublic,
    ModelDeleted,
    ModelsPublic,
    StorageUsage,
    TaskIn,
)

from .sse import parse_sse
from .webhooks import WebhookEndpoints

Progress = Callable[[int, int | None], None]
"""Transfer progress callback: ``(bytes done, total bytes or None)``."""

Model = TypeVar("Model", bound=BaseModel)
RequestPart = BaseModel | Mapping[str, Any]
"""A part of a job request: its model (``TaskIn``, ``MethodIn``, ``Hyperparameters``) or the same as a dict."""

RETRY_STATUSES = frozenset({502, 503, 504})
"""Answers of a service that is restarting or behind a proxy that lost it: an event stream retries them."""
CHUNK = 1024 * 1024


class ApiError(Exception):
    """An error answer of the API (``{"error": {"message", "type", "param", "code"}}``)."""

    def __init__(
        self, status: int, type: str | None, code: str | None, param: str | None, message: str,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.message = message
        self.details = details
        """Per-item problems when the API lists them (a file's bad lines: ``{"line", "field", "message"}``)."""

    @property
    def is_validation(self) -> bool:
        """The request itself was wrong (bad field, bad file, too large): fix the input and retry."""
        return self.status in (400, 409, 413, 415, 422)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, type={self.type!r}, code={self.code!r}, param={self.param!r}, message={self.message!r})"

    @classmethod
    def from_error_body(cls, status: int, body: Any) -> ApiError | None:
        """The error of an ``{"error": {...}}`` body, or None when the body is not one."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return None
        details = error.get("details")
        return cls(status, error.get("type"), error.get("code"), error.get("param"),
                   str(error.get("message") or f"HTTP {status}"), details if isinstance(details, list) else None)

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = cls.from_error_body(response.status_code, body)
        if error is not None:
            return error
        detail = body.get("detail") if isinstance(body, dict) else None
        text = str(detail) if detail else (response.text.strip()[:500] or response.reason_phrase)
        return cls(response.status_code, None, None, None, f"HTTP {response.status_code}: {text}")


class DownloadError(RuntimeError):
    """A downloaded artifact does not match its recorded size or SHA-256."""


class _ProgressReader:
    """A binary file that reports how much of it was read (httpx streams multipart uploads from it)."""

    def __init__(self, file: IO[bytes], total: int, progress: Progress) -> None:
        self._file, self._total, self._progress, self._done = file, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._done += len(chunk)
        self._progress(self._done, self._total)
        return chunk

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)


def _body(part: RequestPart | None) -> Any:
    """A request part as JSON: a model with only the fields it was given (the API tells given from default)."""
    if isinstance(part, BaseModel):
        return part.model_dump(mode="json", exclude_unset=True)
    return None if part is None else dict(part)


def _filename_from(response: httpx.Response) -> str | None:
    match = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    return Path(match.group(1)).name if match else None


class SparseGradClient:
    """Client of one service: ``SparseGradClient("http://127.0.0.1:8000", api_key="sg-...")``."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float = 60.0, *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        headers = {"User-Agent": "sparsegrad-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self.webhooks = WebhookEndpoints(self._call)
        """The tenant's webhook endpoints and their deliveries (:class:`~sparsegrad_client.webhooks.WebhookEndpoints`)."""

    def __enter__(self) -> SparseGradClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _call(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        """The answer parsed into its response model."""
        return model.model_validate_json(self._request(method, path, **kwargs).content)

    @staticmethod
    def _params(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    # ------------------------------------------------------------------------------------- service status
    def health(self) -> bool:
        """True when ``/readyz`` answers 200 (database and broker reachable)."""
        try:
            return self._http.get("/readyz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    # ---------------------------------------------------------------------------------------------- files
    def upload_file(
        self, path: str | Path, *, purpose: str = "fine-tune", progress: Progress | None = None, **mapping: Any
    ) -> FileObject:
        """Upload a JSONL/CSV/TSV dataset; ``mapping`` form fields (``text_column="sentence"``, ``task``,
        ``label_column``, ...) tell the validator where the fields are. Returns the file object."""
        path = Path(path)
        fields = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in mapping.items() if v is not None}
        total = path.stat().st_size
        with open(path, "rb") as f:
            body: Any = f if progress is None else _ProgressReader(f, total, progress)
            files = {"file": (path.name, body, "application/octet-stream")}
            return self._call(FileObject, "POST", "/v1/files", data={"purpose": purpose, **fields}, files=files,
                              timeout=httpx.Timeout(60.0, write=None, read=600.0))

    def list_files(self) -> FilesPublic:
        return self._call(FilesPublic, "GET", "/v1/files")

    def get_file(self, file_id: str) -> FileObject:
        return self._call(FileObject, "GET", f"/v1/files/{file_id}")

    def delete_file(self, file_id: str) -> FileDeleted:
        """Delete a file and its bytes (refused with 409 while a job that has not finished uses it)."""
        return self._call(FileDeleted, "DELETE", f"/v1/files/{file_id}")

    def list_models(self) -> ModelsPublic:
        return self._call(ModelsPublic, "GET", "/v1/models")

    def delete_model(self, model: str) -> ModelDeleted:
        """Delete a fine-tuned model (its adapter and merged-model archives); base models cannot be deleted."""
        return self._call(ModelDeleted, "DELETE", f"/v1/models/{quote(model, safe=':')}")

    def get_storage(self) -> StorageUsage:
        """The bytes your files, checkpoints and artifacts hold."""
        return self._call(StorageUsage, "GET", "/v1/storage")

    # ----------------------------------------------------------------------------------------------- jobs
    def create_job(
        self, model: str, training_file: str, validation_file: str | None = None, *,
        task: TaskIn | Mapping[str, Any] | None = None, method: MethodIn | Mapping[str, Any] | None = None,
        hyperparameters: Hyperparameters | Mapping[str, Any] | None = None, idempotency_key: str | None = None,
        **extra: Any,
    ) -> JobPublic:
        """Create a fine-tuning job (the fields of ``JobCreate``; ``extra``: ``seed``, ``suffix``, ``metadata``,
        ``merge_model``...). The ``Idempotency-Key`` (generated when not given) makes retries safe: a request
        lost in transit is sent again with the same key and yields the same job."""
        body: dict[str, Any] = {"model": model, "training_file": training_file}
        body.update(self._params(validation_file=validation_file, task=_body(task), method=_body(method),
                                 hyperparameters=_body(hyperparameters), **extra))
        headers = {"Idempotency-Key": idempotency_key or f"sgcli-{uuid.uuid4().hex}"}
        for attempt in range(3):
            try:
                return self._call(JobPublic, "POST", "/v1/fine_tuning/jobs", json=body, headers=headers)
            except httpx.TransportError:
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    def request_merge(self, job_id: str) -> JobPublic:
        """Ask for a merged-model artifact of a succeeded job (produced by a worker)."""
        return self._call(JobPublic, "POST", f"/v1/fine_tuning/jobs/{job_id}/merge")

    def get_defaults(self) -> JobDefaults:
        """The methods, settings and selections a job may name, and every default a request resolves to."""
        return self._call(JobDefaults, "GET", "/v1/fine_tuning/defaults")

    def get_job(self, job_id: str) -> JobPublic:
        return self._call(JobPublic, "GET", f"/v1/fine_tuning/jobs/{job_id}")

    def get_job_insight(self, job_id: str) -> JobInsight:
        """The job's method insight: calibration spectra, chosen block sizes, reference outputs."""
        return self._call(JobInsight, "GET", f"/v1/fine_tuning/jobs/{job_id}/insight")

    def list_jobs(self, status: str | None = None, limit: int | None = None, after: str | None = None, *,
                  metadata: Mapping[str, str] | None = None) -> JobsPublic:
        """One page of jobs, newest first (``has_more``: older jobs exist; pass the last id as ``after``); only
        those with ``status`` and every ``metadata`` pair."""
        params = self._params(status=status, limit=limit, after=after)
        params.update({f"metadata[{key}]": value for key, value in (metadata or {}).items()})
        return self._call(JobsPublic, "GET", "/v1/fine_tuning/jobs", params=params)

    def iter_jobs(self, status: str | None = None, page_size: int = 100) -> Iterator[JobPublic]:
        """Every job of the tenant, page after page."""
        after: str | None = None
        while True:
            page = self.list_jobs(status=status, limit=page_size, after=after)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    def cancel_job(self, job_id: str) -> JobPublic:
        return self._call(JobPublic, "POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")

    def pause_job(self, job_id: str) -> JobPublic:
        return self._call(JobPublic, "POST", f"/v1/fine_tuning/jobs/{job_id}/pause")

    def resume_job(self, job_id: str) -> JobPublic:
        return self._call(JobPublic, "POST", f"/v1/fine_tuning/jobs/{job_id}/resume")

    def delete_job(self, job_id: str) -> JobDeleted:
        """Delete a finished job with its checkpoints, artifacts, events and metrics (its files stay)."""
        return self._call(JobDeleted, "DELETE", f"/v1/fine_tuning/jobs/{job_id}")

    def wait_for_job(self, job_id: str, poll_s: float = 2.0, timeout: float | None = None) -> JobPublic:
        """Poll until the job is succeeded, failed or cancelled; returns the final job object."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.status in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout:.0f} s")
            time.sleep(poll_s)

    # --------------------------------------------------------------------------------------------- events
    def list_events(
        self, job_id: str, after: str | None = None, limit: int | None = None, order: str | None = None
    ) -> JobEventsPublic:
        params = self._params(after=after, limit=limit, order=order)
        return self._call(JobEventsPublic, "GET", f"/v1/fine_tuning/jobs/{job_id}/events", params=params)

    def stream_events(
        self, job_id: str, last_event_id: str | None = None, *, max_retries: int = 20,
        read_timeout: float = 90.0,
    ) -> Iterator[JobEventPublic]:
        """Live events of a job (Server-Sent Events) until the server sends ``event: end``.

        A dropped connection is reopened with ``Last-Event-ID``, so no event is lost or repeated; after
        ``max_retries`` consecutive failures the last error is raised. ``last_event_id`` is the stream's
        event id (the seq of ``ftevent-<seq>``) after which to start.
        """
        failures, delay = 0, 1.0
        timeout = httpx.Timeout(10.0, read=read_timeout)
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            try:
                with self._http.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events/stream",
                                       headers=headers, timeout=timeout) as response:
                    if response.status_code in RETRY_STATUSES:
                        raise httpx.TransportError(f"HTTP {response.status_code} (service restarting?)")
                    if response.status_code >= 400:
                        response.read()
                        raise ApiError.from_response(response)
                    received = False
                    for event in parse_sse(response.iter_lines()):
                        failures, received = 0, True
                        if event.retry_ms is not None:
                            delay = max(0.1, event.retry_ms / 1000)
                        if event.event == "end":
                            return
                        if event.event == "revoked":  # the key was revoked while streaming
                            raise (ApiError.from_error_body(401, json.loads(event.data))
                                   or ApiError(401, None, "invalid_api_key", None, event.data))
                        if event.id is not None:
                            last_event_id = event.id
                        yield JobEventPublic.model_validate_json(event.data)
                # closed without `end` (a server restart): reconnect, unless the job is over and nothing is left
                if not received and self.get_job(job_id).status in TERMINAL_STATUSES:
                    return
                failures += 1
            except httpx.TransportError:
                failures += 1
                if failures > max_retries:
                    raise
            time.sleep(min(delay * failures, 10.0))

    # ------------------------------------------------------------------------------ metrics and outputs
    def get_metrics(self, job_id: str, name: str | None = None, after_step: int | None = None) -> MetricsPublic:
        params = self._params(name=name, after_step=after_step)
        return self._call(MetricsPublic, "GET", f"/v1/fine_tuning/jobs/{job_id}/metrics", params=params)

    def list_checkpoints(self, job_id: str, after: str | None = None, limit: int | None = None) -> CheckpointsPublic:
        """One page of the job's checkpoints, newest step first."""
        params = self._params(after=after, limit=limit)
        return self._call(CheckpointsPublic, "GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints", params=params)

    def list_artifacts(self, job_id: str) -> ArtifactsPublic:
        return self._call(ArtifactsPublic, "GET", f"/v1/fine_tuning/jobs/{job_id}/artifacts")

    def download_artifact(
        self, artifact_id: str, dest: str | Path, progress: Progress | None = None, *,
        expected_sha256: str | None = None, expected_bytes: int | None = None,
    ) -> Path:
        """Stream an artifact to ``dest`` (a file path, or an existing folder to put it in under its own
        name), verifying its SHA-256 against the ``X-Content-SHA256`` header and ``expected_sha256`` (the
        artifact row). The file appears only once verified."""
        dest = Path(dest)
        timeout = httpx.Timeout(30.0, read=600.0)
        with self._http.stream("GET", f"/v1/artifacts/{artifact_id}/content", timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.from_response(response)
            if dest.is_dir():
                dest = dest / (_filename_from(response) or artifact_id)
            dest.parent.mkdir(parents=True, exist_ok=True)
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else expected_bytes
            header_sha = response.headers.get("x-content-sha256")
            tmp = dest.with_name(dest.name + ".part")
            digest, done = hashlib.sha256(), 0
            try:
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
                actual = digest.hexdigest()
                for source, expected in (("X-Content-SHA256 header", header_sha), ("artifact record", expected_sha256)):
                    if expected and expected.lower() != actual:
                        raise DownloadError(f"artifact {artifact_id} is corrupt: sha256 {actual} does not match "
                                            f"the {source} ({expected})")
                if expected_bytes is not None and done != expected_bytes:
                    raise DownloadError(f"artifact {artifact_id} is truncated: {done} of {expected_bytes} bytes")
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        return dest
