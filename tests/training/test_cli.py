"""The `sparsegrad` CLI end to end on a tiny local model and the bundled SST-2 sample."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from sparsegrad_core.cli import app
from sparsegrad_data import sample_path

runner = CliRunner()


def _head(src: Path, dst: Path, lines: int) -> Path:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")
    return dst


def test_train_writes_adapter_metrics_and_summary_then_merges(tiny_model_dir, tmp_path):
    train = _head(sample_path("sst2_train"), tmp_path / "train.tsv", 129)
    dev = _head(sample_path("sst2_dev"), tmp_path / "dev.tsv", 41)
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--model", str(tiny_model_dir), "--train", str(train), "--eval", str(dev), "--glue", "sst2",
        "--method", "sparsegrad", "--density", "0.05", "--calibration-steps", "2", "--max-steps", "6",
        "--batch-size", "16", "--lr", "1e-3", "--max-seq-length", "32", "--eval-every", "3", "--output", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "trainable parameters" in result.output
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["type"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert [x["step"] for x in lines if x["type"] == "eval"] == [0, 3, 6]
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["method"] == "sparsegrad" and summary["model"] == str(tiny_model_dir)
    assert "eval_accuracy" in summary["before"] and "eval_accuracy" in summary["after"]

    merged_dir = tmp_path / "merged"
    result = runner.invoke(app, ["merge", "--model", str(tiny_model_dir), "--adapter", str(out / "adapter"),
                                 "--output", str(merged_dir)])
    assert result.exit_code == 0, result.output
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert merged.config.id2label == {0: "0", 1: "1"}
    assert torch.isfinite(merged.classifier.weight).all()


def test_bad_data_file_exits_2_with_line_numbers(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood movie\t1\nbad movie\n\t0\nok film\t1\n", encoding="utf-8")
    result = runner.invoke(app, ["train", "--model", str(tiny_model_dir), "--train", str(bad), "--glue", "sst2",
                                 "--output", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "bad.tsv:3: expected 2 columns" in result.output
    assert "bad.tsv:4: field 'sentence'" in result.output
    assert not (tmp_path / "run").exists()


def test_invalid_training_argument_exits_2_naming_the_field(tiny_model_dir, tmp_path):
    train = _head(sample_path("sst2_train"), tmp_path / "train.tsv", 20)
    result = runner.invoke(app, ["train", "--model", str(tiny_model_dir), "--train", str(train), "--glue", "sst2",
                                 "--lr", "0", "--output", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "learning_rate must be a number > 0" in result.output


def test_cuda_graphs_without_cuda_exits_2_before_loading_anything(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train = _head(sample_path("sst2_train"), tmp_path / "train.tsv", 20)
    result = runner.invoke(app, ["train", "--model", str(tiny_model_dir), "--train", str(train), "--glue", "sst2",
                                 "--cuda-graphs", "--output", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--cuda-graphs needs a CUDA device" in result.output
    assert not (tmp_path / "run").exists()


def test_train_resumes_from_a_checkpoint(tiny_model_dir, tmp_path):
    train = _head(sample_path("sst2_train"), tmp_path / "train.tsv", 65)
    out = tmp_path / "run"
    common = ["train", "--model", str(tiny_model_dir), "--train", str(train), "--glue", "sst2", "--density", "0.05",
              "--calibration-steps", "2", "--max-steps", "6", "--batch-size", "8", "--checkpoint-every", "3",
              "--max-seq-length", "32", "--output", str(out)]
    assert runner.invoke(app, common).exit_code == 0
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    result = runner.invoke(app, [*common, "--resume", str(out / "checkpoints" / "step-00000003")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert [x["loss"] for x in lines] == losses


def test_gradient_checkpointing_flag_reaches_the_run(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import BertForSequenceClassification

    train = _head(sample_path("sst2_train"), tmp_path / "train.tsv", 33)
    common = ["train", "--model", str(tiny_model_dir), "--train", str(train), "--glue", "sst2", "--density", "0.05",
              "--calibration-steps", "1", "--max-steps", "2", "--batch-size", "8", "--max-seq-length", "32",
              "--gradient-checkpointing"]
    result = runner.invoke(app, [*common, "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "eval_summary.json").read_text())
    assert summary["args"]["gradient_checkpointing"] is True

    monkeypatch.setattr(BertForSequenceClassification, "supports_gradient_checkpointing", False)
    result = runner.invoke(app, [*common, "--output", str(tmp_path / "refused")])
    assert result.exit_code == 2
    assert "gradient_checkpointing: BertForSequenceClassification does not support" in result.output


def test_recalibration_is_shown_and_defaults_only_where_the_selection_allows_it(tiny_model_dir, tmp_path):
    """Dynamic selection re-calibrates on request and the terminal says so; block selection gets the jobs' default
    (never) without asking, and refuses an explicit request naming the option."""
    train = _head(sample_path("sst2_train"), tmp_path / "train.tsv", 97)
    common = ["train", "--model", str(tiny_model_dir), "--train", str(train), "--glue", "sst2", "--density", "0.05",
              "--calibration-steps", "2", "--max-steps", "5", "--batch-size", "16", "--max-seq-length", "32"]
    result = runner.invoke(app, [*common, "--recalibrate-every", "2", "--output", str(tmp_path / "dynamic")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "re-calibrated after step 2 (2 passes" in said and "re-calibrated after step 4 (2 passes" in said
    result = runner.invoke(app, [*common, "--selection", "block", "--output", str(tmp_path / "block")])
    assert result.exit_code == 0, result.output
    assert "re-calibrated" not in result.output
    result = runner.invoke(app, [*common, "--selection", "block", "--recalibrate-every", "2",
                                 "--output", str(tmp_path / "refused")])
    assert result.exit_code == 2 and "recalibrate_every needs selection='dynamic'" in result.output
