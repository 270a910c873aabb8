"""What an engine generates, in OpenAI's shapes: a whole chat completion or completion, or its Server-Sent Events
(``data: {chunk}`` lines, a chat stream starting with the assistant role, the last chunk carrying
``finish_reason``, then ``usage`` when ``stream_options.include_usage`` asked for it, then ``data: [DONE]``).
An error after the stream started is one ``data: {"error": {...}}`` event, which the ``openai`` SDK raises."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from sparsegrad_service.schemas.inference import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionPublic,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionPublic,
    Usage,
)

from .backend import Finished, Generated, TextDelta
from .errors import InferenceError

log = logging.getLogger("sparsegrad.inference")


def _usage(finished: Finished) -> Usage:
    return Usage(prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens,
                 total_tokens=finished.prompt_tokens + finished.completion_tokens)


class Answer:
    """One chat completion (``chat=True``) or completion in the making: its id, time and model name."""

    def __init__(self, model: str, *, chat: bool) -> None:
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def whole(self, text: str, finished: Finished) -> dict[str, Any]:
        common: dict[str, Any] = {"id": self.id, "created": self.created, "model": self.model, "usage": _usage(finished)}
        if self.chat:
            choice = ChatChoice(message=ChatMessageOut(content=text), finish_reason=finished.finish_reason)
            return ChatCompletionPublic(choices=[choice], **common).model_dump(mode="json")
        return CompletionPublic(choices=[CompletionChoice(text=text, finish_reason=finished.finish_reason)],
                                **common).model_dump(mode="json")

    def chunk(self, text: str | None, finished: Finished | None = None, *, role: bool = False) -> dict[str, Any]:
        finish = None if finished is None else finished.finish_reason
        common: dict[str, Any] = {"id": self.id, "created": self.created, "model": self.model}
        if self.chat:
            delta = ChatDelta(role="assistant" if role else None, content=text)
            return ChatCompletionChunk(choices=[ChatChunkChoice(delta=delta, finish_reason=finish)],
                                       **common).model_dump(mode="json")
        return CompletionPublic(choices=[CompletionChoice(text=text or "", finish_reason=finish)],
                                **common).model_dump(mode="json")

    def usage_chunk(self, finished: Finished) -> dict[str, Any]:
        common: dict[str, Any] = {"id": self.id, "created": self.created, "model": self.model, "choices": [],
                                  "usage": _usage(finished)}
        model = ChatCompletionChunk if self.chat else CompletionPublic
        return model(**common).model_dump(mode="json")  # type: ignore[arg-type]


async def collect(first: Generated, rest: AsyncIterator[Generated]) -> tuple[str, Finished]:
    """The whole text and the :class:`Finished` of a generation."""
    pieces: list[str] = []
    try:
        async for item in _chain(first, rest):
            if isinstance(item, Finished):
                return "".join(pieces), item
            pieces.append(item.text)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
    raise InferenceError(500, "The generation ended without finishing.", code="generation_incomplete")


async def _chain(first: Generated, rest: AsyncIterator[Generated]) -> AsyncIterator[Generated]:
    yield first
    async for item in rest:
        yield item


def event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def sse(answer: Answer, first: Generated, rest: AsyncIterator[Generated], include_usage: bool
              ) -> AsyncIterator[bytes]:
    """The Server-Sent Events of a streamed answer; closes ``rest`` (which stops the engine) however it ends."""
    try:
        if answer.chat:
            yield event(answer.chunk("", role=True))
        async for item in _chain(first, rest):
            if isinstance(item, TextDelta):
                yield event(answer.chunk(item.text))
                continue
            yield event(answer.chunk(None if answer.chat else "", item))
            if include_usage:
                yield event(answer.usage_chunk(item))
            break
        yield event("[DONE]")
    except InferenceError as exc:
        yield event(exc.body())
    except Exception:
        log.exception("generation failed while streaming")
        yield event(InferenceError(500, "The generation failed.", code="internal_error").body())
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
