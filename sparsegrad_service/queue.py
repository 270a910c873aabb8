"""The Celery application both sides share: the API sends tasks by name, workers run them.

Broker: Redis when ``redis_url`` is set, otherwise Celery's filesystem transport under ``data_dir/broker``
(one machine, no services). Policy for training: a dedicated queue, late acks, prefetch 1, no result
backend (state lives in SQL). Webhook deliveries have their own queue (``webhook_queue``), so that they never
wait behind a training job.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from .settings import Settings

RUN_JOB_TASK = "sparsegrad.run_job"
MERGE_JOB_TASK = "sparsegrad.merge_job"
DELIVER_WEBHOOK_TASK = "sparsegrad.deliver_webhook"


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.training_queue,
        "task_routes": {
            RUN_JOB_TASK: {"queue": settings.training_queue},
            MERGE_JOB_TASK: {"queue": settings.training_queue},
            DELIVER_WEBHOOK_TASK: {"queue": settings.webhook_queue},
        },
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }
    if settings.redis_url:
        config["broker_url"] = settings.redis_url
        # Redelivery of an unacked message (a worker died) is the reaper's job, with its attempt counter;
        # the broker's own redelivery comes later, and is a harmless duplicate (claiming is atomic in SQL).
        config["broker_transport_options"] = {"visibility_timeout": 6 * 3600}
    else:
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_url"] = "filesystem://"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
        config["worker_enable_remote_control"] = False
    return config


def make_celery(settings: Settings, include: list[str] | None = None) -> Celery:
    app = Celery("sparsegrad", include=include or [])
    app.conf.update(celery_config(settings))
    return app


class JobQueue:
    """Enqueues jobs by task name (the API never imports the worker code)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = make_celery(self.settings)
        return self._app

    def enqueue(self, job_id: str) -> str:
        result = self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=self.settings.training_queue)
        return str(result.id)

    def enqueue_merge(self, job_id: str) -> str:
        result = self.app.send_task(MERGE_JOB_TASK, args=[job_id], queue=self.settings.training_queue)
        return str(result.id)

    def ping(self) -> None:
        """Raise if the broker is unreachable."""
        if self.settings.redis_url:
            import redis

            redis.Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2).ping()
        else:
            folder = self.settings.broker_dir / "queue"
            if not folder.is_dir():
                raise RuntimeError(f"broker folder {folder} is missing")

    def depth(self) -> int | None:
        """Messages waiting in the training queue (None when unknown)."""
        try:
            if self.settings.redis_url:
                import redis

                r = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
                return int(r.llen(self.settings.training_queue))
            return sum(1 for p in (self.settings.broker_dir / "queue").iterdir() if p.suffix == ".msg")
        except Exception:
            return None
