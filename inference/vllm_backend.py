"""The vLLM engine (GPU): a base model loaded once per engine, fine-tuned models hot-loaded onto it by name as LoRA
adapters (``LoRARequest``), the rest served merged.

* Base model: one ``AsyncLLMEngine`` with ``enable_lora`` per base model (a bundled GGUF model is written once
  as a ``save_pretrained`` folder under ``<work_dir>/inference/bases/``, which vLLM loads).
* A fine-tuned model with a LoRA form (:func:`inference.lora.lora_form`: block SparseGrad after the LoRA export, or
  a LoRA-method adapter) runs on its base's engine as a ``LoRARequest`` named by its archive's SHA-256 (ranks
  padded to one, :func:`~inference.lora.with_uniform_rank`, so nothing depends on ``rank_pattern``).
* Any other fine-tuned model (dynamic or fixed SparseGrad, paper setting, full fine-tuning, a chain of adapters)
  is served merged: the job's merged archive, or the chain merged on the CPU with the project's loaders and saved
  once; it gets an engine of its own.

At most :attr:`VllmBackend.ENGINES` engines run at once (the least recently used is shut down), each taking that
share of ``Settings.inference_vllm_gpu_memory_utilization``. Prompts are tokenized here, as the transformers
engine tokenizes them, and handed to vLLM as token ids, so both engines read the same tokens. Classification and
regression (``/v1/predict``) go through the transformers engine on the same GPU.

vLLM is imported only when this engine is chosen: ``pip install vllm`` on a CUDA machine.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from sparsegrad_core.loading import BUNDLED_MODELS, load_base_model, load_tokenizer
from sparsegrad_service.schemas.inference import ServedModel
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import ArtifactStore

from .artifacts import COMPLETE, ArtifactFiles
from .backend import Finished, Generated, Predictions, Prompt, Sampling, TextDelta
from .decoding import check_fits, prompt_ids
from .errors import InferenceError, busy
from .lora import NoLoraForm, lora_form, with_uniform_rank
from .model_cache import LRU, ModelCache
from .runner import ThreadRunner
from .transformers_backend import TransformersBackend

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ``max_lora_rank`` values vLLM accepts."""
INSTALL_HINT = ("vLLM is not installed. On a machine with an NVIDIA GPU and CUDA: `pip install vllm` (it installs "
                "its own torch build), then start the server with SPARSEGRAD_INFERENCE_BACKEND=vllm; without a GPU, "
                "serve with the default transformers engine.")


class VllmMissing(RuntimeError):
    """vLLM cannot be imported."""


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VllmMissing(INSTALL_HINT) from exc
    return vllm


