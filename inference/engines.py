"""The engine a deployment serves with (``Settings.inference_backend``), imported only when chosen: vLLM is a
GPU-only dependency that a CPU deployment never installs."""

from __future__ import annotations

from sparsegrad_service.settings import Settings

from .backend import Backend


def make_backend(settings: Settings) -> Backend:
    """The engine ``settings.inference_backend`` names: ``transformers`` (default) or ``vllm``."""
    if settings.inference_backend == "vllm":
        from .vllm_backend import VllmBackend

        return VllmBackend(settings)
    from .transformers_backend import TransformersBackend

    return TransformersBackend(settings)
