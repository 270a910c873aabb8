"""MeProp baseline: exactly k entries of the original-basis gradient, taken of the accumulated sum."""

import torch
from torch import nn

from sparsegrad_core import SparseGradConfig
from sparsegrad_core.methods import attach_meprop, sparsify_topk


def _layer_and_batches() -> tuple[nn.Sequential, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24))
    xs = [torch.randn(5, 16) for _ in range(2)]
    return model, xs


def test_meprop_keeps_exactly_k_of_the_summed_gradient() -> None:
    model, xs = _layer_and_batches()
    dense = nn.Sequential(nn.Linear(16, 24))
    dense.load_state_dict(model.state_dict())
    cfg = SparseGradConfig(density=0.05)
    hooks = attach_meprop({"0": model[0]}, cfg)
    k = cfg.k_for(24, 16)
    with hooks.accumulating():
        model(xs[0]).square().sum().backward()
    assert int((model[0].weight.grad != 0).sum()) > k  # still dense while accumulating
    model(xs[1]).square().sum().backward()
    for x in xs:
        dense(x).square().sum().backward()
    expected = sparsify_topk(dense[0].weight.grad, k)
    assert int((model[0].weight.grad != 0).sum()) == k
    torch.testing.assert_close(model[0].weight.grad, expected)
    # The bias is not sparsified.
    torch.testing.assert_close(model[0].bias.grad, dense[0].bias.grad)
