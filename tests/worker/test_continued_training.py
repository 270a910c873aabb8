"""Continued training: a job whose ``model`` is a fine-tuned model, or one of its checkpoints, starts from that
model's weights (base + the chain of stored weights, rebuilt by the worker), names its model after the root base,
keeps its own checkpoints as models, and merges and loads back through the same chain. A parent made on a base
whose weights differ is refused before training starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support.tiny import save_model_folder, tiny_bert
from transformers import AutoModelForSequenceClassification
from worker_helpers import artifacts, checkpoints, create_job, events, job_row, job_spec, metric_series

from sparsegrad_core.adapter import load_adapter
from sparsegrad_core.loading import load_tokenizer
from sparsegrad_core.recipe import load_base_for
from sparsegrad_service.db import session_scope
from sparsegrad_service.job_store import JobStore
from sparsegrad_service.model_names import checkpoint_model_name
from sparsegrad_service.model_resolution import LineageEntry, ResolvedModel
from sparsegrad_service.models import Job
from sparsegrad_service.registry import model_registry
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import LocalArtifactStore
from worker.parents import fetch_weights, materialize
from worker.probe import probe_logits
from worker.runner import JobRunner, Outcome

SPEC = job_spec(hyperparameters={"max_steps": 8, "checkpoint_every": 4, "eval_every": 4, "learning_rate": 1e-2},
                validation_split=0.0)


def child_job(settings: Settings, parent_id: str, model: str, **changes: object) -> str:
    """A queued job of the parent's tenant on the parent's files, fine-tuning ``model``."""
    with session_scope(settings.sql_url) as session:
        parent = session.get(Job, parent_id)
        assert parent is not None
        child = Job(tenant_id=parent.tenant_id, model=model, training_file_id=parent.training_file_id,
                    validation_file_id=parent.validation_file_id, spec=job_spec(**{**SPEC, **changes}),
                    status="queued", seed=parent.seed, queued_at=parent.queued_at, max_attempts=1)
        session.add(child)
        session.flush()
        return child.id


def probe(settings: Settings, model: torch.nn.Module, job_id: str) -> torch.Tensor:
    summary = job_row(settings, job_id).summary or {}
    p = summary["probe"]
    tokenizer = load_tokenizer("minilm-l6")
    return torch.tensor(probe_logits(model, tokenizer, p["texts"], p["text_pairs"], p["max_seq_length"]))


@pytest.fixture()
def parent(sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes) -> tuple[Settings, str]:
    """A succeeded SparseGrad job on ``tiny-bert`` with checkpoints at steps 4 and 8 kept as models."""
    settings = make_settings(sqlite_db)
    lines = sst2_bytes.splitlines(keepends=True)
    job_id = create_job(settings, b"".join(lines[:96]), SPEC, validation=b"".join(lines[96:]))
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    assert [(c.step, c.model_kind) for c in checkpoints(settings, job_id)] == [(4, "adapter"), (8, "adapter")]
    return settings, job_id


def test_continued_training_from_a_fine_tuned_model(parent: tuple[Settings, str], tmp_path: Path) -> None:
    settings, parent_id = parent
    parent_job = job_row(settings, parent_id)
    name = parent_job.fine_tuned_model
    assert name is not None
    child_id = child_job(settings, parent_id, name, merge_model=True)
    assert JobRunner(settings, child_id).run() == Outcome.succeeded
    child = job_row(settings, child_id)

    # the child starts from the parent's weights: its evaluation before training is the parent's final one
    before, parent_after = (child.summary or {})["before"], (parent_job.summary or {})["after"]
    assert before["eval_loss"] == pytest.approx(parent_after["eval_loss"], rel=1e-5, abs=1e-6)
    assert before["eval_accuracy"] == parent_after["eval_accuracy"]
    assert child.fine_tuned_model == f"ft:tiny-bert:{child.tenant_id}::{child_id}"  # named after the root base
    started = [e for e in events(settings, child_id) if e.message.startswith(f"Continuing from {name}")]
    assert len(started) == 1 and started[0].data["lineage"] == [
        {"model": "tiny-bert", "fine_tuning_job_id": None, "step": None},
        {"model": name, "fine_tuning_job_id": parent_id, "step": None}]

    # its model resolves to base + parent adapter + its own adapter, and loads back to what the worker trained
    resolved = JobStore(settings.sql_url, child_id).resolve_model(model_registry(settings), child.fine_tuned_model)
    assert resolved.lineage == (LineageEntry("tiny-bert"), LineageEntry(name, parent_id),
                                LineageEntry(child.fine_tuned_model, child_id))  # type: ignore[arg-type]
    assert [w.job_id for w in resolved.chain] == [parent_id, child_id]
    store = LocalArtifactStore(settings.artifact_root)
    parent_model = materialize(store, started_from(resolved), tmp_path / "p")
    own = fetch_weights(store, resolved.chain[-1], tmp_path / "own")
    loaded = load_adapter(load_base_for(parent_model, own)[0], own)
    expected = torch.tensor((child.summary or {})["probe"]["logits"])
    torch.testing.assert_close(probe(settings, loaded, child_id), expected, atol=1e-5, rtol=1e-4)
    merged_dir = fetch_weights(store, resolved.merged, tmp_path / "merged")  # type: ignore[arg-type]
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    torch.testing.assert_close(probe(settings, merged, child_id), expected, atol=1e-5, rtol=1e-4)
    assert [(c.step, c.model_kind) for c in checkpoints(settings, child_id)] == [(4, "adapter"), (8, "adapter")]


def started_from(resolved: ResolvedModel) -> ResolvedModel:
    """``resolved`` without its own weights: what its job started from."""
    return replace(resolved, weights=resolved.parents[-1], parents=resolved.parents[:-1])


def test_continued_training_from_a_checkpoint(parent: tuple[Settings, str]) -> None:
    settings, parent_id = parent
    name = checkpoint_model_name(job_row(settings, parent_id).fine_tuned_model or "", 4)
    child_id = child_job(settings, parent_id, name)
    assert JobRunner(settings, child_id).run() == Outcome.succeeded
    child = job_row(settings, child_id)
    # the parent's evaluation at step 4 (its checkpoint), not its final one, is where the child starts
    parent_eval = dict(metric_series(settings, parent_id, "eval_loss"))
    before = (child.summary or {})["before"]["eval_loss"]
    assert before == pytest.approx(parent_eval[4], rel=1e-5, abs=1e-6)
    assert before != pytest.approx(parent_eval[8], rel=1e-5, abs=1e-6)
    resolved = JobStore(settings.sql_url, child_id).resolve_model(model_registry(settings), child.fine_tuned_model)
    assert [e.model for e in resolved.lineage] == ["tiny-bert", name, child.fine_tuned_model]
    assert [(w.job_id, w.step) for w in resolved.chain] == [(parent_id, 4), (child_id, None)]


def test_a_parent_made_on_other_base_weights_is_refused_before_training(
    parent: tuple[Settings, str], make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings, parent_id = parent
    tokenizer = load_tokenizer("minilm-l6")
    other = save_model_folder(tmp_path / "other-bert", tiny_bert(tokenizer, seed=1), tokenizer)
    moved = make_settings(settings.database_url, models={"tiny-bert": str(other)})  # same name, other weights
    child_id = child_job(moved, parent_id, job_row(settings, parent_id).fine_tuned_model or "")
    assert JobRunner(moved, child_id).run() == Outcome.failed
    child = job_row(moved, child_id)
    assert child.error is not None and child.error["code"] == "parent_model_mismatch"
    assert "different base model" in child.error["message"] and child.error["param"] == "model"
    assert metric_series(moved, child_id, "loss") == [] and artifacts(moved, child_id) == {}
