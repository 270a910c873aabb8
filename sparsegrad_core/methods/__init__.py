"""Training methods compared in one loop: SparseGrad, LoRA (peft), MeProp, full fine-tuning.

Two settings, as in the paper's experiments:

* ``paper``: every non-MLP parameter (embeddings, attention, LayerNorms, head) trains densely with
  AdamW; the method only decides how the MLP projections train.
* ``peft``: PEFT-pure — only the task head (``classifier``/``score``/``pooler``) trains besides the
  method's own parameters.

``frozen_mlp`` is the physical lower bound: the same model with the MLP weights simply frozen.

Each method is a :class:`TrainingMethod` in its own module; adding one means writing that module and
registering it below. The job contract's ``MethodType`` names the methods a job can ask for (a test checks
that each is registered here).
"""

from .base import (
    HEAD_PREFIXES,
    SETTINGS,
    Attached,
    CalibrationInputs,
    MethodSpec,
    PreparedModel,
    TrainingMethod,
    get_method,
    is_head_param,
    method_names,
    prepare_model,
    register_method,
    registered_methods,
    unregister_method,
)
from .full import FROZEN_MLP, FrozenMLP, FullMethod
from .lora import LoraMethod, LoraOptions, equal_param_lora_rank
from .meprop import MePropHooks, MePropMethod, attach_meprop, sparsify_topk
from .sparsegrad import SparseGradMethod, lora_export_dir

for _method in (SparseGradMethod, LoraMethod, MePropMethod, FullMethod, FrozenMLP):
    register_method(_method)

__all__ = [
    "FROZEN_MLP",
    "HEAD_PREFIXES",
    "SETTINGS",
    "Attached",
    "CalibrationInputs",
    "FrozenMLP",
    "FullMethod",
    "LoraMethod",
    "LoraOptions",
    "MePropHooks",
    "MePropMethod",
    "MethodSpec",
    "PreparedModel",
    "SparseGradMethod",
    "TrainingMethod",
    "attach_meprop",
    "equal_param_lora_rank",
    "get_method",
    "is_head_param",
    "lora_export_dir",
    "method_names",
    "prepare_model",
    "register_method",
    "registered_methods",
    "sparsify_topk",
    "unregister_method",
]
