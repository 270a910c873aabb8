"""The service demo's job is a valid job request carrying the demo recipe (the offline demo runs the same)."""

from __future__ import annotations

from sparsegrad_cli.demo import demo_job_body
from sparsegrad_contract import demo
from sparsegrad_service.schemas.job_create import JobCreate


def test_the_demo_job_is_a_valid_request_with_the_demo_recipe() -> None:
    body = demo_job_body(max_steps=7)
    request = JobCreate.model_validate({"model": demo.MODEL, "training_file": "file-demo", **body})
    assert request.task is not None and request.task.text_column == demo.TEXT_COLUMN
    assert request.task.label_column == demo.LABEL_COLUMN
    assert request.hyperparameters is not None
    assert (request.hyperparameters.batch_size, request.hyperparameters.max_steps,
            request.hyperparameters.max_seq_length) == (demo.BATCH_SIZE, 7, demo.MAX_SEQ_LENGTH)
    assert request.method is None  # the service's default method and selection
