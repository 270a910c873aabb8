"""MeProp baseline as the paper ran it: top-k of |G| in the original basis, the same k as SparseGrad
(``MethodSpec.sparsegrad.density``), dense AdamW. Exports the whole model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sparsegrad_contract.defaults import MethodType

from ..config import SparseGradConfig
from ..targets import linear_shape, module_weight
from .base import Attached, CalibrationInputs, MethodSpec, PreparedModel, TrainingMethod


def sparsify_topk(grad: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest-magnitude entries of ``grad``; zero the rest."""
    flat = grad.reshape(-1)
    idx = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[idx] = flat[idx]
    return out.view_as(grad)


@dataclass
class MePropHooks:
    """The gradient hooks MeProp installed: ``k`` per target module name, and whether they wait (accumulation)."""

    k: dict[str, int] = field(default_factory=dict)
    handles: list[Any] = field(default_factory=list)
    waiting: bool = False

    @contextlib.contextmanager
    def accumulating(self, active: bool = True) -> Iterator[None]:
        """Inside, the hooks leave ``.grad`` dense; the first backward outside sparsifies the accumulated sum."""
        self.waiting = active
        try:
            yield
        finally:
            self.waiting = False

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def attach_meprop(targets: Mapping[str, nn.Module], cfg: SparseGradConfig) -> MePropHooks:
    """Make every target weight's accumulated gradient keep only its top-k entries.

    The hook runs after the gradient is accumulated into ``.grad``; inside ``hooks.accumulating()`` it waits,
    so with accumulation the top-k is taken of the sum.
    """
    hooks = MePropHooks()
    for name, module in targets.items():
        assert isinstance(module, nn.Linear | Conv1D)
        out_f, in_f = linear_shape(module)
        k = cfg.k_for(out_f, in_f)

        def hook(p: torch.Tensor, k: int = k) -> None:
            if p.grad is not None and not hooks.waiting:
                p.grad.copy_(sparsify_topk(p.grad, k))

        hooks.handles.append(module_weight(module).register_post_accumulate_grad_hook(hook))
        hooks.k[name] = k
    return hooks


class MePropMethod(TrainingMethod):
    name: ClassVar[str] = MethodType.meprop.value
    trains_target_weights = True

    def trains_in_peft_setting(self, name: str, param: nn.Parameter, targets: Mapping[str, nn.Module]) -> bool:
        """The head, and the MLP biases (they belong to the method)."""
        target_biases = {id(m.bias) for m in targets.values() if getattr(m, "bias", None) is not None}
        return super().trains_in_peft_setting(name, param, targets) or id(param) in target_biases

    def attach(
        self, model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module], calibration: CalibrationInputs
    ) -> Attached:
        return Attached(model, state=attach_meprop(targets, spec.sparsegrad))

    def accumulating(self, prepared: PreparedModel, active: bool) -> contextlib.AbstractContextManager[None]:
        hooks: MePropHooks = prepared.state
        return hooks.accumulating(active)
