"""What a serving engine offers the inference server (:class:`Backend`), and the values it takes and yields.

Torch-free: the engines import torch (and vLLM) themselves; :func:`inference.engines.make_backend` builds the one a
deployment chose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sparsegrad_service.schemas.inference import (
    ChatCompletionCreate,
    CompletionCreate,
    Prediction,
    ServedModel,
)


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: greedy when ``temperature`` is 0, else softmax sampling within ``top_p``."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def of(cls, request: ChatCompletionCreate | CompletionCreate) -> Sampling:
        return cls(max_tokens=request.token_budget,
                   temperature=1.0 if request.temperature is None else request.temperature,
                   top_p=1.0 if request.top_p is None else request.top_p, seed=request.seed,
                   stop=tuple(request.stop_sequences))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Prompt:
    """A chat (``messages``: role, content and name of each message) or a plain text to continue."""

    messages: Sequence[dict[str, Any]] | None = None
    text: str | None = None

    @classmethod
    def of(cls, request: ChatCompletionCreate | CompletionCreate) -> Prompt:
        if isinstance(request, CompletionCreate):
            return cls(text=request.text)
        return cls(messages=[{"role": m.role, "content": m.text, **({"name": m.name} if m.name else {})}
                             for m in request.messages])

    @property
    def param(self) -> str:
        """The request field the prompt came from (errors name it)."""
        return "messages" if self.messages is not None else "prompt"


@dataclass(frozen=True)
class TextDelta:
    """The next piece of generated text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a generation: why it stopped and how many tokens it read and wrote."""

    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


Generated = TextDelta | Finished


@dataclass(frozen=True)
class Predictions:
    data: list[Prediction]
    prompt_tokens: int


class Backend(Protocol):
    """A serving engine. ``generate`` yields text deltas, then one :class:`Finished`; loading the model happens
    before the first item, so a model that cannot be served fails before anything is streamed. Both raise
    :class:`~inference.errors.InferenceError` for what the client should hear."""

    name: str

    def generate(self, model: ServedModel, prompt: Prompt, sampling: Sampling) -> AsyncIterator[Generated]: ...

    async def predict(self, model: ServedModel, texts: list[str], pairs: list[str] | None) -> Predictions: ...

    async def aclose(self) -> None: ...
