"""MeProp baseline: exactly k entries of the original-basis gradient, taken of the accumulated sum."""

import torch
from torch import nn

from sparsegrad_core import SparseGradConfig
from sparsegrad_core.methods import attach_meprop


def _layer_and_batches() -> tuple[nn.Sequential, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24))
    xs = [torch.randn(5, 16) for _ in range(2)]
    return model, xs


def _largest_k_kept(grad: torch.Tensor, k: int) -> torch.Tensor:
    """``grad`` with all but its ``k`` largest-magnitude entries zeroed, by a plain sort of the values."""
    flat = grad.flatten().tolist()
    kept = sorted(range(len(flat)), key=lambda i: abs(flat[i]), reverse=True)[:k]
    out = [0.0] * len(flat)
    for i in kept:
        out[i] = flat[i]
    return torch.tensor(out, dtype=grad.dtype).view_as(grad)


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
    expected = _largest_k_kept(dense[0].weight.grad, k)
    assert int((model[0].weight.grad != 0).sum()) == k
    torch.testing.assert_close(model[0].weight.grad, expected)
    # The bias is not sparsified.
    torch.testing.assert_close(model[0].bias.grad, dense[0].bias.grad)
