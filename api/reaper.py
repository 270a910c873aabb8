"""The reaper loop of an API process: a daemon thread that requeues (or fails) jobs whose worker stopped
sending heartbeats and resends long-queued jobs and merge requests, every ``Settings.reaper_interval_s``; the checkpoints a job
it ends drops leave the API's store. It logs failures and never stops the app; several API replicas may run
it (each transition is a compare-and-set)."""

from __future__ import annotations

import logging

from sparsegrad_service.db import get_engine
from sparsegrad_service.periodic import PeriodicThread
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.reaper import reap_stale_jobs
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore

log = logging.getLogger("sparsegrad.api.reaper")


class ReaperThread(PeriodicThread):
    name = "sparsegrad-reaper"

    def __init__(self, settings: Settings, queue: JobQueue, store: ArtifactStore) -> None:
        super().__init__(settings.reaper_interval_s)
        self.settings, self.queue, self.store = settings, queue, store

    def run_once(self) -> None:
        try:
            for job_id, outcome in reap_stale_jobs(get_engine(self.settings.sql_url), self.settings, self.queue.enqueue,
                                                   queue_depth=self.queue.depth, store=self.store,
                                                   enqueue_merge=self.queue.enqueue_merge):
                log.warning("reaper: job %s %s", job_id, outcome)
        except Exception:
            log.exception("reaper pass failed; retrying in %.1f s", self.settings.reaper_interval_s)
