"""Eval metrics against hand-computed values, and evaluate() against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from support.tiny import tiny_bert, tiny_llama

from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_core.training import classification_metrics, evaluate, regression_metrics
from sparsegrad_data import load_dataset


def test_binary_classification_metrics_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]
    tp, tn, fp, fn = 3, 3, 1, 1
    m = classification_metrics(labels, preds, num_labels=2)
    assert m["eval_accuracy"] == pytest.approx(6 / 8)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert m["eval_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["eval_mcc"] == pytest.approx(mcc)


def test_multiclass_f1_is_macro():
    labels, preds = [0, 1, 2, 2], [0, 2, 2, 2]
    m = classification_metrics(labels, preds, num_labels=3)
    f1_per_class = [1.0, 0.0, 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)]
    assert m["eval_f1"] == pytest.approx(sum(f1_per_class) / 3)
    assert m["eval_accuracy"] == pytest.approx(0.75)


def test_regression_metrics_by_hand():
    y = [1.0, 2.0, 3.0, 4.0]
    p = [1.5, 1.8, 3.9, 3.2]
    m = regression_metrics(y, p)
    ym, pm = sum(y) / 4, sum(p) / 4
    cov = sum((a - ym) * (b - pm) for a, b in zip(y, p, strict=True))
    pearson = cov / math.sqrt(sum((a - ym) ** 2 for a in y) * sum((b - pm) ** 2 for b in p))
    assert m["eval_pearson"] == pytest.approx(pearson)
    assert m["eval_spearman"] == pytest.approx(0.8)  # ranks of p: 1, 2, 4, 3
    assert m["eval_mse"] == pytest.approx((0.25 + 0.04 + 0.81 + 0.64) / 4)
    assert math.isnan(regression_metrics([1.0, 2.0], [3.0, 3.0])["eval_pearson"])


def test_evaluate_classification_matches_a_direct_computation(tokenizer, sst2_small):
    _, dev = sst2_small
    data = tokenize_dataset(dev, tokenizer, 64)
    model = tiny_bert(tokenizer)
    metrics = evaluate(model, data, batch_size=5)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        losses, preds = [], []
        for i in range(len(data)):
            batch = data.collate([i])
            labels = batch.pop("labels")
            logits = model(**batch).logits
            losses.append(F.cross_entropy(logits, labels).item())
            preds.append(int(logits.argmax(-1)))
    assert metrics["eval_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    expected = classification_metrics(data.labels, preds, 2)
    assert metrics["eval_accuracy"] == pytest.approx(expected["eval_accuracy"])
    assert metrics["eval_mcc"] == pytest.approx(expected["eval_mcc"])


def test_evaluate_causal_lm_reports_token_loss_and_perplexity(tokenizer, chat_file):
    data = tokenize_dataset(load_dataset(chat_file, "causal_lm"), tokenizer, 64)
    model = tiny_llama(tokenizer)
    small, large = evaluate(model, data, batch_size=2), evaluate(model, data, batch_size=24)
    assert small["eval_loss"] == pytest.approx(large["eval_loss"], rel=1e-5)  # mean over tokens, not batches
    assert small["eval_perplexity"] == pytest.approx(math.exp(small["eval_loss"]), rel=1e-6)
    assert small["eval_tokens"] == sum(data.loss_units([i]) for i in range(len(data)))
    model.eval()
    with torch.no_grad():
        batch = data.collate(list(range(len(data))))
        hf_loss = model(**batch).loss.item()  # HF: mean over the same predicted tokens
    assert small["eval_loss"] == pytest.approx(hf_loss, rel=1e-4)
