"""``sparsegrad submit --prompt-column --completion-column`` and the typed client's upload: a prompt/completion
file with its own key names reaches the real API (uvicorn subprocess, no worker) named, and the job keeps them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sparsegrad_cli.app import app
from sparsegrad_client import SparseGradClient

from .conftest import LiveService

runner = CliRunner()


def _qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f" It is {2 * i}."}) + "\n"
                            for i in range(8)))
    return path


def test_submit_names_the_prompt_and_completion_keys(live_service: LiveService, tmp_path: Path) -> None:
    env = {"SPARSEGRAD_URL": live_service.url, "SPARSEGRAD_API_KEY": live_service.api_key}
    qa = _qa_file(tmp_path)
    submitted = runner.invoke(app, ["submit", "--model", "smollm2-135m", "--train", str(qa), "--max-steps", "2",
                                    "--prompt-column", "question", "--completion-column", "answer"], env=env)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[-1]
    with SparseGradClient(live_service.url, live_service.api_key) as client:
        job = client.get_job(job_id)
        client.cancel_job(job_id)
        assert job.task.type == "causal_lm"
        assert (job.task.prompt_column, job.task.completion_column) == ("question", "answer")
        uploaded = client.get_file(job.training_file)
        assert uploaded.task == "causal_lm" and uploaded.num_examples == 8


def test_the_typed_client_uploads_with_named_keys(live_service: LiveService, tmp_path: Path) -> None:
    with SparseGradClient(live_service.url, live_service.api_key) as client:
        file = client.upload_file(_qa_file(tmp_path), prompt_column="question", completion_column="answer")
        assert file.task == "causal_lm" and file.num_examples == 8
