"""A job's downloaded outputs name its classes: the adapter (loaded onto a base model the user builds, or by the
model's name) and the merged model carry the job's label names, not LABEL_0, LABEL_1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForSequenceClassification
from worker_helpers import artifacts, create_job, job_spec

from sparsegrad_core.adapter import load_adapter
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import unpack_archive
from worker.runner import JobRunner, Outcome

NAMES = ["negative", "positive"]
ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {"negative": 0, "positive": 1}


def test_the_adapter_and_the_merged_model_name_the_jobs_classes(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tiny_model_dir: Path, tmp_path: Path,
) -> None:
    settings = make_settings(sqlite_db)
    rows = [json.loads(line) for line in sst2_bytes.splitlines()]
    named = "\n".join(json.dumps({"text": r["text"], "label": NAMES[r["label"]]}) for r in rows).encode()
    spec = job_spec(task={"label_names": NAMES}, merge_model=True, hyperparameters={"max_steps": 2})
    job_id = create_job(settings, named, spec)
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    stored = artifacts(settings, job_id)
    adapter_dir = unpack_archive(settings.artifact_root / stored["adapter"].storage_key, tmp_path / "adapter")
    merged_dir = unpack_archive(settings.artifact_root / stored["merged_model"].storage_key, tmp_path / "merged")

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"] == LABEL2ID

    # the base a user builds from the model's folder knows nothing of the names; the adapter brings them
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    assert base.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    loaded = load_adapter(base, adapter_dir)
    assert loaded.config.id2label == ID2LABEL and loaded.config.label2id == LABEL2ID

    by_name = load_adapter(str(tiny_model_dir), adapter_dir)
    assert by_name.config.id2label == ID2LABEL and by_name.config.label2id == LABEL2ID

    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir)
    assert merged.config.id2label == ID2LABEL and merged.config.label2id == LABEL2ID
