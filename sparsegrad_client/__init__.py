"""Python client and ``sparsegrad`` command line of the SparseGrad fine-tuning service.

``from sparsegrad_client import SparseGradClient`` needs only httpx; the command line (``cli``) adds the
embedded-service launcher and job commands. Nothing here imports torch at module level.
"""

from .client import ApiError, DownloadError, SparseGradClient
from .sse import ServerSentEvent

__all__ = ["ApiError", "DownloadError", "ServerSentEvent", "SparseGradClient"]
