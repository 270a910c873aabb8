"""sparsegrad_core: SparseGrad — selective sparse fine-tuning of transformer MLP blocks, in PyTorch.

>>> cfg = SparseGradConfig(density=0.01, calibration_steps=10)
>>> basis = calibrate(model, batches, cfg)      # backward passes only, never a step
>>> apply_sparsegrad(model, basis, cfg)          # MLP linears become SparseGradLinear
>>> opt = build_optimizer(model, lr=1e-4)        # sparse Adam on SG entries + AdamW elsewhere
"""

from .adapter import AdapterMismatchError, load_adapter, save_adapter
from .config import SparseGradConfig
from .hosvd import KindBasis, SparseGradBasis, calibrate
from .layer import SparseGradLinear
from .lora_export import LoraExportError, export_lora
from .model import (
    accumulating_gradients,
    apply_sparsegrad,
    count_trainable,
    energy_share,
    merge_adapter,
    sparsegrad_layers,
)
from .optim import CombinedOptimizer, SparseEntryAdam, build_optimizer, clip_grad_norm
from .targets import find_target_modules, projection_kind

__all__ = [
    "AdapterMismatchError",
    "CombinedOptimizer",
    "KindBasis",
    "LoraExportError",
    "SparseEntryAdam",
    "SparseGradBasis",
    "SparseGradConfig",
    "SparseGradLinear",
    "accumulating_gradients",
    "apply_sparsegrad",
    "build_optimizer",
    "calibrate",
    "clip_grad_norm",
    "count_trainable",
    "energy_share",
    "export_lora",
    "find_target_modules",
    "load_adapter",
    "merge_adapter",
    "projection_kind",
    "save_adapter",
    "sparsegrad_layers",
]

__version__ = "0.1.0"
