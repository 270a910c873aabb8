"""The transformers engine: the inference server's default, on CPU (or a GPU it sees).

Models come from :class:`~inference.model_cache.ModelCache`; generation is :func:`inference.decoding.generate`,
classification one forward pass per batch. All of it runs in a :class:`~inference.runner.ThreadRunner`, one
request at a time, at most ``Settings.inference_max_pending`` held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import torch

from sparsegrad_service.schemas.inference import Prediction, ServedModel
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore

from .backend import Generated, Predictions, Prompt, Sampling
from .decoding import check_fits, context_length, generate, prompt_ids
from .errors import InferenceError
from .model_cache import LoadedModel, ModelCache
from .runner import ThreadRunner

PREDICT_BATCH = 32


class TransformersBackend:
    name = "transformers"

    def __init__(self, settings: Settings, *, store: ArtifactStore | None = None, device: str | None = None) -> None:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.models = ModelCache(settings, store, device)
        self.runner = ThreadRunner(workers=1, max_pending=settings.inference_max_pending)

    def generate(self, model: ServedModel, prompt: Prompt, sampling: Sampling) -> AsyncIterator[Generated]:
        def produce(cancelled: Callable[[], bool]) -> Iterator[Generated]:
            loaded = self.models.get(model)
            ids = prompt_ids(loaded.tokenizer, prompt)
            check_fits(len(ids), context_length(loaded.model), prompt)
            yield from generate(loaded.model, loaded.tokenizer, ids, sampling, cancelled)

        return self.runner.stream(produce)

    async def predict(self, model: ServedModel, texts: list[str], pairs: list[str] | None) -> Predictions:
        return await self.runner.call(lambda: predict(self.models.get(model), texts, pairs))

    async def aclose(self) -> None:
        self.runner.shutdown()


@torch.no_grad()
def predict(loaded: LoadedModel, texts: list[str], pairs: list[str] | None) -> Predictions:
    """Labels, scores and probabilities of a classification or regression model, ``PREDICT_BATCH`` texts a pass,
    each truncated to the length the model was trained with."""
    if loaded.task not in ("classification", "regression"):
        raise InferenceError(400, "This model generates text; use /v1/chat/completions or /v1/completions.",
                             param="model", code="wrong_model_type")
    device = next(loaded.model.parameters()).device
    out: list[Prediction] = []
    tokens = 0
    for start in range(0, len(texts), PREDICT_BATCH):
        batch = texts[start:start + PREDICT_BATCH]
        second = None if pairs is None else pairs[start:start + PREDICT_BATCH]
        enc = loaded.tokenizer(batch, second, truncation=True, max_length=loaded.max_length, padding=True,
                               return_tensors="pt")
        tokens += int(enc["attention_mask"].sum())
        logits = loaded.model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
        for i, row in enumerate(logits):
            index = start + i
            if loaded.task == "regression":
                out.append(Prediction(index=index, label=None, score=float(row[0]), probabilities=None))
                continue
            probs = torch.softmax(row, dim=-1).tolist()
            names = loaded.labels if loaded.labels and len(loaded.labels) == len(probs) else [
                str(k) for k in range(len(probs))]
            best = max(range(len(probs)), key=probs.__getitem__)
            out.append(Prediction(index=index, label=names[best], score=probs[best],
                                  probabilities=dict(zip(names, probs, strict=True))))
    return Predictions(out, tokens)
