"""The service demo: start the embedded service, fine-tune MiniLM-L6 on the bundled SST-2 sample with
SparseGrad through the REST API while showing its progress, download the adapter, load it here and
compare dev accuracy before and after with what the job reported. Torch is imported only for that last
evaluation step."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

from sparsegrad_client import SparseGradClient
from sparsegrad_contract import demo
from sparsegrad_service.schemas import JobPublic

from .job_commands import download_artifact_of, upload, watch_until_stopped
from .launcher import EmbeddedService, ServiceError
from .support import console, fail

DEMO_TENANT = "demo"
DEMO_MAPPING = {"task": "classification", "text_column": demo.TEXT_COLUMN, "label_column": demo.LABEL_COLUMN}


def demo_job_body(max_steps: int) -> dict[str, Any]:
    """The job the demo submits: the demo recipe (:mod:`sparsegrad_contract.demo`), the rest the job defaults."""
    return {
        "task": {"type": "classification", "text_column": demo.TEXT_COLUMN, "label_column": demo.LABEL_COLUMN},
        "hyperparameters": {"batch_size": demo.BATCH_SIZE, "max_steps": max_steps,
                            "max_seq_length": demo.MAX_SEQ_LENGTH},
        "suffix": f"{demo.GLUE_TASK}-demo",
    }


def evaluate_adapter(adapter_dir: Path) -> tuple[float, float]:
    """Dev accuracy of the base model (head initialized as the job's was, from its seed) and of the base model
    with the downloaded adapter merged in, computed in this process."""
    import torch
    from transformers.utils import logging as hf_logging

    from sparsegrad_core.loading import load_base_model
    from sparsegrad_core.precision import bf16_autocast
    from sparsegrad_core.recipe import merge
    from sparsegrad_core.tokenization import tokenize_dataset
    from sparsegrad_core.training import read_training_info
    from sparsegrad_core.training.evaluation import evaluate
    from sparsegrad_data import glue_mapping, load_dataset, sample_path

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    info = read_training_info(adapter_dir)
    task, mapping = glue_mapping(demo.GLUE_TASK)
    dev = load_dataset(sample_path(f"{demo.GLUE_TASK}_dev"), task, mapping, label_names=info.get("label_names"))
    torch.manual_seed(int(info["seed"]))
    base, tokenizer = load_base_model(demo.MODEL, info["task"], num_labels=info.get("num_labels"),
                                      label_names=info.get("label_names"))
    data = tokenize_dataset(dev, tokenizer, int(info["max_seq_length"]))
    with bf16_autocast("cpu", bool(info.get("bf16"))):  # the precision the job trained and evaluated in
        before = evaluate(base, data, batch_size=64)["eval_accuracy"]
        trained, _ = merge(demo.MODEL, adapter_dir)
        after = evaluate(trained, data, batch_size=64)["eval_accuracy"]
    return before, after


def _reported_accuracy(client: SparseGradClient, job: JobPublic) -> tuple[float | None, float | None]:
    """The job's own before/after dev accuracy: its summary, else its eval_accuracy metric series."""
    summary = job.summary or {}
    before = (summary.get("before") or {}).get("eval_accuracy")
    after = (summary.get("after") or {}).get("eval_accuracy")
    if after is None:
        values = sorted((p.step, p.value) for p in client.get_metrics(job.id, name="eval_accuracy").data)
        if values:
            before = values[0][1] if values[0][0] == 0 else before
            after = values[-1][1]
    return before, after


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a supervisor or ``timeout`` stopping the demo, a closed terminal) raise
    KeyboardInterrupt like Ctrl-C, so that the service the demo started is stopped rather than left running."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_service_demo(port: int, data_dir: Path, max_steps: int) -> None:
    from sparsegrad_data import sample_path
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.keys import create_api_key
    from sparsegrad_service.settings import Settings

    t0 = time.perf_counter()
    data_dir = data_dir.resolve()
    settings = Settings(data_dir=data_dir)
    service = EmbeddedService(settings, port=port, workers=1)
    console.rule("[bold]SparseGrad service demo[/]")
    console.print("MiniLM-L6 on the bundled SST-2 sample (4,000 train / 872 dev), SparseGrad at 1% density, "
                  "through the REST API of the embedded service (API + Celery worker + SQLite)")
    try:
        with console.status(f"starting the service on {service.url} (logs in {escape(str(service.log_dir))})"):
            service.start()
        console.print(f"[green]service ready[/] at {service.url} (API {service.url}/v1, docs {service.url}/docs)")
        with session_scope(settings.sql_url) as session:
            _, key = create_api_key(session, DEMO_TENANT, "demo")
        console.print(f"created an API key for tenant {DEMO_TENANT!r}")
        with SparseGradClient(service.url, key) as client:
            train = upload(client, sample_path(f"{demo.GLUE_TASK}_train"), DEMO_MAPPING)
            dev = upload(client, sample_path(f"{demo.GLUE_TASK}_dev"), DEMO_MAPPING)
            job = client.create_job(demo.MODEL, train.id, dev.id, **demo_job_body(max_steps))
            console.print(f"submitted job [bold]{job.id}[/] ({job.status})")
            final = watch_until_stopped(client, job.id)
            if final.status != "succeeded":
                raise fail(f"the demo job ended {final.status}; see {service.log_dir}/worker1.log")
            adapter_dir = download_artifact_of(client, job.id, "adapter", data_dir / "downloads" / job.id / "adapter")
            reported = _reported_accuracy(client, final)
    except ServiceError as exc:
        raise fail(str(exc)) from exc
    finally:
        with console.status("stopping the service"):
            service.stop()
    with console.status("loading the adapter into MiniLM-L6 and evaluating on the 872 dev sentences"):
        before, after = evaluate_adapter(adapter_dir)
    console.rule("[bold]result[/]")
    console.print(f"dev accuracy: {before:.3f} before → [bold]{after:.3f}[/] after (computed here with the "
                  "downloaded adapter)")
    if reported[1] is not None:
        agree = "matches" if abs(reported[1] - after) < 5e-3 else "differs from"
        console.print(f"the job reported {reported[0] if reported[0] is None else f'{reported[0]:.3f}'} → "
                      f"{reported[1]:.3f}; the local evaluation {agree} it")
    url = f"http://127.0.0.1:{port}"
    console.print(f"job {job.id} · adapter in {escape(str(adapter_dir))} · {time.perf_counter() - t0:.0f} s in all")
    console.print(f"dashboard: {url}/ (the service is stopped now; browse this run again with "
                  f"[bold]sparsegrad up --data-dir {escape(str(data_dir))} --port {port}[/])")
