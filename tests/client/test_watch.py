"""``sparsegrad watch``'s live view without a server (httpx MockTransport): it follows the typed job and its
event stream to the end, prints event messages and evaluations, and sums up the outcome with its exit code."""

from __future__ import annotations

import io
import json
import re

import httpx
from rich.console import Console

from sparsegrad_cli.watch import JobWatcher, describe_outcome
from sparsegrad_client import SparseGradClient
from sparsegrad_service.schemas import JobError, JobPublic

from .conftest import job_object


def _sse(seq: int, kind: str, message: str, data: dict[str, object] | None, level: str = "info") -> bytes:
    body = {"id": f"ftevent-{seq}", "object": "fine_tuning.job.event", "created_at": 1_700_000_000 + seq,
            "level": level, "message": message, "type": kind, "data": data}
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(body)}\n\n".encode()


def test_watch_follows_the_events_to_the_final_job() -> None:
    gets: list[int] = []
    stream = (_sse(1, "phase", "Training started", {"phase": "training"})
              + _sse(2, "metrics", "", {"step": 5, "total_steps": 10, "loss": 0.5})
              + _sse(3, "metrics", "", {"step": 10, "total_steps": 10, "eval_accuracy": 0.875})
              + _sse(4, "message", "Adapter saved", None, level="warning")
              + b"event: end\ndata: {}\n\n")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events/stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
        gets.append(1)
        if len(gets) == 1:
            return httpx.Response(200, json=job_object("ftjob-w", "running", phase="calibrating", step=0))
        return httpx.Response(200, json=job_object("ftjob-w", "succeeded", step=10, total_steps=10, trained_tokens=12345,
                                             progress=1.0))

    out = io.StringIO()
    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    watcher = JobWatcher(client, "ftjob-w", Console(file=out, width=200, force_terminal=False))
    final = watcher.run()
    assert isinstance(final, JobPublic) and final.status == "succeeded"
    assert (watcher.step, watcher.total_steps, watcher.loss) == (10, 10, 0.5)
    text = out.getvalue()
    assert "Training started" in text and "Adapter saved" in text
    assert "evaluation at step 10: accuracy 0.875" in text
    message, code = describe_outcome(final)
    assert code == 0 and "succeeded" in message and "12,345 tokens trained" in message


def test_a_stopped_job_returns_at_once_and_outcomes_map_to_exit_codes() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json=job_object("ftjob-f", "failed", error={"code": "oom", "message": "out of memory"}))

    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    final = JobWatcher(client, "ftjob-f", Console(file=io.StringIO())).run()
    assert calls == ["/v1/fine_tuning/jobs/ftjob-f"]  # no event stream for a job that is over
    assert final.error == JobError(code="oom", message="out of memory")
    message, code = describe_outcome(final)
    assert code == 1 and "failed" in message and "out of memory" in message
    paused = JobPublic.model_validate(job_object("ftjob-p", "paused"))
    message, code = describe_outcome(paused)
    assert code == 3 and "sparsegrad resume ftjob-p" in message
    cancelled = JobPublic.model_validate(job_object("ftjob-c", "cancelled"))
    assert describe_outcome(cancelled)[1] == 1


def test_watch_shows_calibration_passes_and_the_time_left() -> None:
    """A calibrating job's progress line counts calibration passes (not training steps) and shows the ETA the
    calibration events give."""
    stream = (_sse(1, "phase", "Phase: calibrating", {"phase": "calibrating"})
              + _sse(2, "metrics", "Calibration pass 3/20: loss=2.5000", {
                  "phase": "calibrating", "step": 3, "total": 20, "eta_seconds": 600.0, "calibration_loss": 2.5})
              + b"event: end\ndata: {}\n\n")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events/stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
        return httpx.Response(200, json=job_object("ftjob-c", "running", phase="calibrating", progress=0.0075))

    out = io.StringIO()
    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    watcher = JobWatcher(client, "ftjob-c", Console(file=out, width=200, force_terminal=True))
    final = watcher.run()
    assert final.status == "running" and watcher.step == 0 and watcher.total_steps is None
    text = out.getvalue()
    assert "calibrating" in text and "calibration pass 3/20" in text and "loss 2.5000" in text
    assert re.search(r"ETA (9:5\d|10:00)", text), text


def test_the_queue_position_is_gone_once_an_attempt_has_started() -> None:
    """The job read before the stream still says queued (position 1) when the "Attempt 1 started" event
    arrives: from that line on, the progress line shows a running job, never the queue position."""
    announced = "Attempt 1 of 3 started on worker w1 (device cpu)."
    stream = (_sse(1, "message", announced, {"attempt": 1, "max_attempts": 3, "worker_id": "w1", "device": "cpu"})
              + b"event: end\ndata: {}\n\n")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events/stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
        return httpx.Response(200, json=job_object("ftjob-q", "queued", queue_position=1, attempts=0))

    out = io.StringIO()
    client = SparseGradClient("http://svc", "sg-k", transport=httpx.MockTransport(handler))
    JobWatcher(client, "ftjob-q", Console(file=out, width=200, force_terminal=True)).run()
    _, _, after = out.getvalue().partition(announced)
    assert after and "position" not in after and "queued" not in after, after
    assert "running" in after
