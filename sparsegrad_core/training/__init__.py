"""Training loop for every method: prepare from data, train with callbacks, checkpoint/resume, export.

>>> prepared = prepare_for_training(model, MethodSpec("sparsegrad"), train_data, batch_size=32)
>>> result = Trainer(prepared, train_ds, eval_ds, tokenizer, TrainingArguments(output_dir="runs/x")).train()
"""

from .arguments import TrainingArguments
from .callbacks import CalibrationProgress, CallbackList, Phase, TrainerCallback
from .checkpoint import (
    TrainerState,
    bundle_checkpoint,
    bundled_checkpoint,
    find_checkpoint,
    load_basis,
    load_checkpoint,
    save_basis,
    save_checkpoint,
)
from .evaluation import classification_metrics, evaluate, regression_metrics
from .export import export_trained, merge_exported, read_training_info
from .gradient_checkpointing import GradientCheckpointingUnsupported, enable_gradient_checkpointing
from .memory_release import PeriodicRelease, release_allocator_pages
from .preparation import TrainingCancelled, calibration_batches, prepare_for_training
from .schedule import lr_scale
from .trainer import SUMMARY_FILE, Trainer, TrainResult, seed_everything

__all__ = [
    "SUMMARY_FILE",
    "CalibrationProgress",
    "CallbackList",
    "GradientCheckpointingUnsupported",
    "PeriodicRelease",
    "Phase",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "TrainerState",
    "TrainingArguments",
    "TrainingCancelled",
    "bundle_checkpoint",
    "bundled_checkpoint",
    "calibration_batches",
    "classification_metrics",
    "enable_gradient_checkpointing",
    "evaluate",
    "export_trained",
    "find_checkpoint",
    "load_basis",
    "load_checkpoint",
    "lr_scale",
    "merge_exported",
    "prepare_for_training",
    "read_training_info",
    "regression_metrics",
    "release_allocator_pages",
    "save_basis",
    "save_checkpoint",
    "seed_everything",
]
