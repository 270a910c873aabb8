"""Celery workers that run SparseGrad fine-tuning jobs (built in a later stage)."""
