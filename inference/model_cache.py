"""Loaded models of the transformers engine: base models once, fine-tuned models merged into copies of them,
the least recently used evicted per base model.

A fine-tuned model is a chain of stored archives over a registered base model (one adapter, or several when a
model was trained from another fine-tuned one: :mod:`sparsegrad_service.model_resolution`). It loads with the
project's own loaders: the base as :func:`sparsegrad_core.recipe.load_base_for` loads it for the first adapter
(task, head size and seed from its ``training_info.json``; cached and copied), then each adapter merged in by
:func:`sparsegrad_core.training.merge_exported` (SparseGrad or LoRA: plain modules, no per-token adapter cost);
a whole-model archive (full fine-tuning) loads as a model folder. Each archive is checked against its SHA-256
before anything reads it (:mod:`inference.artifacts`).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from sparsegrad_core.loading import load_base_model
from sparsegrad_core.recipe import load_base_for
from sparsegrad_core.training import merge_exported, read_training_info
from sparsegrad_service.registry import RegisteredModel, model_registry
from sparsegrad_service.schemas.inference import ServedModel
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore

from .artifacts import ArtifactFiles
from .errors import InferenceError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``capacity`` values; reading one makes it the most recent."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def order(self) -> list[K]:
        """The keys, least recently used first."""
        return list(self._items)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: str
    labels: list[str] | None = None
    """Class names by id (classification)."""
    max_length: int | None = None
    """The sequence length the model was trained with (predict truncates to it)."""


BaseKey = tuple[str, str, int | None]
"""(base model name, task, number of labels)."""


class ModelCache:
    BASES = 4
    """Base models kept loaded (one per base model and head shape in use)."""

    def __init__(self, settings: Settings, store: ArtifactStore | None = None, device: str | None = None) -> None:
        self.registry = model_registry(settings)
        self.files = ArtifactFiles(settings, store)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.per_base = settings.inference_cache_size
        self._bases: LRU[BaseKey, LoadedModel] = LRU(self.BASES)
        self._tuned: dict[str, LRU[str, LoadedModel]] = {}
        self._lock = threading.Lock()

    def registered(self, name: str) -> RegisteredModel:
        model = self.registry.get(name)
        if model is None:
            raise InferenceError(404, f"The base model {name!r} is not registered on the inference server (its "
                                 "SPARSEGRAD_MODELS must match the API's).", param="model", code="model_not_found")
        return model

    def loaded(self, base: str) -> list[str]:
        """The fine-tuned models of ``base`` in memory (:attr:`ServedModel.identity`), least recently used first."""
        lru = self._tuned.get(base)
        return [] if lru is None else lru.order()

    def get(self, served: ServedModel) -> LoadedModel:
        """The model ``served`` names, loaded (or from the cache)."""
        with self._lock:
            if served.is_base:
                return self._base(served.base, served.task, None, None)
            tuned = self._tuned.setdefault(served.base, LRU(self.per_base))
            loaded = tuned.get(served.identity)
            if loaded is None:
                loaded = self.build(served)
                tuned.put(served.identity, loaded)
            return loaded

    def build(self, served: ServedModel) -> LoadedModel:
        """``served`` loaded now, uncached: each archive of the chain over the base, in order (an adapter merged
        into a copy of what came before, a whole model replacing it)."""
        current: LoadedModel | None = None
        for weights in served.chain:
            with self.files.unpacked(weights) as folder:
                info = read_training_info(folder)
                task = str(info.get("task") or served.task)
                if weights.format == "model":
                    current = self._whole(folder, task, info)
                    continue
                if current is None:
                    current = self.base_for(served.base, folder)
                try:
                    model = merge_exported(copy.deepcopy(current.model), folder)
                except (ValueError, FileNotFoundError) as exc:
                    raise InferenceError(500, f"An adapter of {served.name!r} does not load onto the model it was "
                                         f"trained from (base {served.base!r}): {exc}", code="adapter_mismatch") from exc
                current = LoadedModel(_ready(model, self.device), current.tokenizer, task, _labels(info, model),
                                      info.get("max_seq_length") or current.max_length)
        assert current is not None, "a fine-tuned model has weights"
        return current

    def base_for(self, name: str, adapter_dir: Path) -> LoadedModel:
        """Registered base model ``name`` as the run of the adapter export ``adapter_dir`` loaded it (cached: copy
        it before changing it)."""
        info = read_training_info(adapter_dir)
        task = str(info.get("task") or "causal_lm")
        return self._base(name, task, info.get("num_labels") if task != "causal_lm" else None, adapter_dir)

    def _base(self, name: str, task: str, num_labels: int | None, adapter_dir: Path | None) -> LoadedModel:
        key: BaseKey = (name, task, num_labels)
        loaded = self._bases.get(key)
        if loaded is None:
            source = self.registered(name).source
            if adapter_dir is not None:
                model, tokenizer = load_base_for(source, adapter_dir)
            else:
                model, tokenizer = load_base_model(source, task, num_labels=num_labels)
            loaded = LoadedModel(_ready(model, self.device), tokenizer, task)
            self._bases.put(key, loaded)
        return loaded

    def _whole(self, folder: Path, task: str, info: dict[str, object]) -> LoadedModel:
        """A whole model folder (``save_pretrained`` + tokenizer), its classes named as its run named them."""
        config = json.loads((folder / "config.json").read_text())
        names = info.get("label_names") or _config_labels(config)
        num_labels = None if task == "causal_lm" else len(names or []) or config.get("num_labels")  # type: ignore[arg-type]
        model, tokenizer = load_base_model(folder, task, num_labels=num_labels,  # type: ignore[arg-type]
                                           label_names=names if task == "classification" else None)  # type: ignore[arg-type]
        return LoadedModel(_ready(model, self.device), tokenizer, task, _labels(info, model),
                           info.get("max_seq_length"))  # type: ignore[arg-type]


def _ready(model: nn.Module, device: torch.device) -> nn.Module:
    model.to(device)  # type: ignore[arg-type]
    return model.eval()


def _config_labels(config: dict[str, object]) -> list[str] | None:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _labels(info: dict[str, object], model: nn.Module) -> list[str] | None:
    names = info.get("label_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(id2label)] or None
