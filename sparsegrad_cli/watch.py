"""Live view of one job on the terminal: a rich progress line (phase, step/total, loss, ETA; while calibrating,
the calibration pass and the time left to its end) fed by the job's Server-Sent Events and a periodic job poll,
with each event message printed above it."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from sparsegrad_client import SparseGradClient
from sparsegrad_service.enums import TERMINAL_STATUSES
from sparsegrad_service.schemas import JobEventPublic, JobPublic

from .support import format_time, to_timestamp

LEVEL_STYLES = {"error": "red", "warn": "yellow", "warning": "yellow"}
POLL_S = 2.0


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isinf(seconds):
        return "-:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fmt_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


class JobWatcher:
    """Follow a job until it stops; :meth:`run` returns the final job object."""

    def __init__(self, client: SparseGradClient, job_id: str, console: Console) -> None:
        self.client, self.job_id, self.console = client, job_id, console
        self.job: JobPublic | None = None
        self.phase: str | None = None
        """The running job's phase: the job's, or newer from a ``phase`` event."""
        self.loss: float | None = None
        self.step: int | None = None
        self.total_steps: int | None = None
        self.attempt_started = 0
        """The latest attempt an event announced as started: a newer one than the job read says it runs."""
        self.calibration: tuple[int, int, float | None] | None = None
        """The last calibration progress event: pass, passes, and when calibration should end (epoch seconds)."""
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description:<11}"), BarColumn(bar_width=32),
            TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[step]}"),
            TextColumn("{task.fields[loss]}"), TextColumn("ETA {task.fields[eta]}"),
            console=console, refresh_per_second=4,
        )
        self._task: TaskID | None = None

    # ------------------------------------------------------------------------------------------ state
    def _absorb_job(self, job: JobPublic) -> None:
        with self._lock:
            self.job, self.phase = job, job.phase
            self.step = max(self.step or 0, job.step)
            if job.total_steps is not None:
                self.total_steps = job.total_steps

    def _absorb_metrics(self, data: dict[str, Any]) -> None:
        with self._lock:
            if data.get("phase") == "calibrating":  # a calibration pass: not a training step
                eta = data.get("eta_seconds")
                end = time.time() + eta if isinstance(eta, int | float) else None
                self.calibration = (int(data.get("step") or 0), int(data.get("total") or 0), end)
                if isinstance(data.get("calibration_loss"), int | float):
                    self.loss = float(data["calibration_loss"])
                return
            if isinstance(data.get("step"), int):
                self.step = data["step"]
            if isinstance(data.get("total_steps"), int):
                self.total_steps = data["total_steps"]
            if isinstance(data.get("loss"), int | float):
                self.loss = float(data["loss"])

    def _render(self) -> None:
        if self._task is None or self.job is None:
            return
        with self._lock:
            job = self.job
            status = job.status
            if status == "queued" and self.attempt_started > job.attempts:  # the job read is older than the event
                status = "running"
            label = (self.phase or status) if status == "running" else status
            progress = job.progress
            finish = to_timestamp(job.estimated_finish)
            step = ""
            if self.step is not None:
                step = f"step {self.step}" + (f"/{self.total_steps}" if self.total_steps else "")
            if self.step and self.total_steps and status == "running":
                progress = max(progress, 0.05 + 0.9 * min(1.0, self.step / self.total_steps))
            loss = f"loss {self.loss:.4f}" if self.loss is not None else ""
            if label == "calibrating" and self.calibration is not None:
                done, passes, finish = self.calibration
                step = f"calibration pass {done}/{passes}"
                progress = max(progress, 0.05 * min(1.0, done / max(passes, 1)))
            queue = job.queue_position
            if status == "queued" and queue is not None:
                step = f"position {queue} in the queue"
        eta = _fmt_eta(finish - time.time()) if finish is not None and status == "running" else "-:--"
        self._progress.update(self._task, description=label or "…", completed=min(progress, 1.0) * 1000,
                              step=step, loss=loss, eta=eta)

    def _poll(self) -> None:
        while not self._done.wait(POLL_S):
            try:
                self._absorb_job(self.client.get_job(self.job_id))
            except Exception:  # best effort: the event stream is the main feed
                continue
            self._render()

    # ----------------------------------------------------------------------------------------- events
    def _print_event(self, event: JobEventPublic) -> None:
        kind, data = event.type, event.data or {}
        if kind == "metrics":
            self._absorb_metrics(data)
            evals = {k.removeprefix("eval_"): v for k, v in data.items() if k.startswith("eval_")}
            if not evals:
                return
            text = ", ".join(f"{k} {_fmt_metric(v)}" for k, v in evals.items())
            message = f"evaluation at step {data.get('step', '?')}: {text}"
        else:
            message = event.message
            if kind == "phase" and data.get("phase"):
                with self._lock:
                    self.phase = str(data["phase"])
            if isinstance(data.get("attempt"), int) and "worker_id" in data:  # "Attempt N of M started"
                with self._lock:
                    self.attempt_started = max(self.attempt_started, data["attempt"])
        self._render()  # the progress line printed under this message shows what the message says
        stamp = format_time(event.created_at)[-8:]
        style = LEVEL_STYLES.get(event.level, "")
        line = f"[dim]{stamp}[/] {escape(message)}"
        self._progress.console.print(f"[{style}]{line}[/]" if style else line, highlight=False)

    def run(self) -> JobPublic:
        first = self.client.get_job(self.job_id)
        self._absorb_job(first)
        if first.status in TERMINAL_STATUSES:
            return first
        poller = threading.Thread(target=self._poll, name="job-poll", daemon=True)
        with self._progress:
            self._task = self._progress.add_task("", total=1000, step="", loss="", eta="-:--")
            self._render()
            poller.start()
            try:
                for event in self.client.stream_events(self.job_id):
                    self._print_event(event)
                    self._render()
            finally:
                self._done.set()
            final = self.client.get_job(self.job_id)
            self._absorb_job(final)
            self._render()
        poller.join(timeout=POLL_S + 1)
        return final


def describe_outcome(job: JobPublic) -> tuple[str, int]:
    """A one-line summary of a stopped job and the exit code of ``sparsegrad watch``: 0 succeeded,
    1 failed or cancelled, 3 paused (resumable)."""
    status, job_id = job.status, job.id
    if status == "succeeded":
        tokens = job.trained_tokens
        extra = f", {tokens:,} tokens trained" if tokens is not None else ""
        return f"[bold green]job {job_id} succeeded[/]{extra}", 0
    if status == "paused":
        return f"[yellow]job {job_id} is paused[/]: `sparsegrad resume {job_id}` continues it from its checkpoint", 3
    reason = job.error.message if job.error is not None else None
    return f"[red]job {job_id} {status}[/]" + (f": {escape(str(reason))}" if reason else ""), 1
