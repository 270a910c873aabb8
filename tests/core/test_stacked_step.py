"""The sparse optimizer's stacked step: layers of one projection kind (one ``stack_key``) are updated by stacked
operations over rows of one tensor, and every layer ends exactly where its own update would have put it."""

from __future__ import annotations

import pytest
import torch

from sparsegrad_core import (
    SparseEntryAdam,
    SparseGradLinear,
    apply_sparsegrad,
    calibrate,
    load_adapter,
    save_adapter,
    topk_batch,
)
from sparsegrad_core import layer as layer_module
from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.optim import build_optimizer

OUT, IN, K = 24, 40, 30


def _kind(orthogonal, selection: str, standard_out: bool = False, n: int = 4,
          shape: tuple[int, int] = (OUT, IN)) -> list[SparseGradLinear]:
    """``n`` layers of one kind: the same bases (one tensor each, shared, as installed), different weights."""
    u_out, u_in = orthogonal(shape[0], 0), orthogonal(shape[1], 1)
    if selection == "block":
        u_out, u_in = (None if standard_out else u_out[:, :10].contiguous()), u_in[:, :16].contiguous()
    gen = torch.Generator().manual_seed(2)
    layers = [SparseGradLinear(torch.randn(*shape, generator=gen), None, u_out, u_in, K, selection=selection)
              for _ in range(n)]
    for layer in layers:
        layer.sync_free = True
    return layers


def _train(layers: list[SparseGradLinear], steps: int, *, sit_out: bool = False, reset_delta_at: int = -1) -> SparseEntryAdam:
    """Random selections (the same for every run: one generator), ``steps`` optimizer steps."""
    opt = SparseEntryAdam(layers, lr=1e-2)
    gen = torch.Generator().manual_seed(3)
    n = layers[0].sg_delta.numel()
    for step in range(steps):
        for i, layer in enumerate(layers):
            idx, g = torch.randperm(n, generator=gen)[:K], torch.randn(K, generator=gen)
            if not (sit_out and (step + i) % 3 == 2):  # some layers sit out some steps: their counts lag
                layer.selected = (idx, g)
        if step == reset_delta_at:  # a delta set from outside (an adapter, a checkpoint): a new tensor
            layers[1].set_delta(torch.empty(0, dtype=torch.long), layers[1].sg_delta * 0.5)
        opt.step()
    return opt


@pytest.mark.parametrize("selection,standard_out", [("block", False), ("block", True), ("dynamic", False)])
@pytest.mark.parametrize("sit_out,reset_delta_at", [(False, -1), (True, -1), (False, 2)])
def test_stacked_step_equals_each_layers_own(orthogonal, monkeypatch, selection, standard_out, sit_out, reset_delta_at):
    monkeypatch.setattr(topk_batch, "BATCH_BYTES", 1)  # one layer per operation
    alone = _kind(orthogonal, selection, standard_out)
    opt_alone = _train(alone, 5, sit_out=sit_out, reset_delta_at=reset_delta_at)
    monkeypatch.undo()
    stacked = _kind(orthogonal, selection, standard_out)
    opt_stacked = _train(stacked, 5, sit_out=sit_out, reset_delta_at=reset_delta_at)
    if not sit_out:  # every layer stepped together: their deltas and moments are rows of one tensor each
        bases = {id(layer.sg_delta._base) for layer in stacked}
        assert len(bases) == 1 and None not in {layer.sg_delta._base for layer in stacked}
        assert len({id(opt_stacked.state[la.sg_anchor]["exp_avg"]._base) for la in stacked}) == 1
    assert all(layer.sg_delta._base is None for layer in alone)
    for a, s in zip(alone, stacked, strict=True):
        torch.testing.assert_close(s.sg_delta, a.sg_delta, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(s.weight, a.weight, rtol=1e-5, atol=1e-6)
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt_stacked.state[s.sg_anchor][name], opt_alone.state[a.sg_anchor][name])
    moved = [float((s.weight - w0).norm()) for s, w0 in zip(stacked, [la.weight for la in _kind(orthogonal, selection, standard_out)], strict=True)]
    assert min(moved) > 0  # every layer trained


