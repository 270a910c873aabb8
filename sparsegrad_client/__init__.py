"""Python client of the SparseGrad fine-tuning service's REST API.

``SparseGradClient`` returns the API's response models (``JobPublic``, ``FileObject``, ``JobsPublic``... from
:mod:`sparsegrad_service.schemas`); it needs httpx and pydantic only: no torch, no API or worker code (an
import-linter contract). The ``sparsegrad`` command line lives in :mod:`sparsegrad_cli`.
"""

from .client import ApiError, DownloadError, SparseGradClient
from .sse import ServerSentEvent
from .webhooks import WebhookEvent, WebhookSignatureError, verify_webhook

__all__ = ["ApiError", "DownloadError", "ServerSentEvent", "SparseGradClient", "WebhookEvent", "WebhookSignatureError",
           "verify_webhook"]
