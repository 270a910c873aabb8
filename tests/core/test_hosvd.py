"""Calibration: never changes the model, and the streaming Gram HOSVD equals a naive stacked HOSVD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegrad_core import SparseGradConfig, apply_sparsegrad, build_optimizer, calibrate
from sparsegrad_core.targets import find_target_modules, projection_kind


def _naive_gradients(model: nn.Module, batches, names: list[str]) -> dict[str, list[torch.Tensor]]:
    """Per kind, every target gradient of every batch (ordinary backward, fresh grads each batch)."""
    model = model.train()
    out: dict[str, list[torch.Tensor]] = {}
    modules = dict(model.named_modules())
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for name in names:
            out.setdefault(projection_kind(name), []).append(
                modules[name].weight.grad.detach().double().clone()
            )
    model.zero_grad(set_to_none=True)
    return out


def _naive_hosvd(grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mode factors of the stacked tensor [N, out, in] from SVDs of its unfoldings (float64)."""
    t = torch.stack(grads)  # (N, out, in)
    n, out_f, in_f = t.shape
    unfold_out = t.permute(1, 0, 2).reshape(out_f, n * in_f)
    unfold_in = t.permute(2, 0, 1).reshape(in_f, n * out_f)
    u_out, s_out, _ = torch.linalg.svd(unfold_out, full_matrices=False)
    u_in, s_in, _ = torch.linalg.svd(unfold_in, full_matrices=False)
    return u_out, s_out, u_in, s_in


def _projector_checks(u_fast: torch.Tensor, u_naive: torch.Tensor, s: torch.Tensor) -> int:
    """Compare leading-subspace projectors at every r ≤ 6 where the spectrum has a clear gap."""
    lam = s.square()
    checked = 0
    for r in range(1, min(7, lam.numel())):
        gap = float((lam[r - 1] - lam[r]) / lam[0])
        if gap < 1e-2:
            continue
        a, b = u_fast[:, :r].double(), u_naive[:, :r]
        dist = float((a @ a.T - b @ b.T).abs().max())
        assert dist <= 1e-4, f"leading-{r} subspace differs by {dist:.2e}"
        checked += 1
    return checked


@pytest.fixture
def bert_and_batches(make_bert, make_cls_batch):
    model = make_bert(seed=0)
    batches = [make_cls_batch(seed=s) for s in range(5)]
    return model, batches


def test_calibrate_leaves_model_bit_identical(bert_and_batches):
    model, batches = bert_and_batches
    # a mix of frozen and trainable parameters, eval mode, and pre-existing gradients
    model.bert.embeddings.requires_grad_(False)
    model.bert.encoder.layer[0].output.dense.bias.requires_grad_(False)
    target_w = model.bert.encoder.layer[1].intermediate.dense.weight
    head_grad = torch.randn_like(model.classifier.weight)
    target_grad = torch.randn_like(target_w)
    model.classifier.weight.grad = head_grad
    target_w.grad = target_grad
    head_grad_values, target_grad_values = head_grad.clone(), target_grad.clone()  # taken before calibrating
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert not model.training

    calls = []
    basis = calibrate(
        model,
        batches,
        SparseGradConfig(calibration_steps=5),
        progress=lambda s, t, loss: calls.append((s, t, loss)),
    )

    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed during calibration"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        assert p.grad is grads[n], f"{n}.grad not restored"
    # the same tensors, holding the values they held before (calibration must not accumulate into them)
    assert torch.equal(model.classifier.weight.grad, head_grad_values)
    assert torch.equal(target_w.grad, target_grad_values)
    assert not model.training
    assert [c[:2] for c in calls] == [(i, 5) for i in range(1, 6)]
    assert basis.stats["steps"] == 5

    model.train()
    calibrate(model, batches[:2], SparseGradConfig(calibration_steps=2))
    assert model.training


def test_streaming_gram_matches_naive_stacked_hosvd(bert_and_batches, clone_model):
    model, batches = bert_and_batches
    reference = clone_model(model)
    cfg = SparseGradConfig(calibration_steps=len(batches))
    basis = calibrate(model, batches, cfg)

    names = list(find_target_modules(model))
    assert set(basis.layers) == set(names)
    naive = _naive_gradients(reference, batches, names)
    # one basis pair per kind, collected across all blocks
    assert set(basis.kinds) == {"intermediate.dense", "output.dense"} == set(naive)
    n_blocks = len(model.bert.encoder.layer)
    checked = 0
    for kind, kb in basis.kinds.items():
        assert kb.num_gradients == len(batches) * n_blocks == len(naive[kind])
        u_out, s_out, u_in, s_in = _naive_hosvd(naive[kind])
        out_f, in_f = naive[kind][0].shape
        assert kb.u_out.shape == (out_f, out_f) and kb.u_in.shape == (in_f, in_f)
        for u in (kb.u_out, kb.u_in):
            eye = torch.eye(u.shape[0])
            assert float((u.T @ u - eye).abs().max()) <= 1e-5
            assert float((u @ u.T - eye).abs().max()) <= 1e-5
        # eigenvalues = squared singular values of the unfoldings, descending, non-negative
        for eig, s in ((kb.eig_out, s_out), (kb.eig_in, s_in)):
            assert torch.all(eig[:-1] >= eig[1:]) and torch.all(eig >= 0)
            r = s.numel()
            torch.testing.assert_close(eig[:r], s.square(), rtol=1e-5, atol=1e-6 * float(s[0] ** 2))
        checked += _projector_checks(kb.u_out, u_out, s_out)
        checked += _projector_checks(kb.u_in, u_in, s_in)
    assert checked >= 4, "spectra had too few well-separated directions to compare"