def test_a_stacked_kind_is_limited_to_the_batch_bytes(orthogonal, monkeypatch):
    layers = _kind(orthogonal, "block", n=5)
    monkeypatch.setattr(topk_batch, "BATCH_BYTES", 2 * layers[0].pushback_bytes())  # two layers per operation
    _train(layers, 2)
    bases = [layer.sg_delta._base for layer in layers]
    assert bases[0] is bases[1] and bases[2] is bases[3] and bases[0] is not bases[2]
    assert bases[4] is None  # the last one alone


def test_resumed_optimizer_state_continues_a_stacked_run(orthogonal):
    """A checkpointed optimizer state (its rows saved as separate tensors) resumes exactly: the next step stacks it
    again."""
    whole = _kind(orthogonal, "block")
    _train(whole, 6)
    first = _kind(orthogonal, "block")
    opt = _train(first, 3)
    saved = {k: v for k, v in opt.state_dict().items()}
    saved = torch.load(_roundtrip(saved), weights_only=False)
    resumed = _kind(orthogonal, "block")
    for r, f in zip(resumed, first, strict=True):
        r.weight.copy_(f.weight)
        r.set_delta(torch.empty(0, dtype=torch.long), f.sg_delta.clone())
    opt2 = SparseEntryAdam(resumed, lr=1e-2)
    opt2.load_state_dict(saved)
    gen = torch.Generator().manual_seed(3)
    n = resumed[0].sg_delta.numel()
    for step in range(6):
        for layer in resumed:
            idx, g = torch.randperm(n, generator=gen)[:K], torch.randn(K, generator=gen)
            layer.selected = (idx, g) if step >= 3 else None
        if step >= 3:
            opt2.step()
    for r, w in zip(resumed, whole, strict=True):
        torch.testing.assert_close(r.sg_delta, w.sg_delta, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(r.weight, w.weight, rtol=1e-5, atol=1e-6)


def _roundtrip(obj: object):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_an_adapter_of_a_stacked_run_saves_and_loads(make_bert, make_cls_batch, tmp_path):
    """The deltas of a kind's layers are rows of one tensor: the adapter still saves each on its own."""
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(3)]
    cfg = SparseGradConfig(calibration_steps=3, density=0.05, selection="block")
    basis = calibrate(model, batches, cfg)
    apply_sparsegrad(model, basis, cfg)
    opt = build_optimizer(model, lr=1e-3)
    for b in batches:
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    layers = [m for m in model.modules() if isinstance(m, SparseGradLinear)]
    assert any(layer.sg_delta._base is not None for layer in layers)  # the step stacked them
    save_adapter(model, tmp_path / "adapter")
    fresh = make_bert(seed=0)
    load_adapter(fresh, tmp_path / "adapter")
    for name, layer in ((n, m) for n, m in model.named_modules() if isinstance(m, SparseGradLinear)):
        torch.testing.assert_close(fresh.get_submodule(name).merged_weight(), layer.merged_weight(), rtol=1e-5, atol=1e-6)


def test_the_stacked_layers_are_not_mixed_across_bases(orthogonal):
    """Layers of another kind (other bases) never join a stack, even with equal shapes."""
    a, b = _kind(orthogonal, "block", n=2), _kind(orthogonal, "block", n=2)
    b_in = b[0].u_in.clone()
    for layer in b:
        layer.u_in = b_in
    _train(a + b, 2)
    assert a[0].sg_delta._base is a[1].sg_delta._base is not None
    assert b[0].sg_delta._base is b[1].sg_delta._base is not None
    assert a[0].sg_delta._base is not b[0].sg_delta._base


@pytest.mark.parametrize("selection,sync_free,shape", [("block", False, (OUT, IN)), ("dynamic", True, (OUT, IN)),
                                                       ("dynamic", True, (IN, OUT))])
