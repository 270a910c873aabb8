"""Gradient checkpointing for training runs: keep only each transformer block's input in the forward and
recompute the block's activations in the backward (less activation memory for ~30% more compute).

It uses the model's own Hugging Face switch with *non-reentrant* ``torch.utils.checkpoint``, which replays a
block's forward under saved-tensor hooks: custom autograd Functions (``SparseGradLinear``'s) save and read
their tensors as usual and run their backward once, dropout masks are replayed from the saved RNG state, and
frozen inputs need no ``requires_grad``. Checkpointing acts only in training mode with gradients on, so
evaluation and export are unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

FIELD = "gradient_checkpointing"
"""The :class:`~sparsegrad_core.training.TrainingArguments` field (and job hyperparameter) errors name."""
NON_REENTRANT = {"use_reentrant": False}
"""Keyword arguments of ``torch.utils.checkpoint.checkpoint``."""


class GradientCheckpointingUnsupported(ValueError):
    """``gradient_checkpointing`` was asked for a model that has no Hugging Face checkpointing switch."""


def is_gradient_checkpointing(model: nn.Module) -> bool:
    """Whether checkpointing is switched on in any of the model's blocks (any transformers version)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Switch non-reentrant gradient checkpointing on for a Hugging Face model, in place (idempotent).

    Raises :class:`GradientCheckpointingUnsupported` (a ``ValueError`` naming the field) when the model
    does not support it: ``supports_gradient_checkpointing`` is False or it has no enable method.
    """
    if is_gradient_checkpointing(model):
        return
    # transformers >= 5 renamed the switch (the old name still works there, with a FutureWarning).
    new_style = getattr(model, "activation_checkpointing_enable", None)
    old_style = getattr(model, "gradient_checkpointing_enable", None)
    if not getattr(model, "supports_gradient_checkpointing", False) or (
        new_style is None and old_style is None
    ):
        raise GradientCheckpointingUnsupported(
            f"{FIELD}: {type(model).__name__} does not support gradient checkpointing; "
            f"train it with {FIELD} off"
        )
    if new_style is not None:
        new_style(activation_checkpointing_kwargs=dict(NON_REENTRANT))
    else:
        assert old_style is not None
        old_style(gradient_checkpointing_kwargs=dict(NON_REENTRANT))


@contextlib.contextmanager
def cache_disabled(model: nn.Module, active: bool = True) -> Iterator[None]:
    """Within this block (when ``active``) the model's ``config.use_cache`` is False, restored after.

    Decoders otherwise build a KV cache in every training forward, which checkpointed blocks must refuse
    (LLaMA warns and drops it); the exported config keeps the caller's value, so generation still caches.
    """
    config = getattr(model, "config", None)
    if not active or config is None or not getattr(config, "use_cache", False):
        yield
        return
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = True
