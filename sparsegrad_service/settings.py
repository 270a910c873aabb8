"""One ``Settings`` class for every service process (API, worker, CLI), read from ``SPARSEGRAD_*`` variables.

Defaults are the embedded setup: SQLite, Celery's filesystem broker and a local artifact directory, all
under ``data_dir``. ``DATABASE_URL`` and ``REDIS_URL`` (or their ``SPARSEGRAD_`` forms) switch to
PostgreSQL and Redis. Outside ``environment="development"`` a placeholder worker token is refused.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "development", "worker"}
DEFAULT_INFERENCE_PORT = 8001
"""Where ``python -m inference`` / ``sparsegrad inference`` listen unless told otherwise."""


class Settings(BaseSettings):
    """Service configuration; every field can be set as ``SPARSEGRAD_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SPARSEGRAD_", extra="ignore", populate_by_name=True)

    environment: Literal["development", "production"] = "development"
    """``production`` refuses placeholder secrets and requires an explicit worker token."""
    data_dir: Path = Path("sparsegrad-data")
    """Root of the embedded defaults: ``sparsegrad.db``, ``broker/``, ``artifacts/``, ``work/``."""
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SPARSEGRAD_DATABASE_URL", "DATABASE_URL")
    )
    """SQLAlchemy URL (``postgresql+psycopg://...``); default ``sqlite:///<data_dir>/sparsegrad.db``."""
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("SPARSEGRAD_REDIS_URL", "REDIS_URL"))
    """Celery broker and live-event pub/sub; default: Celery's filesystem broker and SQL polling."""
    artifact_dir: Path | None = None
    """Local artifact store; default ``<data_dir>/artifacts``."""
    api_url: str | None = None
    """Workers only: deliver artifacts and read uploads through this API (``http://host:port``) with
    ``worker_token`` instead of a shared disk. Unset: the worker uses ``artifact_dir`` directly."""
    worker_token: SecretStr | None = None
    """Credential of workers on the API's ``/internal`` routes. Development default: a random token kept in
    ``<data_dir>/worker_token``."""
    public_url: str | None = None
    """Base URL users reach the API and dashboard at (printed by the CLI)."""
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_upload_examples: int = Field(default=2_000_000, gt=0)
    training_queue: str = "training"
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    """A running job whose heartbeat is older than this is requeued (or failed after ``max_attempts``)."""
    reaper_interval_s: float = Field(default=10.0, gt=0)
    run_reaper: bool = True
    """The API process runs the reaper loop (it is safe to run in several processes)."""
    resend_after_s: float = Field(default=60.0, gt=0)
    """A job still queued after this long while the broker's queue is empty lost its message (a broker
    outage at submit time, a broker restart without persistence): the reaper sends it again. A duplicate
    is harmless, because only one worker can claim the job."""
    max_attempts: int = Field(default=3, ge=1)
    checkpoint_every: int = Field(default=50, ge=1)
    """Default steps between checkpoints of a running job (a job's hyperparameters may override it)."""
    keep_finished_checkpoints: int = Field(default=2, ge=0)
    """Checkpoints a succeeded job keeps as models (``{model}:ckpt-step-{step}``: its final step and the newest
    checkpoints before it, each an adapter archive, or the whole model for methods that export one); their
    resume archives, and every checkpoint of a job that failed or was cancelled, leave the store. Default 2:
    the final model and one earlier step to fall back on. An adapter holds only what training changed (sparse
    deltas, bases, task head), far less than a resume archive (dense target weights, optimizer moments)."""
    metrics_flush_s: float = Field(default=1.0, gt=0)
    stop_check_s: float = Field(default=0.5, ge=0)
    """How often the training loop reads the cancel/pause flags from SQL (at most; checked at each step)."""
    models: dict[str, str] = Field(default_factory=dict)
    """Extra base models workers may load, JSON ``{"name": "local path or hub id"}``; the bundled
    ``minilm-l6`` and ``smollm2-135m`` are always registered."""
    torch_threads: int | None = None
    """CPU workers: torch intra-op threads (default: torch's choice)."""
    cpu_bf16: bool = True
    """CPU workers: run jobs under bf16 autocast where the CPU multiplies bf16 matrices in hardware (Intel AMX, AVX-512 BF16), as
    GPU workers do on cards that support it: weights, gradients and optimizer state stay float32, steps take about
    half the time (``bench/step.py --precision bf16``). False: float32 on every CPU."""
    worker_jemalloc: bool = True
    """Training workers started by ``sparsegrad up`` and ``sparsegrad worker`` preload jemalloc where the machine has
    it (``apt-get install libjemalloc2``; the worker image does the same), keeping freed pages for the next step:
    CPU steps no longer pay for fresh pages every step (``sparsegrad_service.allocator``; results are unchanged).
    The job summary's ``allocator`` says which allocator trained it. False: the system's malloc."""
    cuda_graphs: bool = False
    """GPU workers: capture each job's training step in a CUDA graph and replay it (``TrainingArguments.cuda_graphs``;
    batches padded to the job's ``max_seq_length``; not for jobs with ``gradient_checkpointing``). A small model's
    GPU step is bound by kernel launches, which a replay removes (``bench/gpu_step.py --cuda-graphs``). CPU workers
    ignore it."""
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    """Requests per minute one API key may send to one API process on average (0: no limit); more answer
    429 with ``Retry-After``."""
    rate_limit_burst: int | None = Field(default=None, ge=1)
    """Requests a key may send at once (default: ``rate_limit_per_minute``)."""
    api_key_cache_s: float = Field(default=2.0, ge=0)
    """API processes remember an authenticated key this long (0: look it up on every request); a revoked
    key stops working within this time."""
    db_read_pool: int = Field(default=10, ge=1)
    """PostgreSQL connections of each API process for its reads on the event loop; more concurrent reads wait
    for one (up to 30 s, then 503)."""
    webhook_queue: str = "webhooks"
    """Celery queue of webhook deliveries, consumed by ``worker.webhooks`` workers (``sparsegrad up`` starts one)."""
    webhooks_allow_private: bool = False
    """Let webhook URLs reach loopback, link-local, private and other non-public addresses (tests, one-machine
    setups). Refused otherwise, when the URL is registered and again before each delivery."""
    webhooks_allow_http: bool = False
    """Accept ``http://`` webhook URLs (default: ``https://`` only)."""
    webhook_max_attempts: int = Field(default=15, ge=1)
    """HTTP attempts of one delivery before it is marked failed."""
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    """Wait before the first retry of a failed delivery; it doubles after each failure, up to
    ``webhook_backoff_max_s``."""
    webhook_backoff_max_s: float = Field(default=4 * 3600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one delivery request (connect, and each read or write)."""
    webhook_poll_s: float = Field(default=1.0, gt=0)
    """How often a webhook worker looks for due deliveries (the outbox in SQL) and queues them."""
    webhook_retention_days: float = Field(default=30.0, gt=0)
    """Finished deliveries (succeeded or failed) and their attempts are deleted this long after they finished;
    webhook workers sweep them hourly."""

    inference_url: str | None = None
    """The API only: the inference server (``http://host:port``) it forwards chat completions, completions and
    predictions to (``sparsegrad up`` starts one and sets this). Unset: those routes answer 503."""
    inference_backend: Literal["transformers", "vllm"] = "transformers"
    """The inference server's engine: ``transformers`` (CPU, or a GPU it sees) or ``vllm`` (GPU; ``pip install vllm``)."""
    inference_cache_size: int = Field(default=2, ge=1)
    """Fine-tuned models the transformers engine keeps loaded per base model (the least recently used leaves)."""
    inference_max_pending: int = Field(default=16, ge=1)
    """Requests the inference server holds at once, running or waiting; more answer 503 with ``Retry-After``."""
    inference_vllm_max_lora_rank: int = Field(default=256, ge=1)
    """vLLM: the largest LoRA rank served (block SparseGrad adapters of higher rank are served merged)."""
    inference_vllm_gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    """vLLM: the share of GPU memory each engine may take."""

    wandb_api_key: SecretStr | None = None
    """Weights & Biases: the key workers log jobs' ``{"type": "wandb"}`` integrations with. W&B is enabled when
    this is set or ``wandb_mode`` is ``offline``; otherwise a job asking for it is refused (400)."""
    wandb_base_url: str | None = None
    """W&B server of a self-hosted deployment (default: W&B's cloud)."""
    wandb_mode: Literal["online", "offline"] = "online"
    """``offline``: runs are written under ``wandb_dir`` only (``wandb sync`` uploads them later); no key needed."""
    wandb_dir: Path | None = None
    """Where workers keep W&B's local run files; default ``<data_dir>/wandb``."""
    mlflow_tracking_uri: str | None = None
    """MLflow tracking server (``http://host:5000``, ``sqlite:///mlflow.db``, ...) that jobs' ``{"type": "mlflow"}``
    integrations log to. Unset: a job asking for MLflow is refused (400)."""
    mlflow_experiment: str = Field(default="sparsegrad", min_length=1)
    """A job whose MLflow integration names no experiment logs to ``<mlflow_experiment>/<organization id>``."""
    mlflow_all_jobs: bool = False
    """Log every job to MLflow (see ``mlflow_experiment``), also those whose request has no MLflow integration."""

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.environment == "production":
            token = self.worker_token.get_secret_value() if self.worker_token else ""
            if token.strip().lower() in PLACEHOLDER_SECRETS or len(token) < 16:
                raise ValueError(
                    "SPARSEGRAD_WORKER_TOKEN must be set to a random secret of at least 16 characters "
                    "in production (placeholders such as 'changeme' are refused)"
                )
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def sql_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://"):]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{(self.data_dir / 'sparsegrad.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def work_dir(self) -> Path:
        return (self.data_dir / "work").resolve()

    @property
    def wandb_enabled(self) -> bool:
        """W&B integrations are accepted: a key is set, or runs stay offline."""
        return self.wandb_api_key is not None or self.wandb_mode == "offline"

    @property
    def wandb_root(self) -> Path:
        return (self.wandb_dir or self.data_dir / "wandb").resolve()

    def worker_secret(self) -> str:
        """The worker credential; in development a random one is created once under ``data_dir``."""
        if self.worker_token is not None:
            return self.worker_token.get_secret_value()
        import secrets

        path = self.data_dir / "worker_token"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
