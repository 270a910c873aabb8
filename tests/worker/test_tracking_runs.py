"""A job's tracking integrations, with the real clients: MLflow on a local file store and W&B in offline mode
(its run file read back record by record). The runs get the job's parameters and exactly the metric points the
job wrote to SQL; a tracking backend that is missing or breaks mid-run leaves a warning event and the job
succeeds anyway."""

from __future__ import annotations

import json
import shutil
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from wandb.proto import wandb_internal_pb2
from worker_helpers import (
    artifacts,
    create_job,
    events,
    job_row,
    job_spec,
    slow_training_steps,
    when_step_reached,
)

from sparsegrad_service import transitions
from sparsegrad_service.db import session_scope
from sparsegrad_service.job_spec import JobSpec
from sparsegrad_service.job_store import JobStore
from sparsegrad_service.models import Job
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import unpack_archive
from worker.integrations import CALIBRATION_PASS, JOB_TAG, TRAIN_STEP
from worker.runner import JobRunner, Outcome

Series = dict[str, list[tuple[int, float]]]
WANDB_BLOCK, WANDB_HEADER = 32768, 7  # the run file is a LevelDB-style log: 32 KiB blocks after a 7-byte header


@pytest.fixture(autouse=True)
def _mlflow_file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores unless told otherwise


def spec_with(*integrations: dict[str, Any]) -> dict[str, Any]:
    return JobSpec.from_stored(job_spec()).model_copy(update={"integrations": []}).stored() | {
        "integrations": list(integrations)}


def db_series(settings: Settings, job_id: str) -> Series:
    series: Series = defaultdict(list)
    for step, name, value in JobStore(settings.sql_url, job_id).metric_points():
        series[name].append((step, value))
    return dict(series)


def wandb_records(run_file: Path) -> Iterator[Any]:
    """The records of a W&B run file (``run-<id>.wandb``): FULL (1) or FIRST/MIDDLE/LAST (2/3/4) chunks."""
    raw, pos, parts = run_file.read_bytes(), WANDB_HEADER, []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if WANDB_BLOCK - pos % WANDB_BLOCK < 7:
            pos += WANDB_BLOCK - pos % WANDB_BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (length, kind) == (0, 0):
            break
        parts.append(raw[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def test_mlflow_and_wandb_runs_get_the_jobs_parameters_and_metrics_across_a_pause(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"file:{tmp_path / 'mlruns'}"
    settings = make_settings(sqlite_db, mlflow_tracking_uri=uri, wandb_mode="offline", wandb_dir=tmp_path / "wb")
    job_id = create_job(settings, sst2_bytes, spec_with(
        {"type": "wandb", "wandb": {"project": "sg-tests", "name": "first try", "tags": ["nightly"]}},
        {"type": "mlflow", "mlflow": {"experiment": "sst2", "log_adapter": True}}))
    client = MlflowClient(tracking_uri=uri)
    with monkeypatch.context() as patch:  # the first attempt pauses at step 5 or a little later
        slow_training_steps(patch, 0.05)
        watcher = when_step_reached(settings, job_id, 5, lambda: pause(settings, job_id))
        assert JobRunner(settings, job_id).run() == Outcome.paused
        watcher.join(5)
    [paused] = client.search_runs([client.get_experiment_by_name("sst2").experiment_id], "")
    assert paused.info.status == "SCHEDULED" and paused.data.tags["sparsegrad.status"] == "paused"
    resume(settings, job_id)
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.step == 20
    expected = db_series(settings, job_id)
    assert {"loss", "lr", "calibration_loss", "eval_loss", "eval_accuracy"} <= set(expected)
    opened = {e.data["integration"]: e.data for e in events(settings, job_id) if e.data and "run_id" in e.data}

    # MLflow: one run in the named experiment, found by its job tag, with the params and every metric point
    experiment = client.get_experiment_by_name("sst2")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id], f"tags.`{JOB_TAG}` = '{job_id}'")
    assert run.info.run_id == paused.info.run_id == opened["mlflow"]["run_id"] and run.info.run_name == job_id
    assert run.info.status == "FINISHED" and run.data.tags["sparsegrad.status"] == "succeeded"
    assert run.data.tags["sparsegrad.fine_tuned_model"] == job.fine_tuned_model
    params = run.data.params
    assert params["job_id"] == job_id and params["model"] == "tiny-bert" and params["seed"] == "7"
    assert params["method.type"] == "sparsegrad" and params["method.density"] == "0.05"
    assert params["hyperparameters.learning_rate"] == "0.001" and params["hyperparameters.max_steps"] == "20"
    assert params["trainable_params"] == str(job.summary["trainable_params"])
    logged = {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)] for name in expected}
    assert {name: sorted(points) for name, points in logged.items()} == expected
    adapter = unpack_archive(settings.artifact_root / artifacts(settings, job_id)["adapter"].storage_key,
                             tmp_path / "adapter")
    uploaded = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert uploaded == {p.name for p in adapter.iterdir()}

    # W&B offline: each attempt's file of the one run holds the run, its config, one history row per step and
    # the exit code
    run_files = sorted((tmp_path / "wb").glob(f"wandb/offline-run-*-{job_id}/run-{job_id}.wandb"))
    assert len(run_files) == 2 and opened["wandb"]["run_id"] == job_id and opened["wandb"]["mode"] == "offline"
    history: Series = defaultdict(list)
    config: dict[str, Any] = {}
    exit_code = None
    for record in (record for run_file in run_files for record in wandb_records(run_file)):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            assert (record.run.project, record.run.display_name) == ("sg-tests", "first try")
            assert {"nightly", "sparsegrad/finetune", f"sparsegrad/{job_id}"} <= set(record.run.tags)
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            step = row.pop(TRAIN_STEP, None)  # W&B may repeat the last step on rows of the calibration axis
            step = row.pop(CALIBRATION_PASS, step)
            for name, value in row.items():
                if not name.startswith("_"):
                    history[name].append((step, value))
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert dict(history) == expected
    assert config["hyperparameters"]["learning_rate"] == 1e-3 and config["method"]["type"] == "sparsegrad"
    assert config["trainable_params"] == job.summary["trainable_params"]
    assert exit_code == 0


