"""Training: the sparse Adam on rotated entries, the low-rank push-back, trainability, accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparsegrad_core import (
    CombinedOptimizer,
    SparseEntryAdam,
    SparseGradConfig,
    SparseGradLinear,
    accumulating_gradients,
    apply_sparsegrad,
    build_optimizer,
    calibrate,
    clip_grad_norm,
    count_trainable,
    sparsegrad_layers,
)

LR = 1e-2
BETAS = (0.9, 0.999)
EPS = 1e-8


def _sparse_adam(opt: CombinedOptimizer) -> SparseEntryAdam:
    found = [o for o in opt.optimizers if isinstance(o, SparseEntryAdam)]
    assert len(found) == 1
    return found[0]


@pytest.fixture
def sg_bert(make_bert, make_cls_batch):
    """A calibrated tiny BERT with SparseGrad applied; only the classifier is trained densely."""

    def make(selection: str = "dynamic", density: float = 0.02, freeze: bool = True):
        model = make_bert(seed=0)
        batches = [make_cls_batch(seed=s) for s in range(3)]
        cfg = SparseGradConfig(calibration_steps=3, density=density, selection=selection)
        basis = calibrate(model, batches, cfg)
        if freeze:
            model.requires_grad_(False)
            model.classifier.requires_grad_(True)
        w0 = {name: model.get_submodule(name).weight.detach().clone() for name in basis.layers}
        apply_sparsegrad(model, basis, cfg)
        return model.train(), w0, cfg

    return make


def test_merged_weight_is_base_plus_rotated_sparse_delta_and_adam_reference(
    sg_bert, make_cls_batch, scatter_dense, rel_err
):
    model, w0, _ = sg_bert()
    layers = dict(sparsegrad_layers(model))
    opt = build_optimizer(model, lr=LR, betas=BETAS, eps=EPS)
    sparse = _sparse_adam(opt)
    # reference lazy Adam over dense (out*in) float64 moments, one step counter per layer
    ref = {
        n: {
            "m": torch.zeros(la.out_features * la.in_features, dtype=torch.float64),
            "v": torch.zeros(la.out_features * la.in_features, dtype=torch.float64),
            "d": torch.zeros(la.out_features * la.in_features, dtype=torch.float64),
            "t": 0,
        }
        for n, la in layers.items()
    }
    steps = 4
    for step in range(steps):
        model(**make_cls_batch(seed=100 + step)).loss.backward()
        grads = {}
        for n, la in layers.items():
            assert la.selected is not None
            idx, g = la.selected
            grads[n] = (idx.clone(), g.detach().double().clone())
        opt.step()
        opt.zero_grad()
        for n, (idx, g) in grads.items():
            r = ref[n]
            r["t"] += 1
            b1, b2 = BETAS
            r["m"][idx] = b1 * r["m"][idx] + (1 - b1) * g
            r["v"][idx] = b2 * r["v"][idx] + (1 - b2) * g * g
            bc1, bc2 = 1 - b1 ** r["t"], 1 - b2 ** r["t"]
            r["d"][idx] += -LR / bc1 * r["m"][idx] / ((r["v"][idx] / bc2).sqrt() + EPS)
            if step == 0:
                # Adam's first step is -lr·sign(g) wherever |g| ≫ eps
                la = layers[n]
                strong = g.abs() > 1e-4 * float(g.abs().max())
                torch.testing.assert_close(
                    la.sg_delta[idx][strong].double(), -LR * torch.sign(g[strong]), rtol=0, atol=LR * 1e-3
                )

    for n, la in layers.items():
        out_f, in_f = la.out_features, la.in_features
        assert la.k == max(1, round(0.02 * out_f * in_f))
        # moments and delta: dense over the matrix, fixed shape; only the selected entries moved
        state = sparse.state[la.sg_anchor]
        assert state["exp_avg"].numel() == state["exp_avg_sq"].numel() == la.sg_delta.numel() == out_f * in_f
        assert la.sg_indices.numel() == 0
        n_touched = la.touched_entries()
        assert la.k <= n_touched <= steps * la.k < out_f * in_f
        assert int(state["step"]) == steps
        assert torch.equal(state["exp_avg"].ne(0), ref[n]["m"].ne(0))
        # ΔW̃ equals the reference lazy Adam
        d = scatter_dense(la.sg_indices, la.sg_delta, out_f, in_f)
        assert rel_err(d, ref[n]["d"].view(out_f, in_f)) <= 1e-5
        # W = W0 + u_out D u_inᵀ
        delta = la.u_out.double() @ d @ la.u_in.double().T
        expected = w0[n].double() + delta
        assert rel_err(la.merged_weight(), expected) <= 1e-5
        assert rel_err(la.merged_weight().double() - w0[n].double(), delta) <= 1e-4
        assert rel_err(la.delta_weight(), delta) <= 1e-5


def test_non_target_trainability_is_respected(make_bert, make_cls_batch):
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(2)]
    cfg = SparseGradConfig(calibration_steps=2, density=0.02)
    basis = calibrate(model, batches, cfg)
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    layer0 = model.bert.encoder.layer[0]
    trainable_ln = layer0.attention.output.LayerNorm
    trainable_ln.requires_grad_(True)
    frozen_bias = layer0.intermediate.dense.bias
    trainable_bias = layer0.output.dense.bias
    trainable_bias.requires_grad_(True)
    apply_sparsegrad(model, basis, cfg)
    assert layer0.output.dense.bias is trainable_bias and trainable_bias.requires_grad
    assert layer0.intermediate.dense.bias is frozen_bias and not frozen_bias.requires_grad

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if p.requires_grad and not n.endswith("sg_anchor")
    }
    assert "bert.encoder.layer.0.output.LayerNorm.weight" in frozen
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" in trained
    assert "bert.encoder.layer.0.output.dense.bias" in trained
    assert "bert.embeddings.word_embeddings.weight" in frozen

    model.train()
    opt = build_optimizer(model, lr=LR)
    for s in range(3):
        model(**make_cls_batch(seed=50 + s)).loss.backward()
        opt.step()
        opt.zero_grad()
    params = dict(model.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(params[n], before), f"frozen {n} changed"
    for n, before in trained.items():
        assert not torch.equal(params[n], before), f"trainable {n} did not change"
    for _, layer in sparsegrad_layers(model):
        assert layer.touched_entries() >= layer.k

    expected = (
        sum(p.numel() for p in model.classifier.parameters())
        + trainable_ln.weight.numel()
        + trainable_ln.bias.numel()
        + trainable_bias.numel()
        + sum(la.k for _, la in sparsegrad_layers(model))
    )
    assert count_trainable(model) == expected


@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_gradient_accumulation_is_exact(selection, sg_bert, make_cls_batch, sum_ce_loss):
    model, _, _ = sg_bert(selection=selection)
    layers = dict(sparsegrad_layers(model))
    a, b = make_cls_batch(seed=200), make_cls_batch(seed=201)
    both = {k: torch.cat([a[k], b[k]]) for k in a}

    with accumulating_gradients(model):
        sum_ce_loss(model, a).backward()
        for la in layers.values():
            assert la.selected is None, "selected inside an accumulation block"
            assert la.accumulating
    sum_ce_loss(model, b).backward()
    assert not any(la.accumulating for la in layers.values())
    accumulated = {n: la.selected for n, la in layers.items()}
    head_grad = model.classifier.weight.grad.clone()
    opt = build_optimizer(model, lr=LR)
    opt.zero_grad()
    assert all(la.selected is None for la in layers.values())

    sum_ce_loss(model, both).backward()
    for n, la in layers.items():
        idx_acc, val_acc = accumulated[n]
        idx, val = la.selected
        assert idx.numel() == la.k
        oa, o = torch.argsort(idx_acc), torch.argsort(idx)
        assert torch.equal(idx_acc[oa], idx[o]), f"{n}: accumulated top-k differs from the full batch"
        scale = float(val.abs().max())
        torch.testing.assert_close(val_acc[oa], val[o], rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(model.classifier.weight.grad, head_grad, rtol=1e-5, atol=1e-6)


def test_accumulation_differs_from_last_micro_batch_only(sg_bert, make_cls_batch, sum_ce_loss):
    """Guard against a no-op accumulation: the last micro-batch alone selects something else."""
    model, _, _ = sg_bert()
    layers = dict(sparsegrad_layers(model))
    a, b = make_cls_batch(seed=300), make_cls_batch(seed=301)
    with accumulating_gradients(model):
        sum_ce_loss(model, a).backward()
    sum_ce_loss(model, b).backward()
    acc = {n: la.selected for n, la in layers.items()}
    for la in layers.values():
        la.clear_step_state()
    sum_ce_loss(model, b).backward()
    differs = [
        not torch.equal(acc[n][0].sort().values, la.selected[0].sort().values) for n, la in layers.items()
    ]
    assert any(differs)


def test_clip_grad_norm_includes_sparse_selection(sg_bert, make_cls_batch):
    model, _, _ = sg_bert()
    model(**make_cls_batch(seed=7)).loss.backward()
    layers = [la for _, la in sparsegrad_layers(model)]
    dense_sq = sum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None)
    sparse_sq = sum(float(la.selected[1].double().square().sum()) for la in layers)
    total = float(clip_grad_norm(model, max_norm=1e9))
    assert total == pytest.approx(math.sqrt(dense_sq + sparse_sq), rel=1e-5)
    target = total / 4
    clip_grad_norm(model, max_norm=target)
    after = math.sqrt(
        sum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None)
        + sum(float(la.selected[1].double().square().sum()) for la in layers)
    )
    assert after == pytest.approx(target, rel=1e-4)


def test_clip_grad_norm_counts_gradients_of_every_dtype(sg_bert, make_cls_batch):
    """float32 gradients go through multi-tensor norms, others are summed one by one: both count."""
    model, _, _ = sg_bert()
    model(**make_cls_batch(seed=8)).loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grads[0].data = grads[0].data.to(torch.bfloat16)  # as a bf16 parameter's gradient would be
    layers = [la for _, la in sparsegrad_layers(model)]
    expected = math.sqrt(
        sum(float(g.double().square().sum()) for g in grads)
        + sum(float(la.selected[1].double().square().sum()) for la in layers)
    )
    assert float(clip_grad_norm(model, max_norm=1e9)) == pytest.approx(expected, rel=1e-5)


def test_lr_scale_and_state_dict(sg_bert, make_cls_batch):
    model, _, _ = sg_bert()
    opt = build_optimizer(model, lr=LR, sparse_lr=2 * LR)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs[-1] == pytest.approx(2 * LR) and lrs[0] == pytest.approx(LR)
    opt.set_lr_scale(0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([x / 2 for x in lrs])
    model(**make_cls_batch(seed=1)).loss.backward()
    opt.step()
    sd = opt.state_dict()
    assert len(sd["optimizers"]) == 2


def test_plain_model_gets_plain_adamw(make_bert):
    model = make_bert()
    opt = build_optimizer(model, lr=LR)
    assert len(opt.optimizers) == 1 and isinstance(opt.optimizers[0], torch.optim.AdamW)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(model, lr=LR)


def test_new_optimizer_on_already_trained_layers(sg_bert, make_cls_batch, scatter_dense, rel_err):
    """A second optimizer (resume, new LR phase, or after load_adapter) on layers that already hold a
    trained sparse delta must step: its moments start at zero for the already-touched entries, and the
    delta keeps accumulating on top of the existing one."""
    model, w0, _ = sg_bert()
    opt = build_optimizer(model, lr=LR)
    for s in range(2):
        model(**make_cls_batch(seed=400 + s)).loss.backward()
        opt.step()
        opt.zero_grad()
    before = {
        n: scatter_dense(la.sg_indices, la.sg_delta, la.out_features, la.in_features)
        for n, la in sparsegrad_layers(model)
    }
    opt2 = build_optimizer(model, lr=LR)
    model(**make_cls_batch(seed=402)).loss.backward()
    selected = {
        n: (la.selected[0].clone(), la.selected[1].double().clone()) for n, la in sparsegrad_layers(model)
    }
    opt2.step()
    opt2.zero_grad()
    sparse = _sparse_adam(opt2)
    for n, la in sparsegrad_layers(model):
        idx, g = selected[n]
        expected = before[n].flatten().clone()
        expected[idx] += -LR * g / (g.abs() + EPS)  # a fresh Adam's first step
        d = scatter_dense(la.sg_indices, la.sg_delta, la.out_features, la.in_features)
        assert rel_err(d.flatten(), expected) <= 1e-5
        state = sparse.state[la.sg_anchor]
        assert state["exp_avg"].numel() == la.sg_delta.numel()
        delta = la.u_out.double() @ d @ la.u_in.double().T
        assert rel_err(la.merged_weight(), w0[n].double() + delta) <= 1e-5


@pytest.mark.parametrize("capturable", [False, True])
def test_sparse_adam_matches_dense_lazy_adam_over_many_overlapping_steps(capturable, orthogonal, scatter_dense, rel_err):
    """Index sets that overlap, repeat, grow and shrink across 25 steps: the sparse Adam equals a float64
    lazy Adam reference, and its state keeps one shape throughout; with ``capturable`` (bias correction from the
    device-side step count) too."""
    from sparsegrad_core import SparseGradLinear

    out_f, in_f, k = 24, 40, 30
    w0 = torch.randn(out_f, in_f)
    layer = SparseGradLinear(w0.clone(), None, orthogonal(out_f, 1), orthogonal(in_f, 2), k)
    opt = SparseEntryAdam([layer], lr=LR, betas=BETAS, eps=EPS, capturable=capturable)
    n = out_f * in_f
    m = torch.zeros(n, dtype=torch.float64)
    v = torch.zeros(n, dtype=torch.float64)
    d = torch.zeros(n, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    pool = torch.randperm(n, generator=gen)[:90]  # a small pool, so sets overlap often
    touched: set[int] = set()
    for t in range(1, 26):
        idx = pool[torch.randperm(90, generator=gen)[:k]]
        if t % 5 == 0:
            idx = torch.randperm(n, generator=gen)[:k]  # occasionally entirely new entries
        g = torch.randn(k, generator=gen)
        layer.selected = (idx, g)
        opt.step()
        assert layer.selected is None
        b1, b2 = BETAS
        g64 = g.double()
        m[idx] = b1 * m[idx] + (1 - b1) * g64
        v[idx] = b2 * v[idx] + (1 - b2) * g64 * g64
        d[idx] += -LR / (1 - b1**t) * m[idx] / ((v[idx] / (1 - b2**t)).sqrt() + EPS)
        touched |= set(idx.tolist())
        assert set(layer.sg_delta.nonzero().squeeze(1).tolist()) == touched  # exactly the entries ever selected
        state = opt.state[layer.sg_anchor]
        assert state["exp_avg"].shape == state["exp_avg_sq"].shape == layer.sg_delta.shape == (n,)
        torch.testing.assert_close(state["exp_avg"].double(), m, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(state["exp_avg_sq"].double(), v, rtol=1e-5, atol=1e-9)
    assert rel_err(scatter_dense(layer.sg_indices, layer.sg_delta, 1, n)[0], d) <= 1e-5
    expected = w0.double() + layer.u_out.double() @ d.view(out_f, in_f) @ layer.u_in.double().T
    assert rel_err(layer.merged_weight(), expected) <= 1e-5
    opt.step()  # nothing selected: a no-op
    assert rel_err(layer.merged_weight(), expected) <= 1e-5


@pytest.mark.parametrize("capturable", [False, True])
def test_layers_at_different_step_counts_each_get_their_own_bias_correction(capturable, orthogonal, rel_err):
    """The step runs the moments' arithmetic for all layers at once (multi-tensor ops), grouped by step count: a
    layer that had nothing selected in a step (its count lags) still gets its own bias correction, also from the
    device-side counts (``capturable``)."""
    from sparsegrad_core import SparseGradLinear

    out_f, in_f, k = 12, 20, 15
    layers = [SparseGradLinear(torch.randn(out_f, in_f), None, orthogonal(out_f, i), orthogonal(in_f, 9 + i), k)
              for i in range(3)]
    opt = SparseEntryAdam(layers, lr=LR, betas=BETAS, eps=EPS, capturable=capturable)
    gen = torch.Generator().manual_seed(1)
    n = out_f * in_f
    ref = [{"m": torch.zeros(n, dtype=torch.float64), "v": torch.zeros(n, dtype=torch.float64),
            "d": torch.zeros(n, dtype=torch.float64), "t": 0} for _ in layers]
    b1, b2 = BETAS
    for step in range(6):
        for i, layer in enumerate(layers):
            if (step + i) % 3 == 2:  # each layer sits out some steps, a different one each time
                continue
            idx, g = torch.randperm(n, generator=gen)[:k], torch.randn(k, generator=gen)
            layer.selected = (idx, g)
            r, g64 = ref[i], g.double()
            r["t"] += 1
            r["m"][idx] = b1 * r["m"][idx] + (1 - b1) * g64
            r["v"][idx] = b2 * r["v"][idx] + (1 - b2) * g64 * g64
            r["d"][idx] += -LR / (1 - b1 ** r["t"]) * r["m"][idx] / ((r["v"][idx] / (1 - b2 ** r["t"])).sqrt() + EPS)
        opt.step()
    assert sorted(int(opt.state[la.sg_anchor]["step"]) for la in layers) == [4, 4, 4]
    if capturable:
        assert [float(opt.state[la.sg_anchor]["step_t"]) for la in layers] == [4.0, 4.0, 4.0]
    assert len({r["t"] for r in ref}) == 1  # equal counts at the end, unequal in between (steps 2-5)
    for layer, r in zip(layers, ref, strict=True):
        assert rel_err(layer.sg_delta.double(), r["d"]) <= 1e-5
        torch.testing.assert_close(opt.state[layer.sg_anchor]["exp_avg"].double(), r["m"], rtol=1e-5, atol=1e-7)


def _sync_free_mlp(orthogonal, selection: str, device: str = "cpu") -> nn.Module:
    """Two SparseGradLinear layers (32→96→32) on the sync-free path, biases trainable or frozen."""
    torch.manual_seed(0)
    layers = []
    for i, (o, n) in enumerate(((96, 32), (32, 96))):
        lin = nn.Linear(n, o)
        u_out, u_in = orthogonal(o, 2 * i), orthogonal(n, 2 * i + 1)
        k = 40
        support = None
        if selection == "block":
            u_out, u_in = u_out[:, :16].contiguous(), u_in[:, :12].contiguous()
        if selection == "fixed":
            support = torch.randperm(o * n)[:k]
        bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
        layer = SparseGradLinear(lin.weight.detach().clone(), bias, u_out, u_in, k, selection=selection, support=support)
        layer.sync_free = True
        layers.append(layer)
    return nn.Sequential(layers[0], nn.GELU(), layers[1]).to(device)


@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_training_step_has_no_host_synchronising_ops(selection, orthogonal, sync_ops):
    """Forward, backward (row handling, rotation, top-k) and the sparse Adam step, as the CUDA path runs them:
    no op with a data-dependent output size or a value read back. (Biases are frozen: torch's AdamW reads its
    CPU-resident step counters with ``item``.) The state keeps its shape from step to step."""
    model = _sync_free_mlp(orthogonal, selection)
    opt = build_optimizer(model, lr=1e-3)
    sparse = _sparse_adam(opt)
    assert [type(o).__name__ for o in opt.optimizers] == ["SparseEntryAdam"]
    x = torch.randn(4, 7, 32)
    x[:, 5:] = 0  # padding rows: the CPU path would find and drop them (nonzero)
    shapes = []
    for _ in range(3):  # the first step creates optimizer state; profile a later one
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        shapes.append([tuple(t.shape) for s in sparse.state.values() for t in s.values() if isinstance(t, torch.Tensor)])
    assert shapes[0] == shapes[-1]
    w_before = [layer.weight.clone() for layer in model if isinstance(layer, SparseGradLinear)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    names = {e.name for e in prof.events()}
    assert "aten::topk" in names or selection == "fixed", "the profile did not see the selection"
    assert not names & sync_ops, f"host-synchronising ops in a {selection} step: {sorted(names & sync_ops)}"
    for before, layer in zip(w_before, (m for m in model if isinstance(m, SparseGradLinear)), strict=True):
        assert not torch.equal(before, layer.weight), "the profiled step did not train"
    if selection == "dynamic":
        model[0].sync_free = None  # CPU default: zero rows looked for, the sparse push-back (both sync on CUDA)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(x).square().mean().backward()
            opt.step()
        assert {e.name for e in prof.events()} & sync_ops, "the test no longer sees the CPU path"


def test_a_capturable_optimizer_follows_the_schedule_in_place_and_counts_steps_on_the_device(orthogonal, rel_err):
    """The learning rate a captured step reads is a device tensor that the schedule changes in place (a replaced
    tensor would leave a graph at the rate it was captured with); training along a schedule gives what the
    host-side rate gives; a checkpoint's host step counts follow the device's (a replay counts on the device only)."""
    xs = [torch.randn(6, 32, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    scales = [0.2, 0.6, 1.0, 0.5, 0.1]
    runs = []
    for capturable in (False, True):
        model = _sync_free_mlp(orthogonal, "dynamic")
        opt = build_optimizer(model, lr=1e-2, capturable=capturable)
        (group,) = opt.param_groups
        rate = group["lr"]
        for x, scale in zip(xs, scales, strict=True):
            opt.set_lr_scale(scale)
            if capturable:
                assert group["lr"] is rate and float(rate) == pytest.approx(1e-2 * scale)
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
        runs.append((model, opt))
    (eager, _), (graphed, opt) = runs
    for a, b in zip(eager, graphed, strict=True):
        if isinstance(a, SparseGradLinear):
            assert rel_err(b.merged_weight(), a.merged_weight()) <= 1e-6
    (sparse,) = [o for o in opt.optimizers if isinstance(o, SparseEntryAdam)]
    for state in sparse.state.values():
        state["step_t"] += 2  # what two replays count, with no host code running
    steps = [s["step"] for s in sparse.state_dict()["state"].values()]
    assert steps == [len(xs) + 2] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_training_step_runs_under_cuda_sync_debug_mode_error(selection, orthogonal):
    model = _sync_free_mlp(orthogonal, selection, device="cuda")
    for layer in model:
        if isinstance(layer, SparseGradLinear):
            layer.sync_free = None  # the CUDA default
    opt = build_optimizer(model, lr=1e-3)
    x = torch.randn(8, 32, device="cuda")
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("selection", ["dynamic", "fixed", "block"])
def test_a_training_step_captured_in_a_cuda_graph_replays_as_eager_steps(selection, orthogonal, rel_err):
    """Forward, backward and the capturable sparse Adam step captured once in a CUDA graph: replaying it on new
    inputs lands every weight where the same steps run eagerly do (bias correction included)."""
    from sparsegrad_core import SparseGradLinear

    xs = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)).cuda() for i in range(6)]
    models = [_sync_free_mlp(orthogonal, selection, device="cuda") for _ in range(2)]
    for model in models:
        for layer in model:
            if isinstance(layer, SparseGradLinear):
                layer.sync_free = None  # the CUDA default
    eager, graphed = models
    opt = build_optimizer(eager, lr=1e-3)
    for x in xs:
        eager(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    gopt = build_optimizer(graphed, lr=1e-3, capturable=True)
    static_x = xs[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the first step runs eagerly: the state exists before the capture
        graphed(static_x).square().mean().backward()
        gopt.step()
        gopt.zero_grad()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed(static_x).square().mean().backward()
        gopt.step()
    for x in xs[1:]:
        static_x.copy_(x)
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(eager, graphed, strict=True):
        if isinstance(a, SparseGradLinear):
            assert rel_err(b.merged_weight(), a.merged_weight()) <= 1e-5
            assert rel_err(b.sg_delta, a.sg_delta) <= 1e-4
