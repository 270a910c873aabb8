"""The service demo's job is a valid job request carrying the demo recipe (the offline demo runs the same), and a
terminated demo leaves no service behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
from support.endpoints import free_port, wait_ready

from sparsegrad_cli.demo import demo_job_body
from sparsegrad_contract import demo
from sparsegrad_service.schemas.job_create import JobCreate

from .conftest import REPO, clean_env


def test_the_demo_job_is_a_valid_request_with_the_demo_recipe() -> None:
    body = demo_job_body(max_steps=7)
    request = JobCreate.model_validate({"model": demo.MODEL, "training_file": "file-demo", **body})
    assert request.task is not None and request.task.text_column == demo.TEXT_COLUMN
    assert request.task.label_column == demo.LABEL_COLUMN
    assert request.hyperparameters is not None
    assert (request.hyperparameters.batch_size, request.hyperparameters.max_steps,
            request.hyperparameters.max_seq_length) == (demo.BATCH_SIZE, 7, demo.MAX_SEQ_LENGTH)
    assert request.method is None  # the service's default method and selection


def test_a_terminated_demo_stops_the_service_it_started(tmp_path: Path) -> None:
    """SIGTERM (a supervisor, ``timeout``) stops the demo like Ctrl-C: exit 130, and the API and worker processes
    it started are gone rather than left holding the port."""
    port, log = free_port(), tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sparsegrad_cli", "demo", "--port", str(port),
                                 "--data-dir", str(tmp_path / "data"), "--max-steps", "2"],
                                cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, 90, log)
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "uvicorn" in names and "celery" in names, names
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    output = log.read_text(errors="replace")
    assert code == 130, output[-3000:]
    assert "demo interrupted" in output
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], output[-2000:]
