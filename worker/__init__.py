"""Celery workers that run fine-tuning jobs: ``celery_app`` (the worker process), ``tasks`` (thin task
functions) and ``runner`` (``JobRunner``, one attempt at a job), with the modules they compose."""
