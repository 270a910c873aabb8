"""Whether this deployment can honour a job's tracking integration: the one rule the API checks when a job is
created (400 otherwise) and the worker checks again before it logs (its settings may differ from the API's)."""

from __future__ import annotations

from typing import Literal

from sparsegrad_service.settings import Settings

IntegrationType = Literal["wandb", "mlflow"]
LABELS: dict[str, str] = {"wandb": "W&B", "mlflow": "MLflow"}
REQUIRED_SETTING: dict[str, str] = {
    "wandb": "SPARSEGRAD_WANDB_API_KEY (or SPARSEGRAD_WANDB_MODE=offline)",
    "mlflow": "SPARSEGRAD_MLFLOW_TRACKING_URI",
}


def missing_setting(settings: Settings, kind: str) -> str | None:
    """The setting integration ``kind`` needs and ``settings`` lack; None when it is configured."""
    configured = settings.wandb_enabled if kind == "wandb" else settings.mlflow_tracking_uri is not None
    return None if configured else REQUIRED_SETTING[kind]


def not_configured_message(kind: str, setting: str) -> str:
    return f"The {LABELS[kind]} integration is not available: {setting} is not set on this server."
