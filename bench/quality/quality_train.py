"""``train_one(run)``: one run in this process, through the recipe every caller runs (``sparsegrad_core.recipe.finetune``).

Load the base model (the head seeded by the run's seed), tokenize, install the method (SparseGrad
calibrates here), train for exactly ``run.steps`` optimizer steps at a constant learning rate,
evaluate once at the end. Nothing is written to disk (no checkpoints, no export): the returned row is
the result.

Protocol 2 (``run.protocol >= 2``): the library's linear warmup/decay schedule, clipping, weight decay and
``eval_every`` evaluations on the selection split; :class:`BestSelection` keeps the best selection score's
trainable tensors in memory (``trainable_state``), stops after ``patience`` evaluations without improvement,
and restores them; the dev set is then evaluated once (cheaper than a dev evaluation at every step).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import MethodSpec
from sparsegrad_core.recipe import finetune
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import PeriodicRelease, TrainerCallback, TrainingArguments
from sparsegrad_core.training.checkpoint import restore_trainable_state, trainable_state
from sparsegrad_core.training.evaluation import evaluate
from sparsegrad_service.allocator import process_allocator

from quality_data import protocol_datasets, run_datasets  # isort: skip  (bench/quality is on sys.path)
import galore_method  # isort: skip
from quality_plan import SPARSEGRAD_VARIANTS, hyperparameters, protocol, task_score  # isort: skip


class BestSelection(TrainerCallback):
    """Early stopping on the protocol's selection score and the best weights, kept in memory."""

    def __init__(self, task: str, patience: int | None) -> None:
        self.task, self.patience = task, patience
        self.model: Any = None
        self.best: tuple[float, int, dict[str, float], dict[str, torch.Tensor]] | None = None
        self.since_best = 0
        self.evals: list[tuple[int, float]] = []

    def on_prepared(self, prepared: Any) -> None:
        self.model = prepared.model

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        score = task_score(self.task, metrics)
        self.evals.append((step, score))
        if score == score and (self.best is None or score > self.best[0]):  # NaN never improves
            self.best = (score, step, dict(metrics), trainable_state(self.model))
            self.since_best = 0
        else:
            self.since_best += 1
        best = "none yet" if self.best is None else f"best {self.best[0]:.4f} at step {self.best[1]}"
        print(f"    step {step}: selection {score:.4f} ({best}; {self.since_best} without improvement)", flush=True)

    def should_stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def restore(self) -> None:
        if self.best is not None:
            restore_trainable_state(self.model, self.best[3])


def method_spec(method: str, setting: str, density: float, calibration_steps: int) -> MethodSpec:
    """The library's spec for a benchmark method name (LoRA: equal trainable parameters; MeProp: equal k)."""
    kind = "sparsegrad" if method in SPARSEGRAD_VARIANTS else method
    sg = SparseGradConfig(density=density, calibration_steps=calibration_steps,
                          **SPARSEGRAD_VARIANTS.get(method, {}))
    return MethodSpec(type=kind, setting=setting, sparsegrad=sg)  # type: ignore[arg-type]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def train_one(run: Any, *, data_dir: Path | None = None, chat_source: str | None = None,
              workdir: Path = Path("bench/results/quality/data")) -> dict[str, Any]:
    """Train ``run`` and return its result: eval metrics, trainable parameters, times."""
    _quiet_transformers()
    if getattr(run, "protocol", 1) >= 2:
        return _train_v2(run, data_dir=data_dir, chat_source=chat_source, workdir=workdir)
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
        **_machine(),
    }


def _machine() -> dict[str, Any]:
    """Where a run trained: in this process, with these torch threads, on this CPU model (the runs of one protocol
    may come from different machines; ``cpu`` is None where ``/proc/cpuinfo`` does not name it), with this allocator
    (jemalloc when the process was started with it preloaded: the same results, faster steps)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    return {"mode": "inprocess", "torch_threads": torch.get_num_threads(), "cpu": cpu, "allocator": process_allocator()}


def _train_v2(run: Any, *, data_dir: Path | None, chat_source: str | None, workdir: Path) -> dict[str, Any]:
    """Protocol 2: train on train minus the selection split, stop early, restore the best, evaluate dev once."""
    t0 = time.perf_counter()
    train_ds, sel_ds, dev_ds = protocol_datasets(run, data_dir, chat_source, workdir)
    if run.method == "galore":
        galore_method.ensure_registered()
    spec = method_spec(run.method, run.setting, run.density, run.calibration_steps)
    args = TrainingArguments(**hyperparameters(run), seed=run.seed, eval_before=False, save_final=False)
    best = BestSelection(run.task, run.patience)
    # As training workers do: the allocator's kept pages go back every few steps, when the process has grown past
    # a bound, and after each evaluation (so every step's event is delivered: log_every 1).
    callbacks = [best, PeriodicRelease()]
    if run.method == "galore":
        trained = galore_method.finetune_galore(run.model, train_ds, sel_ds, spec, args, protocol(run.protocol)["galore"],
                                                callbacks=callbacks)
    else:
        trained = finetune(run.model, train_ds, sel_ds, spec, args, callbacks=callbacks, run_info={"model": run.model})
    prepared, result = trained.prepared, trained.result
    best.restore()
    dev_tokens = tokenize_dataset(dev_ds, trained.tokenizer, run.max_seq_length)
    dev = evaluate(prepared.model, dev_tokens, args.per_step_eval_batch_size)
    losses = result.losses
    return {
        "metrics": dev,
        "selection_metrics": None if best.best is None else best.best[2],
        "best_step": None if best.best is None else best.best[1],
        "diverged": best.best is None,
        "selection_curve": best.evals,
        "early_stopped": best.should_stop(),
        "trainable_params": prepared.trainable_params,
        "lora_rank": prepared.lora_rank,
        "train_examples": len(train_ds), "selection_examples": len(sel_ds), "eval_examples": len(dev_ds),
        "steps_done": result.global_step,
        "train_time_s": round(result.train_time_s, 2),
        "s_per_step": round(result.train_time_s / max(1, result.global_step), 4),
        "calibration_time_s": (prepared.info.get("calibration") or {}).get("seconds"),  # also when stopped early
        "first_loss": losses[0] if losses else None,
        "last_loss": float(sum(losses[-10:]) / len(losses[-10:])) if losses else None,
        "wall_s": round(time.perf_counter() - t0, 2),
        **_machine(),
    }
