"""HTTP front end of the SparseGrad fine-tuning service: a FastAPI app (``api.main:app``) speaking the
OpenAI fine-tuning API's shapes under ``/v1``, plus health, Prometheus metrics and the workers' internal
artifact-store routes. It never imports torch or the worker: it validates, records in SQL and enqueues."""
