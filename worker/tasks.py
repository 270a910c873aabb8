"""The Celery tasks: each loads a job by id and hands it to the object that does the work.

Policy lives in :class:`JobTask`: late acks (a message is acknowledged only after the task returns, so a
worker that dies mid-job leaves it to be redelivered), no Celery retries (attempts are counted in SQL and
the reaper requeues), expected errors logged in one line. Jobs are stopped through their SQL flags,
never by revoking or terminating the task.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from sparsegrad_service.queue import MERGE_JOB_TASK, RUN_JOB_TASK
from sparsegrad_service.settings import get_settings
from sparsegrad_service.store import StoreError

from .celery_app import app
from .errors import JobError

log = logging.getLogger("sparsegrad.worker")


class JobTask(Task):  # type: ignore[misc]
    """Base class of the job tasks: the execution policy shared by all of them."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = 0
    autoretry_for = ()
    ignore_result = True
    expected_errors: tuple[type[BaseException], ...] = (JobError, StoreError, OperationalError, LookupError)
    """Failures of the environment or the request rather than bugs: logged without a traceback."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, self.expected_errors):
            log.error("%s%s failed: %s: %s", self.name, tuple(args), type(exc).__name__, exc)
        else:
            log.error("%s%s failed unexpectedly", self.name, tuple(args), exc_info=exc)


@app.task(base=JobTask, name=RUN_JOB_TASK, bind=True)
def run_job(self: JobTask, job_id: str) -> str:
    """Claim job ``job_id`` and run one attempt of it; returns the outcome."""
    from .runner import JobRunner

    return str(JobRunner(get_settings(), job_id).run())


@app.task(base=JobTask, name=MERGE_JOB_TASK, bind=True)
def merge_job(self: JobTask, job_id: str) -> str:
    """Add the ``merged_model`` artifact to succeeded job ``job_id``; returns what happened."""
    from .merge import MergeJob

    return str(MergeJob(get_settings(), job_id).run())
