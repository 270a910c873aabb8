"""Token-by-token generation with a transformers causal LM, and the text bookkeeping every engine shares.

* :func:`prompt_ids` — the prompt as training saw it: a chat through
  :func:`sparsegrad_core.chat.generation_prompt` (the chat template, or the plain format), a completion prompt
  as it is; tokenized without added special tokens, as :func:`sparsegrad_core.chat.encode_segments` does.
* :class:`StopText` — the text generated so far, cut at the first stop sequence; what may be streamed now holds
  back a tail that could still begin a stop sequence, and an unfinished UTF-8 character.
* :func:`generate` — the decoding loop: one forward pass per token over the KV cache, greedy or sampled
  (temperature, top-p, a seeded generator), until an end-of-sequence token, a stop sequence or ``max_tokens``.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from sparsegrad_core.chat import generation_prompt

from .backend import Finished, Generated, Prompt, Sampling, TextDelta
from .errors import InferenceError


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    if prompt.messages is not None:
        try:
            text = generation_prompt(prompt.messages, tokenizer)
        except ValueError as exc:
            raise InferenceError(400, str(exc), param="messages", code="invalid_messages") from exc
    else:
        text = prompt.text or ""
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InferenceError(400, "The prompt is empty.", param=prompt.param, code="empty_prompt")
    return ids


def context_length(model: nn.Module) -> int | None:
    """The most positions the model takes (``max_position_embeddings``), None when its config does not say."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def check_fits(n_prompt: int, context: int | None, prompt: Prompt) -> None:
    if context is not None and n_prompt >= context:
        raise InferenceError(400, f"The prompt has {n_prompt} tokens; this model reads at most {context} tokens, "
                             "including the ones it generates.", param=prompt.param, code="context_length_exceeded")


class StopText:
    """Generated text, cut at the first stop sequence, released in safe pieces."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.text = ""
        self.sent = 0
        self.stopped = False

    def update(self, text: str) -> str:
        """Take the whole text generated so far; return the new piece that may be sent now."""
        if self.stopped:
            return ""
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self.text = text[:cut]
            return self.flush()
        self.text = text
        keep = len(text)
        if text.endswith("\ufffd"):  # a multi-byte character whose remaining bytes are still to come
            keep -= 1
        for stop in self.stops:  # a tail that could begin a stop sequence waits for the next token
            for n in range(min(len(stop) - 1, keep), 0, -1):
                if text[:keep].endswith(stop[:n]):
                    keep -= n
                    break
        piece = text[self.sent:keep] if keep > self.sent else ""
        self.sent = max(self.sent, keep)
        return piece

    def flush(self) -> str:
        """Everything not sent yet (at the end of the generation)."""
        piece = self.text[self.sent:]
        self.sent = len(self.text)
        return piece


def _end_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def _cache_name(model: nn.Module) -> str:
    """The key-value cache's argument and output name: ``cache`` (transformers 5), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def pick_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from the last position's logits (V,): argmax when greedy, else a draw from the softmax at
    ``temperature`` restricted to the smallest set of tokens whose probability reaches ``top_p``."""
    if sampling.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above each one
        sorted_probs[before >= sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, ids: list[int], sampling: Sampling,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[Generated]:
    """Yield :class:`TextDelta` pieces, then :class:`Finished` (``length`` when ``max_tokens`` or the model's
    context ran out). Stops early, yielding nothing more, once ``cancelled()`` is true."""
    device = next(model.parameters()).device
    generator = None
    if not sampling.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(sampling.seed if sampling.seed is not None else random.getrandbits(63))
    context = context_length(model)
    budget = sampling.max_tokens if context is None else min(sampling.max_tokens, context - len(ids))
    end = _end_ids(model, tokenizer)
    text = StopText(sampling.stop)
    generated: list[int] = []
    inputs = torch.tensor([ids], device=device)
    cache_name = _cache_name(model)
    past = None
    finish: str = "length"
    while len(generated) < budget:
        if cancelled():
            return
        out = model(input_ids=inputs, use_cache=True, **{cache_name: past})
        past = out[cache_name]
        token = pick_token(out.logits[0, -1], sampling, generator)
        generated.append(token)
        if token in end:
            finish = "stop"
            break
        piece = text.update(str(tokenizer.decode(generated, skip_special_tokens=True)))
        if piece:
            yield TextDelta(piece)
        if text.stopped:
            finish = "stop"
            break
        inputs = torch.tensor([[token]], device=device)
    rest = text.flush()
    if rest:
        yield TextDelta(rest)
    yield Finished("stop" if finish == "stop" else "length", len(ids), len(generated))