def test_bases_pool_all_blocks(bert_and_batches, clone_model):
    """The basis of a kind is not the basis of any single block: removing a block's gradients changes it."""
    model, batches = bert_and_batches
    reference = clone_model(model)
    basis = calibrate(model, batches, SparseGradConfig(calibration_steps=len(batches)))
    names = list(find_target_modules(model))
    naive = _naive_gradients(reference, batches, names)
    grads = naive["intermediate.dense"]  # order: batch-major, block-minor
    only_block0 = grads[0::2]
    u_all = _naive_hosvd(grads)[0][:, :1]
    u_b0 = _naive_hosvd(only_block0)[0][:, :1]
    fast = basis.kinds["intermediate.dense"].u_out[:, :1].double()
    assert float((fast.T @ u_all).abs()) > 1 - 1e-6
    assert float((fast.T @ u_b0).abs()) < 1 - 1e-3


def test_fixed_selection_support_is_topk_calibration_energy(bert_and_batches, clone_model):
    model, batches = bert_and_batches
    reference = clone_model(model)
    cfg = SparseGradConfig(calibration_steps=len(batches), selection="fixed", density=0.05)
    basis = calibrate(model, batches, cfg)
    names = list(find_target_modules(model))
    modules = dict(reference.named_modules())
    energy: dict[str, torch.Tensor] = {}
    reference.train()
    for batch in batches:
        reference.zero_grad(set_to_none=True)
        reference(**batch).loss.backward()
        for name in names:
            kb = basis.kinds[projection_kind(name)]
            rot = kb.u_out.double().T @ modules[name].weight.grad.double() @ kb.u_in.double()
            energy[name] = energy.get(name, 0) + rot.square()
    for name in names:
        sup = basis.supports[name]
        out_f, in_f = energy[name].shape
        k = cfg.k_for(out_f, in_f)
        assert sup.numel() == k and torch.equal(sup, sup.sort().values) and torch.unique(sup).numel() == k
        e = energy[name].flatten()
        kth = torch.topk(e, k).values[-1]
        assert float(e[sup].min()) >= float(kth) * (1 - 1e-4)


def test_conv1d_gradients_use_linear_convention(make_gpt2, make_lm_batch):
    model = make_gpt2()
    basis = calibrate(model, [make_lm_batch(seed=s) for s in range(2)], SparseGradConfig(calibration_steps=2))
    assert set(basis.kinds) == {"mlp.c_fc", "mlp.c_proj"}
    assert basis.kinds["mlp.c_fc"].u_out.shape == (128, 128)  # out = n_inner = 4 * 32
    assert basis.kinds["mlp.c_fc"].u_in.shape == (32, 32)
    assert basis.kinds["mlp.c_proj"].u_out.shape == (32, 32)
    assert basis.kinds["mlp.c_proj"].u_in.shape == (128, 128)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 24)
        self.fc2 = nn.Linear(24, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _tiny_loss(model: nn.Module, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["y"])


def test_unknown_architecture_needs_target_modules():
    model = _TinyNet()
    batches = [{"x": torch.randn(8, 16), "y": torch.randint(0, 3, (8,))} for _ in range(3)]
    with pytest.raises(ValueError, match="target_modules"):
        calibrate(model, batches, SparseGradConfig(calibration_steps=3), loss_fn=_tiny_loss)

    cfg = SparseGradConfig(calibration_steps=3, target_modules=["fc1", "fc2"], density=0.05)
    basis = calibrate(model, batches, cfg, loss_fn=_tiny_loss)
    assert set(basis.layers) == {"blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"}
    assert set(basis.kinds) == {"fc1", "fc2"}
    assert basis.kinds["fc1"].num_gradients == 6
    # and the model trains afterwards
    apply_sparsegrad(model, basis, cfg)
    opt = build_optimizer(model, lr=1e-2)
    w_before = model.blocks[0].fc1.weight.clone()
    _tiny_loss(model, batches[0]).backward()
    opt.step()
    opt.zero_grad()
    assert not torch.equal(model.blocks[0].fc1.weight, w_before)


def test_calibrate_without_batches_raises(bert_and_batches):
    model, _ = bert_and_batches
    with pytest.raises(ValueError, match="no batches"):
        calibrate(model, [], SparseGradConfig(calibration_steps=2))
