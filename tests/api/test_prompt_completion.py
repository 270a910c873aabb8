"""Prompt/completion JSONL with its own key names: the upload form and the job's task name them
(``prompt_column`` / ``completion_column``), the file validates as causal_lm, and the job's spec carries the
names to the worker."""

from __future__ import annotations

from api_harness import Service, TenantClient, jsonl

from sparsegrad_service.db import session_scope
from sparsegrad_service.job_spec import JobSpec
from sparsegrad_service.models import Job

ROWS = [{"question": f"What is {i} plus {i}?", "answer": f" It is {2 * i}."} for i in range(8)]


def _mapping(service: Service, job_id: str):  # type: ignore[no-untyped-def]
    with session_scope(service.url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return JobSpec.from_stored(job.spec).task.mapping()


def test_an_upload_names_its_prompt_and_completion_keys_and_the_job_keeps_them(
    service: Service, acme: TenantClient
) -> None:
    content = jsonl(ROWS)
    unnamed = acme.upload(content, "qa.jsonl")
    assert unnamed.status_code == 400, unnamed.text  # no "prompt"/"label" keys in the records

    r = acme.upload(content, "qa.jsonl", prompt_column="question", completion_column="answer")
    assert r.status_code == 200, r.text
    assert r.json()["task"] == "causal_lm" and r.json()["num_examples"] == 8

    job = acme.create_job(model="smollm2-135m", training_file=r.json()["id"])  # the upload's mapping
    assert job["task"]["type"] == "causal_lm"
    assert (job["task"]["prompt_column"], job["task"]["completion_column"]) == ("question", "answer")
    mapping = _mapping(service, job["id"])
    assert (mapping.prompt, mapping.completion) == ("question", "answer")

    plain = acme.upload(content, "qa2.jsonl", prompt_column="question", completion_column="answer").json()["id"]
    task = {"type": "causal_lm", "prompt_column": "question", "completion_column": "answer"}
    explicit = acme.create_job(model="smollm2-135m", training_file=plain, task=task)  # the request's own task
    assert (explicit["task"]["prompt_column"], explicit["task"]["completion_column"]) == ("question", "answer")


def test_the_same_key_for_prompt_and_completion_is_a_400_naming_the_field(acme: TenantClient) -> None:
    r = acme.upload(jsonl(ROWS), "qa.jsonl", prompt_column="question", completion_column="question")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "completion_column" and "prompt_column" in error["message"], error
    job = acme.post("/v1/fine_tuning/jobs", json={
        "model": "smollm2-135m", "training_file": acme.upload_id(),
        "task": {"type": "causal_lm", "prompt_column": "q", "completion_column": "q"}})
    assert job.status_code == 400 and job.json()["error"]["param"] == "task.completion_column", job.text
