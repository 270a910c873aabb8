"""The base models workers may load: a fixed registry (name → local path or hub id), never arbitrary ids.

The bundled ``minilm-l6`` (BERT encoder) and ``smollm2-135m`` (LLaMA decoder) are always present; more come
from ``Settings.models``. ``trust_remote_code`` is never enabled when loading any of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .settings import Settings


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    source: str
    """Bundled alias understood by ``sparsegrad_core.loading.load_base_model``, a local folder or a hub id."""
    architecture: str
    """``encoder`` (classification/regression) or ``decoder`` (also causal-LM SFT)."""
    description: str = ""
    owned_by: str = "sparsegrad"

    @property
    def tasks(self) -> tuple[str, ...]:
        if self.architecture == "decoder":
            return ("causal_lm", "classification", "regression")
        return ("classification", "regression")


BUNDLED: dict[str, RegisteredModel] = {
    "minilm-l6": RegisteredModel(
        "minilm-l6", "minilm-l6", "encoder",
        "sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters (bundled)",
    ),
    "smollm2-135m": RegisteredModel(
        "smollm2-135m", "smollm2-135m", "decoder",
        "HuggingFaceTB/SmolLM2-135M-Instruct: LLaMA, 30 layers, hidden 576, 135M parameters (bundled)",
    ),
}

_DECODER_TYPES = {"llama", "mistral", "gpt2", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "gpt_neox", "opt"}


def _architecture(source: str) -> str:
    config = Path(source) / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type", "")
        except (OSError, ValueError):
            model_type = ""
        return "decoder" if model_type in _DECODER_TYPES else "encoder"
    return "decoder" if any(t in source.lower() for t in ("llama", "gpt", "qwen", "mistral", "smol")) else "encoder"


def model_registry(settings: Settings) -> dict[str, RegisteredModel]:
    """Every model this deployment serves, by name."""
    registry = dict(BUNDLED)
    for name, source in settings.models.items():
        registry[name] = RegisteredModel(name, source, _architecture(source), "configured by the service operator", "operator")
    return registry
