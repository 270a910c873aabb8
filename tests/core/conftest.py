"""Fixtures for the sparsegrad_core tests: tiny random transformer models (from ``support.tiny``), batches,
random orthogonal bases and small numeric helpers.

Every helper is a fixture that returns a callable, so test modules need no imports from here.
All tiny models are built with dropout 0 so that two forward/backward passes of the same batch give
the same gradients (the naive references in the tests depend on that).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from support.tiny import VOCAB, tiny_bert, tiny_gpt2, tiny_llama, tiny_roberta
from torch import nn

SEQ = 12


@pytest.fixture(autouse=True)
def _deterministic_single_thread():
    """Seed, and run on one intra-op thread (restored after each test; results do not depend on it).

    Measured on the 2-core CI-like machine while other work ran on it: with 2 OpenMP threads a tiny
    LayerNorm took ~10 ms instead of 5 us, a MiniLM forward+backward 2-3.7 s instead of 0.5 s and a
    1536x1536 eigh 20 s instead of 0.9 s; one thread is never much slower and keeps the suite fast."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def sync_ops() -> set[str]:
    """Ops that need a host synchronisation on CUDA (their output size or value is read back)."""
    return {"aten::nonzero", "aten::unique", "aten::_unique", "aten::_unique2", "aten::unique_dim",
            "aten::unique_consecutive", "aten::item", "aten::_local_scalar_dense", "aten::masked_select",
            "aten::is_nonzero", "aten::equal"}


@pytest.fixture
def vocab() -> int:
    return VOCAB


@pytest.fixture
def make_bert() -> Callable[..., nn.Module]:
    def make(
        seed: int = 0, num_labels: int = 2, hidden: int = 32, layers: int = 2, intermediate: int = 64
    ) -> nn.Module:
        return tiny_bert(num_labels=num_labels, dropout=0.0, seed=seed, hidden=hidden, layers=layers, heads=4,
                         intermediate=intermediate, max_positions=64).eval()

    return make


@pytest.fixture
def make_roberta() -> Callable[..., nn.Module]:
    return tiny_roberta


@pytest.fixture
def make_llama() -> Callable[..., nn.Module]:
    def make(seed: int = 0, layers: int = 2) -> nn.Module:
        return tiny_llama(seed=seed, layers=layers, heads=4, intermediate=48, max_positions=64).eval()

    return make


@pytest.fixture
def make_gpt2() -> Callable[..., nn.Module]:
    return tiny_gpt2


@pytest.fixture
def make_cls_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """A sequence-classification batch; rows get trailing padding (attention_mask 0, token 0)."""

    def make(
        seed: int, batch: int = 4, seq: int = SEQ, num_labels: int = 2, pad: bool = True
    ) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, VOCAB, (batch, seq), generator=gen)
        mask = torch.ones(batch, seq, dtype=torch.long)
        if pad:
            lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=gen)
            lengths[0] = seq
            for i, n in enumerate(lengths.tolist()):
                mask[i, n:] = 0
                ids[i, n:] = 0
        labels = torch.randint(0, num_labels, (batch,), generator=gen)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return make


@pytest.fixture
def make_lm_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """A causal-LM batch (labels = input ids), no padding."""

    def make(seed: int, batch: int = 3, seq: int = SEQ) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, VOCAB, (batch, seq), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    return make


@pytest.fixture
def orthogonal() -> Callable[[int, int], torch.Tensor]:
    """A random orthogonal (n, n) float32 matrix from the QR of a Gaussian matrix."""

    def make(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        return q.to(torch.float32).contiguous()

    return make


@pytest.fixture
def rel_err() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """``‖a − b‖ / ‖b‖`` in float64."""

    def err(a: torch.Tensor, b: torch.Tensor) -> float:
        a64, b64 = a.detach().double(), b.detach().double()
        den = float(b64.norm())
        return float((a64 - b64).norm()) / (den if den > 0 else 1.0)

    return err


@pytest.fixture
def scatter_dense() -> Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]:
    """Dense (out, in) float64 matrix holding ``values`` at flat row-major ``indices``; with no indices and
    ``out·in`` values (a layer's dense ``sg_delta``), the values themselves, row-major."""

    def make(indices: torch.Tensor, values: torch.Tensor, out_f: int, in_f: int) -> torch.Tensor:
        if indices.numel() == 0 and values.numel() == out_f * in_f:
            return values.double().view(out_f, in_f).clone()
        d = torch.zeros(out_f * in_f, dtype=torch.float64)
        d[indices.long()] = values.double()
        return d.view(out_f, in_f)

    return make


@pytest.fixture
def sum_ce_loss() -> Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """Summed (not averaged) cross-entropy of a sequence classifier, so micro-batch losses add up."""

    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum")

    return loss


@pytest.fixture
def clone_model() -> Callable[[nn.Module], nn.Module]:
    return copy.deepcopy
