"""Inference bodies: OpenAI's chat completions and completions (request, answer, stream chunk), the predict route of
classification and regression models, and the envelope the API sends the inference server.

The API validates a request with these models (a bad value is a 400 naming the field; fields the ``openai`` SDK may
send that change nothing are accepted and ignored) and forwards it, with what to load (:class:`ServedModel`), to the
inference server, which answers with the same models. Torch-free: both processes import them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_TOKENS_LIMIT = 4096
"""The most tokens one request may generate."""
DEFAULT_MAX_TOKENS = 256
"""Tokens generated when a request sets neither ``max_tokens`` nor ``max_completion_tokens``."""
MAX_STOP_SEQUENCES = 4
MAX_PREDICT_TEXTS = 256
"""Texts one predict request may hold."""


class _Request(BaseModel):
    """Unknown fields are accepted and ignored: the ``openai`` SDK and other clients send fields we do not use."""

    model_config = ConfigDict(extra="ignore")


def _unsupported(value: Any, default: Any, what: str) -> Any:
    if value is not None and value != default:
        raise ValueError(f"{what} is not supported by this server (leave it unset or {default!r})")
    return value


class StreamOptions(_Request):
    include_usage: bool | None = False


class _Generation(_Request):
    """Sampling fields shared by chat completions and completions."""

    model: str = Field(min_length=1, description="A base model from `/v1/models`, one of your fine-tuned models "
                       "(`fine_tuned_model`) or one of their checkpoints (`{fine_tuned_model}:ckpt-step-{N}`).")
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT,
                                   description=f"Tokens to generate at most (default {DEFAULT_MAX_TOKENS}).")
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False,
                                      description="0: greedy; default 1.")
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling; default 1.")
    seed: int | None = Field(default=None, ge=0, lt=2**63,
                             description="Sampling with the same seed on the same model gives the same output.")
    stop: str | list[str] | None = Field(default=None, description=f"Up to {MAX_STOP_SEQUENCES} sequences that end "
                                         "the output (not included in it).")
    stream: bool | None = Field(default=False, description="Answer with Server-Sent Events, one chunk per piece of text.")
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, description="Only 1 is supported.")
    presence_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    frequency_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    logit_bias: dict[str, float] | None = Field(default=None, description="Not supported.")
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported: send one request per completion")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        return _unsupported(value, 0, "a penalty")  # type: ignore[no-any-return]

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _unsupported(value or None, None, "logit_bias")  # type: ignore[no-any-return]

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return value

    @property
    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def token_budget(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def include_usage(self) -> bool:
        """A stream ends with a chunk holding ``usage`` (``stream_options.include_usage``)."""
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = Field(
        default=None, description="Text, or a list of `{\"type\": \"text\", \"text\": ...}` parts.")
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for part in value if isinstance(value, list) else []:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"only text content parts are supported (got type {part.get('type')!r})")
        return value

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part["text"] for part in self.content)
        return self.content or ""


class ChatCompletionCreate(_Generation):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT,
                                              description="OpenAI's newer name of `max_tokens` (wins when both are set).")
    logprobs: bool | None = Field(default=None, description="Not supported.")
    tools: list[dict[str, Any]] | None = Field(default=None, description="Not supported.")
    response_format: dict[str, Any] | None = Field(default=None, description="Only `{\"type\": \"text\"}`.")

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        return _unsupported(value, False, "logprobs")  # type: ignore[no-any-return]

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return _unsupported(value or None, None, "tool calling")  # type: ignore[no-any-return]

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("only {\"type\": \"text\"} is supported")
        return value

    @property
    def token_budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


class CompletionCreate(_Generation):
    prompt: str | list[str] = Field(description="One prompt (a list must hold exactly one string).")
    echo: bool | None = Field(default=False, description="Not supported.")
    best_of: int | None = Field(default=None, description="Only 1 is supported.")
    logprobs: int | None = Field(default=None, description="Not supported.")
    suffix: str | None = Field(default=None, description="Not supported.")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError(f"send one prompt per request (got a list of {len(value)})")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool | None) -> bool | None:
        return _unsupported(value, False, "echo")  # type: ignore[no-any-return]

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int | None) -> int | None:
        return _unsupported(value, 1, "best_of")  # type: ignore[no-any-return]

    @field_validator("logprobs", "suffix")
    @classmethod
    def _nothing(cls, value: Any) -> Any:
        return _unsupported(value, None, "this field")

    @property
    def text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


FinishReason = Literal["stop", "length"]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionPublic(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed chat completion (``data: {...}``; the stream ends with ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class CompletionPublic(BaseModel):
    """A completion, and also one chunk of a streamed completion (``usage`` only in the last, when asked for)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class PredictionCreate(_Request):
    model: str = Field(min_length=1, description="One of your fine-tuned classification or regression models.")
    texts: list[str] = Field(min_length=1, max_length=MAX_PREDICT_TEXTS)
    text_pairs: list[str] | None = Field(default=None, description="Second texts of pair tasks (MRPC, STS-B...), one "
                                         "per text.")

    @field_validator("text_pairs")
    @classmethod
    def _pairs_match(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        texts = info.data.get("texts")
        if value is not None and texts is not None and len(value) != len(texts):
            raise ValueError(f"{len(value)} pairs for {len(texts)} texts: send one pair per text")
        return value


class Prediction(BaseModel):
    index: int
    label: str | None = Field(description="The predicted class's name (null for regression).")
    score: float = Field(description="The predicted class's probability, or the regression output.")
    probabilities: dict[str, float] | None = Field(description="Every class's probability (null for regression).")


class PredictionsPublic(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Prediction]
    usage: Usage


# ------------------------------------------------------------------------------- the inference server's protocol
class StoredWeights(BaseModel):
    """One stored archive of a model's weights, and the SHA-256 it must have: ``adapter`` unpacks to an adapter
    export (merged into what came before it), ``model`` to a whole model folder (which replaces it)."""

    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    format: Literal["adapter", "model"]


class ServedModel(BaseModel):
    """What the inference server loads for a request: a registered base model and the stored weights applied over
    it, root first (none for a base model). The API resolves it from the tenant's model name
    (:func:`sparsegrad_service.model_resolution.resolve_model`); the server needs no database."""

    name: str = Field(description="The model name the request used, echoed in the answer's `model`.")
    base: str = Field(description="The registered base model at the root of the chain.")
    task: Literal["causal_lm", "classification", "regression"]
    chain: list[StoredWeights] = Field(default_factory=list, description="Archives to apply over the base, in order.")
    merged: StoredWeights | None = Field(default=None, description="The whole chain as one model folder, when the "
                                         "job made one (engines that serve merged models prefer it).")

    @property
    def is_base(self) -> bool:
        return not self.chain

    @property
    def identity(self) -> str:
        """What tells this model's weights apart (the last archive's SHA-256; the base's name for a base model)."""
        return self.chain[-1].sha256 if self.chain else self.base


class ChatCall(BaseModel):
    model: ServedModel
    request: ChatCompletionCreate


class CompletionCall(BaseModel):
    model: ServedModel
    request: CompletionCreate


class PredictionCall(BaseModel):
    model: ServedModel
    request: PredictionCreate
