"""Trainer: one loop for every method — accumulation, schedule, clipping, evaluation, early stopping,
cancellation, bit-exact checkpoint/resume, and the final export.

One optimizer step = ``gradient_accumulation_steps`` micro-batches. Each micro-batch's mean loss is
weighted by its share of the step's loss units (examples, or predicted tokens for causal LM), so the
accumulated gradient is the gradient of the mean over the whole step whatever the micro-batch sizes.
SparseGrad layers sum the rotated gradients of all micro-batches and select the top-k once, on the
last one (``accumulating_gradients``).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sparsegrad_data import Dataset

from ..batch_order import BatchOrder
from ..methods import PreparedModel
from ..model import energy_share, sparsegrad_layers
from ..optim import build_optimizer, clip_grad_norm
from ..precision import bf16_autocast
from ..recalibration import recalibrate
from ..tokenization import TokenizedDataset, tokenize_dataset
from .arguments import TrainingArguments
from .callbacks import CallbackList, TrainerCallback
from .checkpoint import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    TrainerState,
    find_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_dir_name,
)
from .cuda_graphs import StepGraph
from .evaluation import default_metric, evaluate, greater_is_better, metric_key, metric_names
from .export import export_trained
from .gradient_checkpointing import cache_disabled, enable_gradient_checkpointing
from .preparation import calibration_batches
from .schedule import lr_scale
from .telemetry import (
    METRICS_FILE,
    MetricsLog,
    json_safe,
    memory_metric_name,
    peak_memory_mb,
    reset_peak_memory,
)

SUMMARY_FILE = "eval_summary.json"


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` did."""

    global_step: int
    total_steps: int
    stopped: bool = False
    """``should_stop`` ended the run; ``checkpoint`` holds the state to resume from."""
    early_stopped: bool = False
    checkpoint: Path | None = None
    before_eval: dict[str, float] | None = None
    final_eval: dict[str, float] | None = None
    best_metric: float | None = None
    best_step: int | None = None
    losses: list[float] = field(default_factory=list)
    """The loss of every step this call ran, in order (a resumed call starts after the checkpoint)."""
    train_time_s: float = 0.0
    export_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def as_tokenized(
    data: Dataset | TokenizedDataset, tokenizer: PreTrainedTokenizerBase, max_seq_length: int
) -> TokenizedDataset:
    return data if isinstance(data, TokenizedDataset) else tokenize_dataset(data, tokenizer, max_seq_length)


