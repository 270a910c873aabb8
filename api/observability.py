"""Prometheus metrics of one app: requests and latency by route template and status (an ASGI middleware),
and, computed at scrape time, the number of jobs per status and the broker's queue depth."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import anyio.from_thread
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sparsegrad_service.enums import JobStatus
from sparsegrad_service.queue import JobQueue

from .queries import jobs_per_status_statement
from .reads import Reads

log = logging.getLogger("sparsegrad.api.metrics")

UNMATCHED_ROUTE = "unmatched"


class JobsCollector(Collector):
    """``sparsegrad_jobs{status}`` from SQL and ``sparsegrad_queue_depth`` from the broker, per scrape (in the
    ``/metrics`` route's worker thread: the count goes through the app's read path on its event loop)."""

    def __init__(self, reads: Reads, queue: JobQueue) -> None:
        self.reads, self.queue = reads, queue

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("sparsegrad_jobs", "Jobs per status (all tenants).", labels=["status"]),
                GaugeMetricFamily("sparsegrad_queue_depth", "Messages waiting in the training queue.")]

    def collect(self) -> Iterable[Metric]:
        try:
            rows = anyio.from_thread.run(self.reads.all, jobs_per_status_statement())
            counts = {str(row.status): int(row.jobs) for row in rows}
        except Exception as exc:
            log.warning("jobs gauge unavailable: %s", exc)
        else:
            jobs = GaugeMetricFamily("sparsegrad_jobs", "Jobs per status (all tenants).", labels=["status"])
            for status in JobStatus:
                jobs.add_metric([status.value], float(counts.get(status.value, 0)))
            yield jobs
        depth = self.queue.depth()
        if depth is not None:
            yield GaugeMetricFamily("sparsegrad_queue_depth", "Messages waiting in the training queue.",
                                    value=float(depth))


def route_template(scope: Scope) -> str:
    """The matched route's path template with the prefix of the router that included it."""
    path = getattr(scope.get("route"), "path", None)
    if not path:
        return UNMATCHED_ROUTE
    included = (scope.get("fastapi") or {}).get("included_router")
    prefix = getattr(getattr(included, "include_context", None), "prefix", "") or ""
    return f"{prefix}{path}"


class Telemetry:
    """The app's own registry (several apps in one process never collide) and its instruments."""

    def __init__(self, reads: Reads, queue: JobQueue) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sparsegrad_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("sparsegrad_http_request_duration_seconds", "HTTP request latency (a stream's: "
                                 "its whole duration).", ["method", "route", "status"], registry=self.registry)
        self.registry.register(JobsCollector(reads, queue))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)


class TelemetryMiddleware:
    """Counts and times every HTTP request under its route template (``/v1/files/{file_id}``)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.telemetry.observe(scope["method"], route_template(scope), status, time.perf_counter() - started)
