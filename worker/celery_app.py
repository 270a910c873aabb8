"""The worker's Celery application: the shared configuration (``sparsegrad_service.queue``) plus the
training tasks, and per-process setup.

Start a worker (one job at a time; on a GPU machine, one worker per GPU)::

    celery -A worker.celery_app worker -Q training -c 1 --pool solo \\
        --without-gossip --without-mingle --without-heartbeat

(``-Q`` takes ``Settings.training_queue``, ``SPARSEGRAD_TRAINING_QUEUE``.) The worker reads the same
``SPARSEGRAD_*`` / ``DATABASE_URL`` / ``REDIS_URL`` settings as the API; with ``SPARSEGRAD_API_URL`` and
``SPARSEGRAD_WORKER_TOKEN`` it reads uploads and delivers artifacts through the API instead of a shared
directory. At start, torch's intra-op threads are set from ``Settings.torch_threads`` and, in forked
children, pooled database connections inherited from the parent are dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_process_init

from sparsegrad_service.db import dispose_engines
from sparsegrad_service.queue import make_celery
from sparsegrad_service.settings import get_settings

log = logging.getLogger("sparsegrad.worker")

app = make_celery(get_settings(), include=["worker.tasks"])


def configure_process() -> None:
    """Torch threads from the settings and quiet transformers; safe to call more than once."""
    import torch
    from transformers.utils import logging as hf_logging

    threads = get_settings().torch_threads
    if threads:
        torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@worker_init.connect
def _on_worker_init(**_: Any) -> None:
    configure_process()


@worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    dispose_engines()  # connections must not be shared across fork
    configure_process()
