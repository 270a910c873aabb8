"""TrainingArguments: every knob of the training loop, validated where it is set."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparsegrad_contract import defaults
from sparsegrad_contract.defaults import Scheduler

SCHEDULERS: tuple[str, ...] = tuple(s.value for s in Scheduler)


@dataclass
class TrainingArguments:
    """How the :class:`~sparsegrad_core.training.Trainer` runs. Steps are optimizer steps."""

    learning_rate: float = defaults.LEARNING_RATE
    """Peak learning rate of AdamW (dense parameters) and, unless ``sparse_learning_rate`` is set, of
    the sparse Adam on SparseGrad entries."""
    sparse_learning_rate: float | None = None
    """Peak learning rate of the sparse Adam on SparseGrad entries (None: ``learning_rate``)."""
    batch_size: int = defaults.BATCH_SIZE
    """Rows per micro-batch; an optimizer step sees ``batch_size * gradient_accumulation_steps`` rows."""
    eval_batch_size: int | None = None
    """Rows per evaluation batch (None: ``2 * batch_size``)."""
    n_epochs: int | None = defaults.N_EPOCHS
    """Passes over the training data (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Total optimizer steps; overrides ``n_epochs``."""
    gradient_accumulation_steps: int = defaults.GRADIENT_ACCUMULATION_STEPS
    """Micro-batches per optimizer step; the loss is the mean over all their loss units."""
    lr_scheduler: str = defaults.LR_SCHEDULER.value
    """Learning-rate schedule after warmup: ``constant`` (the paper), ``linear`` or ``cosine`` decay."""
    warmup_steps: int = 0
    """Linear warmup steps (exclusive with ``warmup_ratio``)."""
    warmup_ratio: float = defaults.WARMUP_RATIO
    """Warmup as a share of the total steps (exclusive with ``warmup_steps``)."""
    weight_decay: float = defaults.WEIGHT_DECAY
    """AdamW weight decay of dense matrices (never biases, LayerNorms or SparseGrad entries)."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm (dense gradients and SparseGrad selections together); None: off."""
    eval_every: int | None = None
    """Evaluate every this many steps (None: only before and after training)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of ``metric_for_best`` (None: never)."""
    metric_for_best: str | None = None
    """Eval metric that decides "best" (``accuracy``, ``eval_f1``, ``loss``...). None: accuracy for
    classification, pearson for regression, loss for causal LM. Losses and perplexity: lower is better."""
    keep_best: bool = False
    """Keep a checkpoint of the best evaluation in ``output_dir/checkpoints/best``."""
    load_best_at_end: bool = False
    """Restore the best evaluation's weights before the final evaluation and export (needs ``keep_best``)."""
    seed: int = defaults.SEED
    """Seeds Python, NumPy and torch at the start of a fresh run, and keys the data order."""
    checkpoint_every: int | None = None
    """Write a resumable checkpoint every this many steps (None: only on stop/cancellation)."""
    keep_checkpoints: int = 2
    """Most recent step checkpoints kept on disk (older ones are deleted)."""
    output_dir: str | Path | None = None
    """Where checkpoints, metrics.jsonl, eval_summary.json and the adapter go (None: write nothing)."""
    max_seq_length: int = defaults.MAX_SEQ_LENGTH
    """Tokens per row after truncation."""
    group_by_length: bool = defaults.GROUP_BY_LENGTH
    """Batch rows of similar length together (shuffled windows, see ``BatchOrder``): much less padding
    compute on short-text data; batches are then less random than a plain shuffle."""
    log_every: int = 1
    """Call ``on_step`` and append to metrics.jsonl every this many steps (and on the last step)."""
    original_share_every: int | None = defaults.ORIGINAL_SHARE_EVERY
    """SparseGrad: every this many steps also measure what the same top-k keeps in the original basis
    (``original_basis_topk_energy_share``; costs one dense gradient product per layer that step)."""
    eval_before: bool = True
    """Evaluate the prepared model before the first step (the "before" numbers)."""
    save_final: bool = True
    """Export the adapter / merged model at the end of a completed run."""
    bf16: bool = False
    """Run forward passes (training and evaluation) under ``torch.autocast(dtype=bfloat16)``, on CUDA or the CPU;
    weights, gradients, optimizer state and calibration stay float32, and SparseGrad's gradient products run in
    bf16 as a dense layer's weight gradient does (:mod:`~sparsegrad_core.precision`)."""
    gradient_checkpointing: bool = defaults.GRADIENT_CHECKPOINTING
    """Recompute each transformer block's activations in the backward instead of keeping them: much less
    activation memory for about 30% more compute per step; results are unchanged. Applies to Hugging Face
    models that support it, through their own switch with ``{"use_reentrant": False}``
    (``gradient_checkpointing_enable``; see :mod:`~sparsegrad_core.training.gradient_checkpointing`); other
    models raise a ``ValueError`` naming this field. The KV cache is off while training."""
    cuda_graphs: bool = False
    """Capture the training step (forward, backward, clipping, optimizer step) once in a CUDA graph and replay it
    (CUDA only; see :mod:`~sparsegrad_core.training.cuda_graphs`): a small model's GPU step is bound by kernel
    launches, which a replay removes. Batches are then padded to ``max_seq_length``; steps of another shape (an
    epoch's shorter last batch) and steps that measure the original basis (``original_share_every``) run eagerly.
    Not with ``gradient_checkpointing``."""

    def __post_init__(self) -> None:
        _positive_float("learning_rate", self.learning_rate)
        if self.sparse_learning_rate is not None:
            _positive_float("sparse_learning_rate", self.sparse_learning_rate)
        _positive_int("batch_size", self.batch_size)
        _positive_int("gradient_accumulation_steps", self.gradient_accumulation_steps)
        _positive_int("max_seq_length", self.max_seq_length, minimum=2)
        _positive_int("log_every", self.log_every)
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        for name in ("eval_batch_size", "max_steps", "eval_every", "early_stopping_patience",
                     "checkpoint_every", "original_share_every", "n_epochs"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        if self.max_steps is None and self.n_epochs is None:
            raise ValueError("set n_epochs or max_steps (both are None)")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}; got {self.lr_scheduler!r}")
        self.lr_scheduler = Scheduler(self.lr_scheduler).value
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0; got {self.warmup_steps!r}")
        if not 0.0 <= float(self.warmup_ratio) < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio!r}")
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if self.max_grad_norm is not None:
            _positive_float("max_grad_norm", self.max_grad_norm)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {self.seed!r}")
        if self.early_stopping_patience is not None and self.eval_every is None:
            raise ValueError("early_stopping_patience needs eval_every (evaluations during training)")
        if self.load_best_at_end and not self.keep_best:
            raise ValueError("load_best_at_end needs keep_best=True")
        if (self.keep_best or self.checkpoint_every) and self.output_dir is None:
            raise ValueError("checkpoint_every / keep_best need an output_dir")
        if self.cuda_graphs and self.gradient_checkpointing:
            raise ValueError("cuda_graphs cannot be combined with gradient_checkpointing: the recomputed forward "
                             "saves and restores the random-number state, which a captured step cannot; turn one off")
        if self.output_dir is not None:
            self.output_dir = Path(self.output_dir)

    @property
    def per_step_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size

    def warmup_for(self, total_steps: int) -> int:
        """Warmup steps for a run of ``total_steps`` steps."""
        if self.warmup_ratio:
            return round(self.warmup_ratio * total_steps)
        return self.warmup_steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_dir"] = None if self.output_dir is None else str(self.output_dir)
        return d


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _positive_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value) > 0:
        raise ValueError(f"{name} must be a number > 0; got {value!r}")