def pause(settings: Settings, job_id: str) -> None:
    with session_scope(settings.sql_url) as session:
        assert transitions.request_pause(session, session.get(Job, job_id))  # type: ignore[arg-type]


def resume(settings: Settings, job_id: str) -> None:
    with session_scope(settings.sql_url) as session:
        assert transitions.request_resume(session, session.get(Job, job_id))  # type: ignore[arg-type]


def test_a_missing_or_broken_backend_leaves_a_warning_and_the_job_succeeds(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "mlruns"
    settings = make_settings(sqlite_db, mlflow_tracking_uri=f"file:{store}")  # no W&B on this worker
    job_id = create_job(settings, sst2_bytes, spec_with(
        {"type": "wandb", "wandb": {"project": "sg-tests"}}, {"type": "mlflow", "mlflow": {}}))

    def break_store() -> None:
        shutil.rmtree(store)
        store.write_text("not a folder any more")

    slow_training_steps(monkeypatch, 0.05)
    watcher = when_step_reached(settings, job_id, 5, break_store)
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    watcher.join(5)
    job = job_row(settings, job_id)
    assert job.status == "succeeded" and job.error is None
    warnings = [e for e in events(settings, job_id) if e.level == "warn"]
    assert [(e.type, e.data["integration"]) for e in warnings] == [("message", "wandb"), ("message", "mlflow")]
    assert "SPARSEGRAD_WANDB_API_KEY" in warnings[0].message and "not set on this worker" in warnings[0].message
    assert "MLflow logging stopped" in warnings[1].message and "The job goes on without it." in warnings[1].message
    opened = [e for e in events(settings, job_id) if e.data and e.data.get("integration") == "mlflow"
              and "run_id" in e.data]
    assert opened and opened[0].data["experiment"] == f"sparsegrad/{job.tenant_id}"  # the default experiment
