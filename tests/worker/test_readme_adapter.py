"""The README's "Loading a trained adapter" snippet, run as written on what a real job produced: a worker trains
the bundled MiniLM-L6 (``minilm-l6``, the name a job uses), its adapter artifact is unpacked as
``sparsegrad download ID -o adapter`` unpacks it, and the snippet's model computes what the worker's model
computed. A README that goes stale fails here."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from worker_helpers import artifacts, create_job, job_row, job_spec

from sparsegrad_core.adapter import read_adapter_config
from sparsegrad_core.training import read_training_info
from sparsegrad_service.settings import Settings
from sparsegrad_service.store import unpack_archive
from worker.probe import probe_logits
from worker.runner import JobRunner, Outcome

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- This snippet is executed by tests/worker/test_readme_adapter.py"


def readme_snippet() -> str:
    """The python block right after the marker comment in the README."""
    text = README.read_text()
    assert MARKER in text, "the README lost its adapter-loading snippet"
    found = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.DOTALL)
    assert found is not None
    return found.group(1)


@pytest.mark.slow
def test_the_readme_snippet_loads_a_downloaded_adapter_by_the_jobs_model_name(
    sqlite_db: str, make_settings: Callable[..., Settings], sst2_bytes: bytes, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(sqlite_db)
    spec = job_spec(method={"setting": "peft", "sparsegrad": {"density": 0.05, "calibration_steps": 2,
                                                              "selection": "dynamic"}},
                    hyperparameters={"max_steps": 3, "batch_size": 8, "checkpoint_every": 100})
    job_id = create_job(settings, sst2_bytes, spec, model="minilm-l6")
    assert JobRunner(settings, job_id).run() == Outcome.succeeded
    job = job_row(settings, job_id)
    archive = settings.artifact_root / artifacts(settings, job_id)["adapter"].storage_key
    folder = unpack_archive(archive, tmp_path / "adapter")  # what `sparsegrad download ID -o adapter` leaves
    assert read_adapter_config(folder)["base_model"] == "minilm-l6"  # the job's name, not the worker's path

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)  # the documented code, as written

    printed = capsys.readouterr().out.strip()
    model, tokenizer = namespace["model"], namespace["tokenizer"]
    assert printed in model.config.id2label.values() and printed in read_training_info(folder)["label_names"]
    probe = (job.summary or {})["probe"]
    got = torch.tensor(probe_logits(model, tokenizer, probe["texts"], probe["text_pairs"], probe["max_seq_length"]))
    torch.testing.assert_close(got, torch.tensor(probe["logits"]), atol=1e-5, rtol=1e-4)