def test_sparse_pushback_equals_the_dense_one(orthogonal, monkeypatch, selection, sync_free, shape):
    """The update enters W through a sparse S (a standard-basis block on CPU; the exact method where zero rows are
    kept, as on CUDA, multiplying the larger basis sparsely); it must land where the dense S lands, in every layer,
    stacked or not."""
    monkeypatch.setattr(layer_module, "SPARSE_PUSHBACK_MIN_MACS", 0)  # these test shapes are tiny
    dense = _kind(orthogonal, selection, standard_out=True, shape=shape)
    sparse = _kind(orthogonal, selection, standard_out=True, shape=shape)
    for layer in dense + sparse:
        layer.sync_free = sync_free
    assert sparse[0].pushes_back_sparsely()
    start = [layer.weight.clone() for layer in sparse]
    with monkeypatch.context() as m:
        m.setattr(layer_module, "SPARSE_PUSHBACK_MAX_DENSITY", 0.0)  # the dense S
        assert not dense[0].pushes_back_sparsely()
        _train(dense, 5, sit_out=True)
    _train(sparse, 5, sit_out=True)
    for d, s, w0 in zip(dense, sparse, start, strict=True):
        torch.testing.assert_close(s.sg_delta, d.sg_delta)
        torch.testing.assert_close(s.weight, d.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s.weight - w0, s.delta_weight(), rtol=1e-4, atol=1e-6)
        assert float((s.weight - w0).norm()) > 0


def test_sparse_pushback_only_where_it_pays(orthogonal, monkeypatch):
    monkeypatch.setattr(layer_module, "SPARSE_PUSHBACK_MIN_MACS", 0)
    u_in = orthogonal(IN, 1)[:, :16].contiguous()

    def layer(k: int = K, u_out: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> SparseGradLinear:
        out = SparseGradLinear(torch.randn(OUT, IN, dtype=dtype), None, u_out, u_in, k, selection="block")
        out.sync_free = False
        return out

    assert layer().pushes_back_sparsely()
    assert not layer(k=int(0.2 * OUT * 16)).pushes_back_sparsely()  # S a fifth full: the dense product is faster
    assert not layer(u_out=orthogonal(OUT, 0)[:, :10].contiguous()).pushes_back_sparsely()  # rotated output side
    assert not layer(dtype=torch.bfloat16).pushes_back_sparsely()
    on_gpu_path = layer()
    on_gpu_path.sync_free = True  # where a step must not sync: dense (CSR on a GPU only for the exact method)
    assert not on_gpu_path.pushes_back_sparsely()
    exact = SparseGradLinear(torch.randn(OUT, IN), None, orthogonal(OUT, 0), orthogonal(IN, 1), K)
    exact.sync_free = True
    assert exact.pushes_back_sparsely()  # 30 of 960 entries
    exact.sync_free = False  # CPU: its own touched-rows/cols sparse product (add_rotated_delta), not stacked
    assert not exact.pushes_back_sparsely()
    monkeypatch.undo()
    assert not layer().pushes_back_sparsely()  # 24·16·40 multiply-adds: below the size where sparse pays


@pytest.mark.parametrize("shape", [(OUT, IN), (IN, OUT)])
def test_exact_sparse_pushback_into_bfloat16_weights(orthogonal, monkeypatch, shape):
    """bf16 weights (a LLaMA-style model on a GPU): the product is formed in float32 and added in the weight's
    dtype, as with the dense S."""
    def layers() -> list[SparseGradLinear]:
        out = _kind(orthogonal, "dynamic", shape=shape)
        for layer in out:  # small weights: bf16's rounding stays well below the update
            layer.weight = (layer.weight * 1e-2).to(torch.bfloat16)
        return out

    dense, sparse = layers(), layers()
    start = [layer.weight.float() for layer in sparse]
    assert sparse[0].pushes_back_sparsely()
    with monkeypatch.context() as m:
        m.setattr(layer_module, "SPARSE_PUSHBACK_MAX_DENSITY", 0.0)
        _train(dense, 3)
    _train(sparse, 3)
    for d, s, w0 in zip(dense, sparse, start, strict=True):
        assert s.weight.dtype == torch.bfloat16
        torch.testing.assert_close(s.weight.float(), d.weight.float(), rtol=2e-2, atol=1e-3)
        torch.testing.assert_close(s.weight.float() - w0, s.delta_weight(), rtol=2e-2, atol=1e-3)
        assert float(s.delta_weight().abs().max()) > 5e-3  # the update is well above the tolerance
