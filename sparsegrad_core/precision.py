"""Reduced precision in SparseGrad's gradient products: under autocast they run in the activations' dtype, as a
dense layer's weight gradient would; what is kept (selected values, energies, the delta, the optimizer state and
the weight) stays float32. Also the copies of a basis that those products and the push-back reuse."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch


def gradient_dtype(g: torch.Tensor, x: torch.Tensor | None = None) -> torch.dtype:
    """The dtype SparseGrad's gradient products run in: that of the output gradient and saved input when autocast
    made them bfloat16 or float16 (the dtype a dense layer's weight gradient is computed in under autocast), float32
    otherwise. What is kept (the selected values, energies, the delta and the optimizer state) is always float32."""
    low = (torch.bfloat16, torch.float16)
    if g.dtype in low and (x is None or x.dtype == g.dtype):
        return g.dtype
    return torch.float32


_DERIVED: dict[tuple[int, object], tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}
"""Copies made from a basis (reduced precision, transposed), by ``id`` of the basis and what was made; an entry
leaves when its basis is freed, and is remade when the basis changes in place."""


def _derived(u: torch.Tensor, what: object, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    key = (id(u), what)
    hit = _DERIVED.get(key)
    if hit is not None and hit[0]() is u and hit[1] == u._version:
        return hit[2]
    made = make(u)
    if hit is None:
        weakref.finalize(u, _DERIVED.pop, key, None)
    _DERIVED[key] = (weakref.ref(u), u._version, made)
    return made


def basis_as(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``u`` in ``dtype``; a reduced-precision copy of a basis is made once and reused until the basis changes (the
    bases of a kind are shared by its layers, so one copy per kind)."""
    if u.dtype == dtype:
        return u
    return _derived(u, dtype, lambda t: t.to(dtype))


def basis_transposed(u: torch.Tensor) -> torch.Tensor:
    """``u.T`` laid out contiguously, made once per basis: on the CPU a sparse-by-dense product copies a transposed
    (non-contiguous) dense operand at every call, a fresh allocation of the whole basis each step."""
    return _derived(u, "T", lambda t: t.T.contiguous())


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: Intel AMX tiles, or the AVX-512 BF16 dot products
    (AMD Zen 4 and later, Intel Cooper Lake). On both bf16 autocast makes a training step about twice as fast
    (``bench/step.py --precision bf16``: ``bench/results/step_bert-base-4l_amx_{fp32,bf16}.json`` on a Xeon with AMX,
    ``step_bert-base-4l_epyc_{fp32,bf16}.json`` on an EPYC with AVX-512 BF16); elsewhere bf16 matrix products are
    emulated, so float32 is the better default."""
    checks = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(bool(check()) for check in checks if check is not None)


def bf16_autocast(device: torch.device | str, enabled: bool, cache: bool = True) -> AbstractContextManager[None]:
    """``torch.autocast`` to bfloat16 on ``device`` when ``enabled`` (training jobs with ``bf16``; evaluating a job's
    adapter as the job did: its ``training_info.json`` records ``bf16``), else a no-op context. ``cache=False``: no
    cache of cast weights (a step captured in a CUDA graph)."""
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache)
