"""GaLore (Zhao et al. 2024) through the ``galore-torch`` package, as a benchmark method.

The MLP matrices train densely as full-rank weights whose Adam moments live in a rank-``r`` projection
(``GaLoreAdamW``, the projection refreshed every ``update_proj_gap`` steps, updates scaled by ``scale``); in the
``paper`` setting every other parameter trains with plain AdamW (the same optimizer, no projection), in the
``peft`` setting only the task head does. Options come from the protocol file (``galore``).

The library's trainer builds SparseGrad's/AdamW's optimizer itself, so :func:`finetune_galore` runs the same
steps as ``sparsegrad_core.recipe.finetune`` and swaps in GaLore's optimizer before training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from sparsegrad_core.loading import load_base_model
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.methods.base import (
    Attached,
    CalibrationInputs,
    TrainingMethod,
    get_method,
    register_method,
)
from sparsegrad_core.optim import CombinedOptimizer
from sparsegrad_core.recipe import FinetuneRun
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import Trainer, TrainerCallback, TrainingArguments, prepare_for_training
from sparsegrad_data import Dataset

NAME = "galore"


class GaLoreMethod(TrainingMethod):
    """MLP weights train densely (GaLore's projected Adam); the rest per setting, like the other methods."""

    name: ClassVar[str] = NAME
    trains_target_weights = True

    def attach(self, model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module],
               calibration: CalibrationInputs) -> Attached:
        return Attached(model, state={"targets": list(targets)})


def ensure_registered() -> None:
    try:
        get_method(NAME)
    except (KeyError, ValueError):
        register_method(GaLoreMethod)


def galore_optimizer(model: nn.Module, targets: Sequence[str], args: TrainingArguments,
                     options: Mapping[str, Any]) -> CombinedOptimizer:
    """``GaLoreAdamW``: projected moments for the MLP weights, AdamW groups (decay / no decay) for the rest."""
    from galore_torch import GaLoreAdamW

    modules = dict(model.named_modules())
    low_rank = [modules[t].weight for t in targets]
    ids = {id(p) for p in low_rank}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in ids:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups: list[dict[str, Any]] = [
        {"params": low_rank, "weight_decay": args.weight_decay, "rank": int(options["rank"]),
         "update_proj_gap": int(options["update_proj_gap"]), "scale": float(options["scale"]),
         "proj_type": str(options.get("proj_type", "std"))},
        {"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
    ]
    return CombinedOptimizer([GaLoreAdamW([g for g in groups if g["params"]], lr=args.learning_rate,
                                          no_deprecation_warning=True)])


def finetune_galore(model_source: str, train: Dataset, eval_data: Dataset | None, spec: MethodSpec,
                    args: TrainingArguments, options: Mapping[str, Any], *,
                    callbacks: Sequence[TrainerCallback] = ()) -> FinetuneRun:
    """``recipe.finetune`` with GaLore's optimizer (no resume, no export: the benchmark needs neither)."""
    ensure_registered()
    torch.manual_seed(args.seed)  # the task head's initialization, as finetune seeds it
    model, tokenizer = load_base_model(model_source, train.task, num_labels=train.num_labels,
                                       label_names=train.label_names)
    train_tokens = tokenize_dataset(train, tokenizer, args.max_seq_length)
    eval_tokens = None if eval_data is None else tokenize_dataset(eval_data, tokenizer, args.max_seq_length)
    prepared = prepare_for_training(model, spec, train_tokens, batch_size=args.batch_size, seed=args.seed,
                                    callbacks=callbacks)
    for cb in callbacks:
        cb.on_prepared(prepared)
    trainer = Trainer(prepared, train_tokens, eval_tokens, tokenizer, args, list(callbacks))
    trainer.optimizer = galore_optimizer(prepared.model, prepared.targets, args, options)
    prepared.state["optimizer"] = trainer.optimizer.optimizers[0]  # the GaLoreAdamW, for inspection
    return FinetuneRun(prepared, tokenizer, train_tokens, eval_tokens, trainer.train())
