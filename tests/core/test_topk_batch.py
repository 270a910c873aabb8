"""Batched top-k on the sync-free path (``topk_batch``): every layer gets what its own top-k would give, the
waiting stays bounded, and a step's bookkeeping (reads, ``zero_grad``) sees no difference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsegrad_core import SparseGradLinear, topk_batch
from sparsegrad_core.optim import build_optimizer


def _model(orthogonal, selection: str) -> nn.Sequential:
    """Six SparseGradLinear layers of two shapes (48×32 and 32×48, three each), on the sync-free path. Their
    gradients have one size (1536 entries) for exact selection, two for block selection (blocks 20×12, 16×12)."""
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i in range(6):
        out_f, in_f = (48, 32) if i % 2 == 0 else (32, 48)
        u_out, u_in = orthogonal(out_f, 2 * i), orthogonal(in_f, 2 * i + 1)
        if selection == "block":
            u_out, u_in = u_out[:, : 20 if i % 2 == 0 else 16].contiguous(), u_in[:, :12].contiguous()
        lin = nn.Linear(in_f, out_f)
        layer = SparseGradLinear(lin.weight.detach().clone(), None, u_out, u_in, 25, selection=selection)
        layer.sync_free = True
        mods += [layer, nn.GELU()]
    return nn.Sequential(*mods)


def _selections(model: nn.Sequential) -> list[dict[int, float]]:
    out = []
    for layer in model:
        if isinstance(layer, SparseGradLinear):
            assert layer.selected is not None
            idx, vals = layer.selected
            out.append(dict(zip(idx.tolist(), vals.tolist(), strict=True)))
    return out


@pytest.mark.parametrize("selection", ["block", "dynamic"])
def test_batched_selection_equals_each_layers_own(orthogonal, selection, monkeypatch):
    x = torch.randn(10, 32)
    monkeypatch.setattr(topk_batch, "PENDING", topk_batch.PendingTopK(group_size=1))  # each layer alone
    _patch_layers(monkeypatch)
    alone = _model(orthogonal, selection)
    alone(x).square().mean().backward()
    expected = _selections(alone)
    energies = [dict(layer.last_energy) for layer in alone if isinstance(layer, SparseGradLinear)]

    monkeypatch.setattr(topk_batch, "PENDING", topk_batch.PendingTopK(group_size=2))
    _patch_layers(monkeypatch)
    together = _model(orthogonal, selection)
    together(x).square().mean().backward()
    layers = [m for m in together if isinstance(m, SparseGradLinear)]
    # Backward runs the last layer first; layers whose gradients have one size are selected in twos. Block: two
    # sizes of three layers, so the first layer of each waits; exact: one size of six, nothing waits.
    waiting = [True, True, False, False, False, False] if selection == "block" else [False] * 6
    assert [layer._pending_topk for layer in layers] == waiting
    assert _selections(together) == expected  # the same entries and values, layer by layer
    assert not topk_batch.PENDING.groups and not any(layer._pending_topk for layer in layers)
    for layer, energy in zip(layers, energies, strict=True):
        assert energy.keys() == layer.last_energy.keys()
        for key, value in energy.items():
            torch.testing.assert_close(layer.last_energy[key], value, rtol=1e-6, atol=0)


def _patch_layers(monkeypatch) -> None:
    """The layer module holds its own reference to the process's ``PENDING``: point it at the test's."""
    import sparsegrad_core.layer as layer_module

    monkeypatch.setattr(layer_module, "PENDING", topk_batch.PENDING)


def test_a_step_reads_every_selection_and_zero_grad_drops_waiting_ones(orthogonal, monkeypatch):
    monkeypatch.setattr(topk_batch, "PENDING", topk_batch.PendingTopK(group_size=4))
    _patch_layers(monkeypatch)
    model = _model(orthogonal, "block")
    layers = [m for m in model if isinstance(m, SparseGradLinear)]
    weights = [layer.weight.clone() for layer in layers]
    opt = build_optimizer(model, lr=1e-2)
    x = torch.randn(10, 32)
    model(x).square().mean().backward()
    assert all(layer._pending_topk for layer in layers)  # three per block size: below the group size
    opt.step()  # reads every layer's selection: one batched top-k per shape
    assert not topk_batch.PENDING.groups
    assert all(not torch.equal(w, layer.weight) for w, layer in zip(weights, layers, strict=True))
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.zero_grad()  # a backward without a step: nothing waits afterwards, nothing is selected
    assert not topk_batch.PENDING.groups
    assert all(layer.selected is None and not layer._pending_topk for layer in layers)


def test_the_default_group_is_as_many_layers_as_the_batch_bytes_hold(orthogonal, monkeypatch):
    """Without a fixed group size, a group is selected once :data:`topk_batch.BATCH_BYTES` of gradients wait."""
    monkeypatch.setattr(topk_batch, "PENDING", topk_batch.PendingTopK())
    _patch_layers(monkeypatch)
    model = _model(orthogonal, "dynamic")  # six gradients of 1536 float32 entries
    monkeypatch.setattr(topk_batch, "BATCH_BYTES", 4 * 1536 * 4)  # four of them
    model(torch.randn(10, 32)).square().mean().backward()
    layers = [m for m in model if isinstance(m, SparseGradLinear)]
    # Backward runs the last layer first: the last four are selected together, the first two still wait.
    assert [layer._pending_topk for layer in layers] == [True, True, False, False, False, False]
