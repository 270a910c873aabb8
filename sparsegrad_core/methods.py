"""Training methods compared in one loop: SparseGrad, LoRA (peft), MeProp, full fine-tuning.

Two settings, as in the paper's experiments:

* ``paper``: every non-MLP parameter (embeddings, attention, LayerNorms, head) trains densely with
  AdamW; the method only decides how the MLP projections train.
* ``peft``: PEFT-pure — only the task head (``classifier``/``score``/``pooler``) trains besides the
  method's own parameters.

``frozen_mlp`` is the physical lower bound: the same model with the MLP weights simply frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparsegrad_contract import defaults
from sparsegrad_contract.defaults import MethodType, Setting

from .config import SparseGradConfig
from .hosvd import ProgressFn, SparseGradBasis, calibrate
from .model import apply_sparsegrad, count_trainable
from .targets import find_target_modules, linear_shape

FROZEN_MLP = "frozen_mlp"
"""The lower bound the benchmarks compare against (MLP weights frozen); not a method a job can ask for."""
METHODS: tuple[str, ...] = (*(m.value for m in MethodType), FROZEN_MLP)
SETTINGS: tuple[str, ...] = tuple(s.value for s in Setting)
HEAD_PREFIXES = ("classifier", "score", "pooler", "qa_outputs")


@dataclass
class MethodSpec:
    """Which method trains the MLP projections, and what else trains."""

    type: str = defaults.DEFAULT_METHOD.value
    setting: str = defaults.DEFAULT_SETTING.value
    sparsegrad: SparseGradConfig = field(default_factory=SparseGradConfig)
    lora_rank: int | None = None
    """None: the rank giving the same trainable MLP parameters as SparseGrad at ``sparsegrad.density``."""
    lora_alpha: float | None = None
    """None: ``2 * rank``."""
    lora_dropout: float = defaults.LORA_DROPOUT

    def __post_init__(self) -> None:
        if self.type not in METHODS:
            raise ValueError(f"method type must be one of {', '.join(METHODS)}; got {self.type!r}")
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}; got {self.setting!r}")
        self.type, self.setting = str(self.type), str(self.setting)  # plain strings, also when given as enums
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1; got {self.lora_rank}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1); got {self.lora_dropout}")
        if isinstance(self.sparsegrad, dict):
            self.sparsegrad = SparseGradConfig.from_dict(self.sparsegrad)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type, "setting": self.setting, "sparsegrad": self.sparsegrad.to_dict(),
            "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
        }


@dataclass
class PreparedModel:
    """A model ready for the training loop, and what the preparation found."""

    model: nn.Module
    spec: MethodSpec
    targets: list[str]
    trainable_params: int
    basis: SparseGradBasis | None = None
    lora_rank: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def is_head_param(name: str) -> bool:
    parts = name.split(".")
    return any(p in HEAD_PREFIXES for p in parts[:2])


def equal_param_lora_rank(targets: Mapping[str, nn.Module], density: float) -> int:
    """LoRA rank with the trainable parameters of SparseGrad at ``density``: ``r ≈ Σk / Σ(in+out)``."""
    cfg = SparseGradConfig(density=density)
    k_total = sum(cfg.k_for(*linear_shape(m)) for m in targets.values())
    io_total = sum(sum(linear_shape(m)) for m in targets.values())
    return max(1, round(k_total / io_total))


def _set_trainability(model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module]) -> None:
    target_weights = {id(m.weight) for m in targets.values()}
    target_biases = {id(m.bias) for m in targets.values() if getattr(m, "bias", None) is not None}
    for name, p in model.named_parameters():
        if spec.type == "full":
            p.requires_grad_(True)
        elif id(p) in target_weights:
            p.requires_grad_(spec.type == "meprop")
        elif spec.setting == "paper":
            p.requires_grad_(True)
        else:  # peft-pure: the head, plus (for meprop) the MLP biases that belong to the method
            p.requires_grad_(is_head_param(name) or (spec.type == "meprop" and id(p) in target_biases))


def prepare_model(
    model: nn.Module,
    spec: MethodSpec,
    calibration_batches: Iterable[Mapping[str, Any]] | None = None,
    *,
    progress: ProgressFn | None = None,
    loss_fn: Callable[[nn.Module, Mapping[str, Any]], torch.Tensor] | None = None,
    basis: SparseGradBasis | None = None,
) -> PreparedModel:
    """Set trainability for ``spec.setting`` and install the method on the MLP projections.

    SparseGrad calibrates on ``calibration_batches`` unless a ``basis`` from an earlier calibration
    (e.g. a checkpoint being resumed) is given.
    """
    sg = spec.sparsegrad
    targets = find_target_modules(model, sg.target_modules, layer_stride=sg.layer_stride, projections=sg.projections)
    _set_trainability(model, spec, targets)
    rank = None
    info: dict[str, Any] = {}
    if spec.type == "sparsegrad":
        if basis is None:
            if calibration_batches is None:
                raise ValueError("SparseGrad needs calibration batches or a basis")
            basis = calibrate(model, calibration_batches, sg, progress=progress, loss_fn=loss_fn)
        apply_sparsegrad(model, basis, sg)
        info["calibration"] = basis.stats
    elif spec.type == "meprop":
        from .meprop import attach_meprop

        attach_meprop(targets, sg)
    elif spec.type == "lora":
        model, rank = _attach_lora(model, spec, targets)
    return PreparedModel(
        model=model, spec=spec, targets=list(targets), trainable_params=count_trainable(model),
        basis=basis, lora_rank=rank, info=info,
    )


def _attach_lora(model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module]) -> tuple[nn.Module, int]:
    from peft import LoraConfig, inject_adapter_in_model

    rank = spec.lora_rank or equal_param_lora_rank(targets, spec.sparsegrad.density)
    alpha = spec.lora_alpha if spec.lora_alpha is not None else 2.0 * rank
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    config = LoraConfig(
        r=rank, lora_alpha=alpha,  # type: ignore[arg-type]  # peft accepts float scaling
        lora_dropout=spec.lora_dropout, target_modules=list(targets), bias="none",
    )
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
        else:
            # peft renames "x.weight" to "x.base_layer.weight"; keep the flag chosen before injection.
            p.requires_grad_(flags.get(name.replace(".base_layer.", "."), False))
    model._sparsegrad_lora_config = config  # type: ignore[assignment]
    return model, rank
