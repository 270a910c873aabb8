"""``train_one(run)``: one run in this process, through the recipe every caller runs (``sparsegrad_core.recipe.finetune``).

Load the base model (the head seeded by the run's seed), tokenize, install the method (SparseGrad
calibrates here), train for exactly ``run.steps`` optimizer steps at a constant learning rate,
evaluate once at the end. Nothing is written to disk (no checkpoints, no export): the returned row is
the result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.recipe import finetune
from sparsegrad_core.training import TrainingArguments

from quality_data import run_datasets  # isort: skip  (bench/quality is on sys.path)
from quality_plan import SPARSEGRAD_SELECTIONS, hyperparameters  # isort: skip


def method_spec(method: str, setting: str, density: float, calibration_steps: int) -> MethodSpec:
    """The library's spec for a benchmark method name (LoRA: equal trainable parameters; MeProp: equal k)."""
    kind = "sparsegrad" if method in SPARSEGRAD_SELECTIONS else method
    sg = SparseGradConfig(density=density, calibration_steps=calibration_steps,
                          selection=SPARSEGRAD_SELECTIONS.get(method, "dynamic"))  # type: ignore[arg-type]
    return MethodSpec(type=kind, setting=setting, sparsegrad=sg)  # type: ignore[arg-type]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def train_one(run: Any, *, data_dir: Path | None = None, chat_source: str | None = None,
              workdir: Path = Path("bench/results/quality/data")) -> dict[str, Any]:
    """Train ``run`` and return its result: eval metrics, trainable parameters, times."""
    _quiet_transformers()
    t0 = time.perf_counter()
    train_ds, eval_ds = run_datasets(run, data_dir, chat_source, workdir)
    spec = method_spec(run.method, run.setting, run.density, run.calibration_steps)
    args = TrainingArguments(**hyperparameters(run), seed=run.seed, eval_before=False, save_final=False,
                             log_every=max(1, run.steps))
    trained = finetune(run.model, train_ds, eval_ds, spec, args, run_info={"model": run.model})
    prepared, result, train_data = trained.prepared, trained.result, trained.train_data
    summary = result.summary
    losses = result.losses
    return {
        "metrics": dict(result.final_eval or {}),
        "trainable_params": prepared.trainable_params,
        "total_params": summary.get("total_params"),
        "lora_rank": prepared.lora_rank,
        "train_examples": len(train_data), "eval_examples": len(eval_ds),
        "steps_done": result.global_step,
        "train_time_s": round(result.train_time_s, 2),
        "s_per_step": round(result.train_time_s / max(1, result.global_step), 4),
        "calibration_time_s": summary.get("calibration_time_s"),
        "first_loss": losses[0] if losses else None,
        "last_loss": float(sum(losses[-10:]) / len(losses[-10:])) if losses else None,
        "wall_s": round(time.perf_counter() - t0, 2),
        "mode": "inprocess", "torch_threads": torch.get_num_threads(),
    }