class Trainer:
    """Train a :class:`~sparsegrad_core.methods.PreparedModel` on a dataset; see :meth:`train`.

    ``train_ds``/``eval_ds`` are validated ``sparsegrad_data.Dataset`` objects (tokenized here with
    ``args.max_seq_length``) or already :class:`~sparsegrad_core.tokenization.TokenizedDataset`. ``run_info``
    (e.g. the base model alias) is copied into the export's metadata and eval_summary.json. With
    ``args.gradient_checkpointing`` it is switched on here unless :func:`prepare_for_training` already did.
    """

    def __init__(
        self,
        prepared: PreparedModel,
        train_ds: Dataset | TokenizedDataset,
        eval_ds: Dataset | TokenizedDataset | None,
        tokenizer: PreTrainedTokenizerBase,
        args: TrainingArguments,
        callbacks: list[TrainerCallback] | None = None,
        *,
        run_info: dict[str, Any] | None = None,
    ) -> None:
        self.prepared, self.model, self.args, self.tokenizer = prepared, prepared.model, args, tokenizer
        self.train_data = as_tokenized(train_ds, tokenizer, args.max_seq_length)
        self.eval_data = None if eval_ds is None else as_tokenized(eval_ds, tokenizer, args.max_seq_length)
        self.callbacks = CallbackList(callbacks or [])
        self.run_info = dict(run_info or {})
        self.device = next(self.model.parameters()).device
        if args.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.order = BatchOrder(
            len(self.train_data), args.batch_size, args.seed, args.gradient_accumulation_steps,
            lengths=self.train_data.lengths() if args.group_by_length else None,
        )
        assert args.max_steps is not None or args.n_epochs is not None
        self.total_steps = args.max_steps or int(args.n_epochs or 1) * self.order.steps_per_epoch
        self.warmup_steps = args.warmup_for(self.total_steps)
        sg = prepared.spec.sparsegrad
        self.optimizer = build_optimizer(
            self.model, args.learning_rate, weight_decay=args.weight_decay, betas=sg.adam_betas, eps=sg.adam_eps,
            sparse_lr=args.sparse_learning_rate, capturable=args.cuda_graphs,
        )
        task = self.train_data.task
        self.metric = metric_key(args.metric_for_best) if args.metric_for_best else default_metric(task)
        if self.metric not in metric_names(task):
            raise ValueError(f"metric_for_best={args.metric_for_best!r} is not an eval metric of {task.value} "
                             f"({', '.join(metric_names(task))})")
        self.sg_layers = [layer for _, layer in sparsegrad_layers(self.model)]
        self.step_graph = StepGraph(self._step_work, self.device, lambda: self.optimizer.zero_grad(set_to_none=True)) \
            if args.cuda_graphs else None
        self.output_dir = None if args.output_dir is None else Path(args.output_dir)
        self.metrics_log = MetricsLog(None if self.output_dir is None else self.output_dir / METRICS_FILE)
        self.state = TrainerState()

    # ------------------------------------------------------------------------------------------ loop
    def train(self, resume_from: str | Path | None = None) -> TrainResult:
        """Run to ``total_steps`` (or early stopping / ``should_stop``) and export the result.

        With ``resume_from`` (a checkpoint, or a run folder whose newest checkpoint is used) the
        model's trained tensors, optimizer moments, RNG states and data position are restored, so the
        run continues exactly as if it had never stopped.
        """
        args, cb, state = self.args, self.callbacks, self.state
        if resume_from is not None:
            state = self.state = load_checkpoint(find_checkpoint(resume_from), self.model, self.optimizer)
            self.metrics_log.truncate_after(state.global_step)
        else:
            seed_everything(args.seed)
            state = self.state = TrainerState()
            if self.metrics_log.path is not None:
                self.metrics_log.path.unlink(missing_ok=True)
            if args.eval_before and self.eval_data is not None:
                state.before_eval = self.evaluate(step=0, then_training=False)
        reset_peak_memory(self.device)
        cb.on_phase("training")
        cb.on_train_begin(state.global_step, self.total_steps)
        result = TrainResult(global_step=state.global_step, total_steps=self.total_steps)
        started, time_before = time.perf_counter(), state.train_time_s
        cached_epoch, epoch_batches = -1, []
        while state.global_step < self.total_steps:
            if state.step_in_epoch >= self.order.steps_per_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            if cb.should_stop():
                result.stopped = True
                break
            if cached_epoch != state.epoch:
                cached_epoch, epoch_batches = state.epoch, self.order.micro_batches(state.epoch)
            first = state.step_in_epoch * args.gradient_accumulation_steps
            metrics = self._train_step(epoch_batches[first : first + args.gradient_accumulation_steps])
            state.global_step += 1
            state.step_in_epoch += 1
            state.train_time_s = time_before + time.perf_counter() - started
            step = state.global_step
            metrics["epoch"] = state.epoch + state.step_in_epoch / self.order.steps_per_epoch
            result.losses.append(metrics["loss"])
            every = self.prepared.spec.sparsegrad.recalibrate_every
            if self.sg_layers and every and step % every == 0 and step < self.total_steps:
                self.recalibrate(step)
            if step % args.log_every == 0 or step == self.total_steps:
                cb.on_step(step, metrics)
                self.metrics_log.write("step", step, metrics)
            if args.eval_every and step % args.eval_every == 0 and step < self.total_steps \
                    and self.eval_data is not None:
                self.evaluate(step)
                patience = args.early_stopping_patience
                if patience is not None and state.evals_without_improvement >= patience:
                    result.early_stopped = True
                    break
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                result.checkpoint = self.save_checkpoint()
        result.global_step, result.train_time_s = state.global_step, state.train_time_s
        result.before_eval = state.before_eval
        if result.stopped:
            result.checkpoint = None if self.output_dir is None else self.save_checkpoint(then_training=False)
            return result
        self._finish(result)
        return result

    def _train_step(self, micro_batches: list[list[int]]) -> dict[str, float]:
        """One optimizer step over ``micro_batches`` (row indices); returns the step's metrics."""
        args, model, state = self.args, self.model, self.state
        model.train()
        started = time.perf_counter()
        units = [self.train_data.loss_units(mb) for mb in micro_batches]
        total_units = sum(units)
        track = bool(self.sg_layers and args.original_share_every and state.global_step % args.original_share_every == 0)
        for layer in self.sg_layers:
            layer.track_original_share = track
        batches, tokens = [], 0
        for indices in micro_batches:
            cpu_batch = self.train_data.collate(indices, width=args.max_seq_length if args.cuda_graphs else None)
            tokens += int(cpu_batch["attention_mask"].sum()) if "attention_mask" in cpu_batch else cpu_batch["input_ids"].numel()
            batches.append({k: v.to(self.device) for k, v in cpu_batch.items()})
        weights = [u / total_units for u in units]
        scale = lr_scale(state.global_step, self.total_steps, self.warmup_steps, args.lr_scheduler)
        self.optimizer.set_lr_scale(scale)
        if self.step_graph is not None and not track:  # measuring the original basis is another path: eager
            regular = len(batches) == args.gradient_accumulation_steps and all(
                len(mb) == args.batch_size for mb in micro_batches)
            on_device, energies = self.step_graph(batches, weights, regular)
        else:
            on_device, energies = self._step_work(batches, weights)
        for layer, energy in zip(self.sg_layers, energies, strict=True):
            layer.last_energy = dict(energy)
        self.optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, float] = energy_share(model) if self.sg_layers else {}
        if track:
            for layer in self.sg_layers:
                layer.track_original_share = False
                layer.last_energy.pop("original_kept", None)
        metrics.update(zip(on_device, torch.stack(list(on_device.values())).tolist(), strict=True))
        elapsed = time.perf_counter() - started
        metrics.update(
            lr=args.learning_rate * scale, step_time_s=elapsed,
            tokens_per_s=tokens / max(elapsed, 1e-9), peak_memory_mb=peak_memory_mb(self.device),
        )
        return metrics

    def _step_work(
        self, batches: list[dict[str, torch.Tensor]], weights: list[Any]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Forward and backward of every micro-batch (each mean loss times its ``weights`` entry), clipping and the
        optimizer step, on device tensors (what :class:`~.cuda_graphs.StepGraph` captures). Returns the step's loss
        and gradient norm, and each SparseGrad layer's energies of the step. Losses and the gradient norm stay on
        the device until the step is queued: one host sync per step."""
        args, model = self.args, self.model
        losses = []
        for i, batch in enumerate(batches):
            with self.prepared.accumulating_gradients(active=i < len(batches) - 1):
                with self.autocast(), cache_disabled(model, active=args.gradient_checkpointing):
                    loss = model(**batch).loss * weights[i]
                loss.backward()
            losses.append(loss.detach().float())
        on_device = {"loss": torch.stack(losses).sum()}
        if args.max_grad_norm is not None:
            on_device["grad_norm"] = clip_grad_norm(model, args.max_grad_norm).to(on_device["loss"].device)
        self.optimizer.step()
        return on_device, [dict(layer.last_energy) for layer in self.sg_layers]

    def recalibrate(self, step: int) -> dict[str, Any]:
        """New HOSVD bases after step ``step`` from the calibration stream's next ``calibration_steps`` micro-batches
        (:func:`~sparsegrad_core.recalibration.recalibrate`: the trained delta is kept exactly), the sparse Adam
        moments restarted; logged as a ``recalibration`` line and reported to ``on_recalibrated``."""
        sg, args = self.prepared.spec.sparsegrad, self.args
        batches = list(calibration_batches(self.train_data, sg.calibration_steps, args.batch_size, args.seed,
                                           self.device, skip=step // sg.recalibrate_every * sg.calibration_steps))
        with cache_disabled(self.model, active=args.gradient_checkpointing):
            stats = recalibrate(self.model, batches)
        self.optimizer.reset_sparse_state()
        if self.step_graph is not None:  # the capture holds the old bases and moments
            self.step_graph.reset()
        self.metrics_log.write("recalibration", step, {
            "seconds": stats["seconds"], "loss": sum(stats["losses"]) / len(stats["losses"]),
            **{f"kept_share_{kind}": v["kept_share"] for kind, v in stats["kinds"].items()}})
        self.callbacks.on_recalibrated(step, stats)
        return stats

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bfloat16 autocast of forward passes when ``args.bf16`` is set (CUDA or CPU); without autocast's cache of
        cast weights under ``cuda_graphs`` (a captured step must not reuse casts made outside it)."""
        with bf16_autocast(self.device, self.args.bf16, cache=not self.args.cuda_graphs):
            yield

    # ------------------------------------------------------------------------------------------ eval
    def evaluate(self, step: int | None = None, *, then_training: bool = True) -> dict[str, float]:
        """Evaluate on the eval data, log it, and track the best metric / patience (after step 0)."""
        if self.eval_data is None:
            raise ValueError("no eval dataset was given")
        step = self.state.global_step if step is None else step
        self.callbacks.on_phase("evaluating")
        with self.autocast():
            metrics = evaluate(self.model, self.eval_data, self.args.per_step_eval_batch_size)
        self.callbacks.on_eval(step, metrics)
        self.metrics_log.write("eval", step, metrics)
        self.state.last_eval, self.state.last_eval_step = metrics, step
        if step > 0:
            self._track_best(step, metrics)
        if then_training:
            self.callbacks.on_phase("training")
        return metrics

    def _track_best(self, step: int, metrics: dict[str, float]) -> None:
        state, value = self.state, metrics.get(self.metric, math.nan)
        if math.isnan(value):
            state.evals_without_improvement += 1
            return
        best = state.best_metric
        if best is None or (value > best if greater_is_better(self.metric) else value < best):
            state.best_metric, state.best_step, state.best_eval = value, step, metrics
            state.evals_without_improvement = 0
            if self.args.keep_best and self.output_dir is not None:
                path = save_checkpoint(self.output_dir / CHECKPOINTS_DIR / BEST_DIR, self.model, self.optimizer, state)
                self.callbacks.on_checkpoint(step, path)
        else:
            state.evals_without_improvement += 1

    # ------------------------------------------------------------------------------------------ saving
    def save_checkpoint(self, *, then_training: bool = True) -> Path:
        """Write a resumable checkpoint of the current step under ``output_dir/checkpoints``."""
        if self.output_dir is None:
            raise ValueError("checkpoints need TrainingArguments.output_dir")
        self.callbacks.on_phase("saving")
        root = self.output_dir / CHECKPOINTS_DIR
        path = save_checkpoint(root / step_dir_name(self.state.global_step), self.model, self.optimizer, self.state)
        prune_checkpoints(root, self.args.keep_checkpoints)
        self.callbacks.on_checkpoint(self.state.global_step, path)
        if then_training:
            self.callbacks.on_phase("training")
        return path

    def _finish(self, result: TrainResult) -> None:
        state = self.state
        if self.eval_data is not None:
            if state.last_eval_step != state.global_step:
                self.evaluate(state.global_step, then_training=False)
            result.final_eval = state.last_eval
            best_dir = None if self.output_dir is None else self.output_dir / CHECKPOINTS_DIR / BEST_DIR
            if self.args.load_best_at_end and best_dir is not None and best_dir.is_dir() \
                    and state.best_step != state.global_step:
                load_checkpoint(best_dir, self.model, None, restore_rng=False)
                result.final_eval = state.best_eval
        result.best_metric, result.best_step = state.best_metric, state.best_step
        result.summary = self._summary(result)
        if self.output_dir is None:
            return
        self.callbacks.on_phase("saving")
        if self.args.save_final:
            sub = "adapter" if self.prepared.method.exports_adapter else "model"
            result.export_dir = export_trained(self.prepared, self.tokenizer, self.output_dir / sub, self._export_info())
            result.summary["export_dir"] = str(result.export_dir)
        tmp = self.output_dir / (SUMMARY_FILE + ".tmp")
        tmp.write_text(json.dumps(json_safe(result.summary), indent=2, default=str, allow_nan=False))
        tmp.replace(self.output_dir / SUMMARY_FILE)

    def _export_info(self) -> dict[str, Any]:
        data = self.train_data
        return {
            "task": data.task.value, "label_names": data.label_names, "num_labels": data.num_labels,
            "setting": self.prepared.spec.setting, "max_seq_length": self.args.max_seq_length, "seed": self.args.seed,
            "bf16": self.args.bf16,
            **self.run_info,
        }

    def _summary(self, result: TrainResult) -> dict[str, Any]:
        spec, state = self.prepared.spec, self.state
        total_params = sum(p.numel() for n, p in self.model.named_parameters() if not n.endswith("sg_anchor"))
        total_params += sum(layer.weight.numel() for layer in self.sg_layers)
        calibration = self.prepared.info.get("calibration") or {}
        return {
            "method": spec.type, "setting": spec.setting, "task": self.train_data.task.value,
            **self.run_info,
            "before": state.before_eval, "after": result.final_eval,
            "best": {"metric": self.metric, "value": state.best_metric, "step": state.best_step},
            "trainable_params": self.prepared.trainable_params, "total_params": total_params,
            "steps": state.global_step, "total_steps": self.total_steps,
            "epochs": state.epoch + state.step_in_epoch / self.order.steps_per_epoch,
            "early_stopped": result.early_stopped,
            "train_time_s": state.train_time_s, "calibration_time_s": calibration.get("seconds"),
            "train_examples": len(self.train_data), "eval_examples": 0 if self.eval_data is None else len(self.eval_data),
            "peak_memory_mb": peak_memory_mb(self.device), "peak_memory_definition": memory_metric_name(self.device),
            "cuda_graphs": None if self.step_graph is None else {
                "captures": self.step_graph.captures, "replays": self.step_graph.replays,
                "failed": self.step_graph.failed},
            "spec": spec.to_dict(), "args": self.args.to_dict(),
        }