def served_lora_rank(wanted: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds ``wanted``."""
    return next((r for r in VLLM_LORA_RANKS if r >= wanted), VLLM_LORA_RANKS[-1])


@dataclass
class Engine:
    engine: Any
    tokenizer: PreTrainedTokenizerBase
    context: int | None
    lora: bool


class VllmBackend:
    name = "vllm"
    ENGINES = 2
    """Engines (base models with their adapters, or merged models) on the GPU at once."""

    def __init__(self, settings: Settings, *, store: ArtifactStore | None = None) -> None:
        self.vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        self.lora_request = LoRARequest
        self.settings = settings
        self.max_rank = served_lora_rank(settings.inference_vllm_max_lora_rank)
        self.files = ArtifactFiles(settings, store)
        self.cpu = ModelCache(settings, store, device="cpu")  # merges chains and writes LoRA forms
        self.classifier = TransformersBackend(settings, store=store)
        self.prepare = ThreadRunner(workers=1, max_pending=settings.inference_max_pending)
        self._engines: LRU[str, Engine] = LRU(self.ENGINES)
        self._adapters: dict[str, tuple[int, Path] | None] = {}
        self._next_adapter_id = 1
        self._lock = asyncio.Lock()
        self._pending = 0

    # ------------------------------------------------------------------------------------------- folders
    def _base_folder(self, name: str) -> Path:
        """A folder vLLM loads for registered base model ``name``."""
        source = self.cpu.registered(name).source
        if (Path(source) / "config.json").is_file():
            return Path(source)
        if source.lower() not in BUNDLED_MODELS:
            return Path(source)  # a hub id: vLLM resolves it
        folder = self.files.root / "bases" / name
        if not (folder / COMPLETE).is_file():
            model, tokenizer = load_base_model(source, "causal_lm")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(str(folder))
            (folder / COMPLETE).write_text(source)
        return folder

    def _lora_folder(self, served: ServedModel) -> tuple[int, Path] | None:
        """``(adapter id, LoRA folder)`` of a single-adapter model with a LoRA form, else None (serve merged)."""
        if len(served.chain) != 1 or served.chain[0].format != "adapter":
            return None
        weights = served.chain[0]
        if weights.sha256 in self._adapters:
            return self._adapters[weights.sha256]
        folder = self.files.root / f"lora-{weights.sha256}"
        found: tuple[int, Path] | None = None
        if not (folder / COMPLETE).is_file():
            with self.files.unpacked(weights) as adapter_dir, tempfile.TemporaryDirectory(dir=self.files.root) as tmp:
                base = self.cpu.base_for(served.base, adapter_dir)
                try:
                    staged = with_uniform_rank(lora_form(adapter_dir, copy.deepcopy(base.model), Path(tmp) / "lora",
                                                         max_rank=self.max_rank))
                except NoLoraForm:
                    staged = None
                if staged is not None:
                    (staged / COMPLETE).write_text(weights.key)
                    shutil.rmtree(folder, ignore_errors=True)
                    staged.rename(folder)
        if (folder / COMPLETE).is_file():
            found = (self._next_adapter_id, folder)
            self._next_adapter_id += 1
        self._adapters[weights.sha256] = found
        return found

    def _merged_folder(self, served: ServedModel) -> Path:
        """The whole fine-tuned model as a folder: the job's merged archive, or the chain merged once on the CPU."""
        if served.merged is not None:
            return self.files.kept(served.merged)
        folder = self.files.root / f"merged-{served.identity}"
        if not (folder / COMPLETE).is_file():
            loaded = self.cpu.build(served)
            with tempfile.TemporaryDirectory(dir=self.files.root) as tmp:
                staged = Path(tmp) / "model"
                loaded.model.save_pretrained(staged)  # type: ignore[operator]
                loaded.tokenizer.save_pretrained(str(staged))
                (staged / COMPLETE).write_text(served.name)
                shutil.rmtree(folder, ignore_errors=True)
                staged.rename(folder)
        return folder

    # ------------------------------------------------------------------------------------------- engines
    def _start_engine(self, folder: Path, *, lora: bool) -> Engine:
        args = self.vllm.AsyncEngineArgs(
            model=str(folder), tokenizer=str(folder), enable_lora=lora, max_lora_rank=self.max_rank if lora else 16,
            max_loras=4, gpu_memory_utilization=self.settings.inference_vllm_gpu_memory_utilization / self.ENGINES,
            seed=0)
        engine = self.vllm.AsyncLLMEngine.from_engine_args(args)
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        return Engine(engine, load_tokenizer(str(folder)), config.get("max_position_embeddings"), lora)

    def _engine_for(self, served: ServedModel) -> tuple[Engine, Any]:
        """The engine serving ``served`` and its ``LoRARequest`` (None: the engine's own model). Blocking."""
        lora = None if served.is_base else self._lora_folder(served)
        key = f"base:{served.base}" if served.is_base or lora is not None else f"merged:{served.identity}"
        engine = self._engines.get(key)
        if engine is None:
            if len(self._engines.order()) >= self.ENGINES:
                self._shutdown(self._engines.order()[0])
            folder = self._base_folder(served.base) if key.startswith("base:") else self._merged_folder(served)
            engine = self._start_engine(folder, lora=key.startswith("base:"))
            self._engines.put(key, engine)
        request = None if lora is None else self.lora_request(served.identity[:16], lora[0], str(lora[1]))
        return engine, request

    def _shutdown(self, key: str) -> None:
        engine = self._engines.get(key)
        if engine is not None and hasattr(engine.engine, "shutdown"):
            engine.engine.shutdown()

    # ------------------------------------------------------------------------------------------- serving
    async def generate(self, model: ServedModel, prompt: Prompt, sampling: Sampling) -> AsyncIterator[Generated]:
        if self._pending >= self.settings.inference_max_pending:
            raise busy(self.settings.inference_max_pending)
        self._pending += 1
        try:
            async with self._lock:  # one engine change at a time
                engine, lora = await self.prepare.call(lambda: self._engine_for(model))
            ids = prompt_ids(engine.tokenizer, prompt)
            check_fits(len(ids), engine.context, prompt)
            budget = sampling.max_tokens if engine.context is None else min(sampling.max_tokens,
                                                                            engine.context - len(ids))
            params = self.vllm.SamplingParams(n=1, max_tokens=budget, temperature=sampling.temperature,
                                              top_p=sampling.top_p, seed=sampling.seed, stop=list(sampling.stop))
            async for item in self._stream(engine, ids, params, lora):
                yield item
        finally:
            self._pending -= 1

    async def _stream(self, engine: Engine, ids: list[int], params: Any, lora: Any) -> AsyncIterator[Generated]:
        request_id = secrets.token_hex(8)
        sent, final = "", None
        try:
            async for out in engine.engine.generate({"prompt_token_ids": ids}, params, request_id, lora_request=lora):
                completion = out.outputs[0]
                if len(completion.text) > len(sent):
                    yield TextDelta(completion.text[len(sent):])
                    sent = completion.text
                if out.finished:
                    final = completion
        finally:
            if final is None:
                await engine.engine.abort(request_id)
        if final is None:
            raise InferenceError(500, "vLLM ended the request without finishing it.", code="generation_incomplete")
        yield Finished("length" if final.finish_reason == "length" else "stop", len(ids), len(final.token_ids))

    async def predict(self, model: ServedModel, texts: list[str], pairs: list[str] | None) -> Predictions:
        return await self.classifier.predict(model, texts, pairs)

    async def aclose(self) -> None:
        for key in self._engines.order():
            self._shutdown(key)
        self.prepare.shutdown()
        await self.classifier.aclose()
