"""The reaper loop of an API process: a daemon thread that requeues (or fails) jobs whose worker stopped
sending heartbeats and resends long-queued jobs and merge requests, every ``Settings.reaper_interval_s``; the checkpoints a job
it ends drops leave the API's store. It logs failures and never stops the app; several API replicas may run
it (each transition is a compare-and-set)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from sparsegrad_service.db import get_engine
from sparsegrad_service.periodic import PeriodicThread
from sparsegrad_service.queue import JobQueue
from sparsegrad_service.reaper import reap_stale_jobs
from sparsegrad_service.retention import sweep_deleted_files
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore, LocalArtifactStore

log = logging.getLogger("sparsegrad.api.reaper")


class ReaperThread(PeriodicThread):
    name = "sparsegrad-reaper"

    def __init__(self, settings: Settings, queue: JobQueue, store: ArtifactStore) -> None:
        super().__init__(settings.reaper_interval_s)
        self.settings, self.queue, self.store = settings, queue, store
        self._swept = False

    def sweep_deleted_files(self) -> None:
        """Once per process: the bytes of deleted files a process that died mid-delete left behind."""
        if not isinstance(self.store, LocalArtifactStore):
            return
        try:
            with Session(get_engine(self.settings.sql_url)) as session:
                left = sweep_deleted_files(session, self.store)
            if left:
                log.warning("reaper: deleted the bytes of %d deleted files left in the store", left)
        except Exception:
            log.exception("sweeping deleted files' bytes failed")

    def run_once(self) -> None:
        if not self._swept:
            self._swept = True
            self.sweep_deleted_files()
        try:
            for job_id, outcome in reap_stale_jobs(get_engine(self.settings.sql_url), self.settings, self.queue.enqueue,
                                                   queue_depth=self.queue.depth, store=self.store,
                                                   enqueue_merge=self.queue.enqueue_merge):
                log.warning("reaper: job %s %s", job_id, outcome)
        except Exception:
            log.exception("reaper pass failed; retrying in %.1f s", self.settings.reaper_interval_s)
