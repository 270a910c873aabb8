"""A job runs end to end in-process: status, progress, events, metrics, checkpoints and artifacts, and the
adapter archive loads back to the model the worker trained."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from support.sparse_update import merged_with_moved_mlps
from support.tiny import CHATS, save_model_folder, tiny_llama
from transformers import AutoModelForSequenceClassification
from worker_helpers import (
    artifacts,
    checkpoints,
    create_job,
    events,
    job_row,
    job_spec,
    metric_series,
    sha256_of,
)

from sparsegrad_core.adapter import load_adapter
from sparsegrad_core.loading import load_base_model, load_tokenizer
from sparsegrad_core.training import merge_exported
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import job_prefix, unpack_archive
from worker.probe import probe_logits
from worker.runner import JobRunner, Outcome


def probe_of(model: torch.nn.Module, tokenizer, summary: dict) -> torch.Tensor:  # type: ignore[no-untyped-def]
    probe = summary["probe"]
    return torch.tensor(probe_logits(model, tokenizer, probe["texts"], probe["text_pairs"], probe["max_seq_length"]))


def unpacked(settings: Settings, artifact, dest: Path) -> Path:  # type: ignore[no-untyped-def]
    archive = settings.artifact_root / artifact.storage_key
    assert sha256_of(archive) == artifact.sha256
    assert archive.stat().st_size == artifact.bytes
    return unpack_archive(archive, dest)


def test_sparsegrad_job_succeeds_end_to_end(
    db_url: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(db_url, keep_finished_checkpoints=2)
    job_id = create_job(settings, sst2_bytes, job_spec(merge_model=True), suffix="demo")
    runner = JobRunner(settings, job_id, keep_model=True)
    assert runner.run() == Outcome.succeeded

    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.error is None and job.attempts == 1
    assert (job.step, job.total_steps, job.progress, job.phase) == (20, 20, 1.0, None)
    assert job.fine_tuned_model == f"ft:tiny-bert:{job.tenant_id}:demo:{job_id}"  # OpenAI's ft:{base}:{org}:{suffix}:{id}
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.finished_at is not None and job.started_at is not None
    summary = job.summary or {}
    assert summary["steps"] == 20 and summary["device"] == "cpu" and summary["trainable_params"] > 0
    assert set(summary["before"]) >= {"eval_loss", "eval_accuracy"} and set(summary["after"]) >= {"eval_loss"}
    assert set(summary["spectra"]) == {"intermediate.dense", "output.dense"}
    assert summary["eval_source"] == "split" and summary["eval_examples"] == 24

    # events: every type, phases in order, the attempt and the final message
    evs = events(settings, job_id)
    assert {e.type for e in evs} == {"message", "phase", "metrics", "checkpoint"}
    phases = [e.data["phase"] for e in evs if e.type == "phase"]
    assert phases == ["calibrating", "evaluating", "training", "evaluating", "saving"]
    assert evs[0].message.startswith("Attempt 1 of 3 started on worker ")
    assert "succeeded" in evs[-1].message and job.fine_tuned_model in evs[-1].message
    ckpt_events = [e.data for e in evs if e.type == "checkpoint"]
    assert [d["step"] for d in ckpt_events] == [8, 16]
    assert any(e.type == "metrics" and e.data["step"] == 0 and "eval_loss" in e.data for e in evs)

    # metrics: one point per (step, name), every training step present
    losses = metric_series(settings, job_id, "loss")
    assert [s for s, _ in losses] == list(range(1, 21))
    assert [s for s, _ in metric_series(settings, job_id, "calibration_loss")] == [1, 2, 3]
    assert [s for s, _ in metric_series(settings, job_id, "eval_loss")] == [0, 20]
    for name in ("lr", "step_time_s", "tokens_per_s", "peak_memory_mb", "epoch", "topk_energy_share"):
        assert len(metric_series(settings, job_id, name)) == 20, name
    assert [s for s, _ in metric_series(settings, job_id, "original_basis_topk_energy_share")] == [1, 6, 11, 16]

    # checkpoints: the newest two (keep_finished_checkpoints), the final step's too, kept as models (adapters,
    # with their digest) without their resume archives
    rows = checkpoints(settings, job_id)
    assert [c.step for c in rows] == [16, 20] and job.last_checkpoint_step is None
    assert rows[0].metrics["train_loss"] == pytest.approx(dict(losses)[16])
    assert rows[1].metrics["train_loss"] == pytest.approx(dict(losses)[20])
    for row in rows:
        assert row.storage_key is None and row.model_kind == "adapter"
        assert sha256_of(settings.artifact_root / row.model_key) == row.model_sha256
    assert not list((settings.artifact_root / job_prefix(job_id) / "checkpoints").glob("step-????????.tar.gz"))

    # artifacts: adapter, merged model and metrics CSV with correct digests
    arts = artifacts(settings, job_id)
    assert set(arts) == {"adapter", "merged_model", "metrics"}
    assert arts["adapter"].filename == f"{job_id}-adapter.tar.gz"
    adapter_dir = unpacked(settings, arts["adapter"], tmp_path / "adapter")
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "training_info.json").is_file()
    csv_path = settings.artifact_root / arts["metrics"].storage_key
    assert sha256_of(csv_path) == arts["metrics"].sha256
    table = list(csv.DictReader(io.StringIO(csv_path.read_text())))  # OpenAI's result-file columns first
    assert list(table[0])[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in table if r["train_loss"]] == [s for s, _ in losses]
    assert [int(r["step"]) for r in table if r["valid_loss"]] == [0, 20]

    # the adapter, loaded on a fresh base model, computes what the worker's model computed
    expected = torch.tensor(summary["probe"]["logits"])
    base, tokenizer = load_base_model(str(tiny_model_dir), "classification", num_labels=2, label_names=["0", "1"])
    merged_with_moved_mlps(load_base_model(str(tiny_model_dir), "classification", num_labels=2)[0], adapter_dir)
    assert runner.trained_model is not None
    torch.testing.assert_close(probe_of(runner.trained_model, tokenizer, summary), expected)
    torch.testing.assert_close(probe_of(load_adapter(base, adapter_dir), tokenizer, summary), expected,
                               atol=1e-5, rtol=1e-4)
    merged_dir = unpacked(settings, arts["merged_model"], tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    torch.testing.assert_close(probe_of(merged, tokenizer, summary), expected, atol=1e-5, rtol=1e-4)

    # the run folder is gone; only the store keeps the job's files
    assert not (settings.work_dir / job_id).exists()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_lora_and_full_jobs_succeed(
    method: str, pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    settings = make_settings(pg_db)
    lines = sst2_bytes.splitlines(keepends=True)
    spec = job_spec(method={"type": method}, hyperparameters={"max_steps": 12, "checkpoint_every": 5})
    job_id = create_job(settings, b"".join(lines[:96]), spec, validation=b"".join(lines[96:]))
    assert JobRunner(settings, job_id).run() == Outcome.succeeded

    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.step == 12
    summary = job.summary or {}
    assert summary["eval_source"] == "validation_file" and summary["eval_examples"] == 24
    assert "spectra" not in summary or summary["spectra"] is None
    assert [e.data["step"] for e in events(settings, job_id) if e.type == "checkpoint"] == [5, 10]
    # succeeded: its final step and newest checkpoint are kept as models, in the method's format
    # (keep_finished_checkpoints defaults to 2); the resume archives left SQL and the store
    rows = checkpoints(settings, job_id)
    assert [c.step for c in rows] == [10, 12] and job.last_checkpoint_step is None
    assert {c.model_kind for c in rows} == {"adapter" if method == "lora" else "merged_model"}
    assert all(c.storage_key is None for c in rows)
    assert [e.data["phase"] for e in events(settings, job_id) if e.type == "phase"] == [
        "evaluating", "training", "evaluating", "saving"]

    arts = artifacts(settings, job_id)
    expected = torch.tensor(summary["probe"]["logits"])
    base, tokenizer = load_base_model(str(tiny_model_dir), "classification", num_labels=2, label_names=["0", "1"])
    if method == "lora":
        assert set(arts) == {"adapter", "metrics"}
        model = merge_exported(base, unpacked(settings, arts["adapter"], tmp_path / "adapter"))
    else:  # full fine-tuning exports the whole model: stored as the merged model, not as an adapter
        assert set(arts) == {"merged_model", "metrics"}
        model = AutoModelForSequenceClassification.from_pretrained(
            unpacked(settings, arts["merged_model"], tmp_path / "model"))
    torch.testing.assert_close(probe_of(model, tokenizer, summary), expected, atol=1e-5, rtol=1e-4)


def test_block_sparsegrad_job_stores_a_peft_lora_adapter(
    pg_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tiny_model_dir: Path, tmp_path: Path,
) -> None:
    from peft import PeftModel

    settings = make_settings(pg_db)
    spec = job_spec(method={"type": "sparsegrad", "setting": "peft",
                            "sparsegrad": {"selection": "block", "density": 0.05, "calibration_steps": 3,
                                           "block_energy_share": 0.9, "block_max_cost": 2.0}},
                    hyperparameters={"max_steps": 8, "learning_rate": 1e-2})
    job_id = create_job(settings, sst2_bytes, spec)
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    job = job_row(settings, job_id)
    block_events = [e for e in events(settings, job_id) if e.data and "block" in e.data]
    assert len(block_events) == 1 and "0.9 of the top-k energy" in block_events[0].message
    chosen = block_events[0].data["block"]["kinds"]
    assert set(chosen) == {"intermediate.dense", "output.dense"}

    arts = artifacts(settings, job_id)
    assert set(arts) == {"adapter", "lora", "metrics"}
    expected = torch.tensor((job.summary or {})["probe"]["logits"])
    base, tokenizer = load_base_model(str(tiny_model_dir), "classification", num_labels=2, label_names=["0", "1"])
    untrained = probe_of(base, tokenizer, job.summary or {})
    lora_dir = unpacked(settings, arts["lora"], tmp_path / "lora")
    config = json.loads((lora_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == ["bert.pooler.dense", "classifier"]
    assert set(config["rank_pattern"].values()) == {min(c["r_out"], c["r_in"]) for c in chosen.values()}
    model = PeftModel.from_pretrained(base, str(lora_dir)).eval()
    got = probe_of(model, tokenizer, job.summary or {})
    assert not torch.allclose(untrained, expected, atol=1e-3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_causal_lm_chat_job_succeeds(pg_db: str, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    tokenizer = load_tokenizer("minilm-l6")
    folder = save_model_folder(tmp_path / "tiny-llama", tiny_llama(tokenizer), tokenizer)
    settings = make_settings(pg_db, models={"tiny-llama": str(folder)})
    chats = "".join(json.dumps({"messages": CHATS[i % len(CHATS)]}) + "\n" for i in range(100)).encode()
    spec = job_spec(task={"type": "causal_lm", "num_labels": None, "label_names": None},
                    hyperparameters={"max_steps": 6, "checkpoint_every": 3})
    job_id = create_job(settings, chats, spec, model="tiny-llama")
    assert JobRunner(settings, job_id).run() == Outcome.succeeded

    job = job_row(settings, job_id)
    summary = job.summary or {}
    assert summary["task"] == "causal_lm" and summary["probe"] is None
    assert "eval_perplexity" in summary["after"] and summary["eval_source"] == "split"
    assert [s for s, _ in metric_series(settings, job_id, "eval_perplexity")] == [0, 6]
    assert set(artifacts(settings, job_id)) == {"adapter", "metrics"}


def test_gradient_checkpointing_job_succeeds(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes
) -> None:
    from sparsegrad_core.training.gradient_checkpointing import is_gradient_checkpointing

    settings = make_settings(sqlite_db)
    spec = job_spec(hyperparameters={"max_steps": 4, "checkpoint_every": 2, "gradient_checkpointing": True},
                    method={"sparsegrad": {"density": 0.05, "calibration_steps": 2, "selection": "dynamic",
                                           "recalibrate_every": 2}})
    job_id = create_job(settings, sst2_bytes, spec)
    runner = JobRunner(settings, job_id, keep_model=True)
    assert runner.run() == Outcome.succeeded
    assert runner.trained_model is not None and is_gradient_checkpointing(runner.trained_model)
    # re-calibrated once, after step 2 (not after the last), with gradient checkpointing on
    [recalibrated] = [e for e in events(settings, job_id) if "re-calibrated" in e.message]
    assert recalibrated.data["step"] == 2 and set(recalibrated.data["kept_share"]) == {"intermediate.dense",
                                                                                     "output.dense"}
