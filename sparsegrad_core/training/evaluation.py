"""Evaluate a model on tokenized data: eval loss plus the task's metrics (scikit-learn / SciPy).

* classification — ``accuracy``, ``f1`` (binary for two classes, else macro), ``mcc`` (Matthews);
* regression — ``pearson``, ``spearman``, ``mse``;
* causal LM — ``perplexity`` = exp(mean token loss over assistant tokens).

Every key is prefixed with ``eval_``. Undefined correlations (constant predictions) are NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from torch import nn

from sparsegrad_data import TaskType

from ..chat import IGNORE_INDEX
from ..tokenization import TokenizedDataset

LOWER_IS_BETTER = ("loss", "perplexity", "mse")


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, F1 (binary if ``num_labels == 2`` else macro) and Matthews correlation."""
    y, p = np.asarray(labels), np.asarray(predictions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = f1_score(y, p, average="binary" if num_labels == 2 else "macro", zero_division=0.0)
        mcc = matthews_corrcoef(y, p)
    return {"eval_accuracy": float(accuracy_score(y, p)), "eval_f1": float(f1), "eval_mcc": float(mcc)}


def regression_metrics(labels: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation, and mean squared error."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(predictions, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pearson = float(stats.pearsonr(y, p).statistic) if len(y) > 1 else math.nan
        spearman = float(stats.spearmanr(y, p).statistic) if len(y) > 1 else math.nan
    return {"eval_pearson": pearson, "eval_spearman": spearman, "eval_mse": float(np.mean((y - p) ** 2))}


def metric_names(task: TaskType) -> tuple[str, ...]:
    """The keys :func:`evaluate` returns for ``task``."""
    if task == TaskType.CAUSAL_LM:
        return ("eval_loss", "eval_perplexity", "eval_tokens")
    if task == TaskType.REGRESSION:
        return ("eval_loss", "eval_pearson", "eval_spearman", "eval_mse")
    return ("eval_loss", "eval_accuracy", "eval_f1", "eval_mcc")


def greater_is_better(metric: str) -> bool:
    return not any(metric.endswith(s) for s in LOWER_IS_BETTER)


def default_metric(task: TaskType) -> str:
    return {TaskType.CLASSIFICATION: "eval_accuracy", TaskType.REGRESSION: "eval_pearson"}.get(task, "eval_loss")


def metric_key(name: str) -> str:
    """``accuracy`` → ``eval_accuracy`` (names already prefixed are kept)."""
    return name if name.startswith("eval_") else f"eval_{name}"


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenizedDataset, batch_size: int) -> dict[str, float]:
    """Eval loss and task metrics over every row of ``data`` in eval mode (batched by length).

    The loss is averaged over examples (classification, regression) or over predicted tokens (causal
    LM), independent of how rows fall into batches. Train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, units = 0.0, 0
    preds: list[float] = [0.0] * len(data)
    by_length = sorted(range(len(data)), key=lambda i: len(data.rows[i]["input_ids"]))  # least padding
    try:
        for start in range(0, len(data), batch_size):
            indices = by_length[start : start + batch_size]
            batch = {k: v.to(device) for k, v in data.collate(indices).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            if data.task == TaskType.CAUSAL_LM:
                shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
                loss = F.cross_entropy(
                    shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                    ignore_index=IGNORE_INDEX, reduction="sum",
                )
                loss_sum += float(loss)
                units += int((shift_labels != IGNORE_INDEX).sum())
            elif data.task == TaskType.REGRESSION:
                out = logits.squeeze(-1)
                loss_sum += float(F.mse_loss(out, labels.float(), reduction="sum"))
                units += len(indices)
                for i, v in zip(indices, out.tolist(), strict=True):
                    preds[i] = v
            else:
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                units += len(indices)
                for i, v in zip(indices, logits.argmax(-1).tolist(), strict=True):
                    preds[i] = v
    finally:
        model.train(was_training)
    loss_mean = loss_sum / max(units, 1)
    metrics = {"eval_loss": loss_mean}
    if data.task == TaskType.CAUSAL_LM:
        metrics["eval_perplexity"] = math.exp(min(loss_mean, 700.0))
        metrics["eval_tokens"] = float(units)
    elif data.task == TaskType.REGRESSION:
        assert data.labels is not None
        metrics.update(regression_metrics([float(v) for v in data.labels], preds))
    else:
        assert data.labels is not None
        num_labels = data.num_labels or (max(int(v) for v in data.labels) + 1)
        metrics.update(classification_metrics([int(v) for v in data.labels], [int(p) for p in preds], num_labels))
    return metrics
