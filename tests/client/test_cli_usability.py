"""The CLI as a person uses it, against the real API (uvicorn subprocess, no worker): readable at 80 columns,
one name per flag, a refused ``submit`` leaves no uploaded file behind, and refusals speak in the CLI's own
option names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from sparsegrad_cli.app import app
from sparsegrad_client import SparseGradClient

from .conftest import LiveService

runner = CliRunner()
WIDTH = 80


def _cli(live: LiveService, *args: str, columns: int = WIDTH) -> Result:
    return runner.invoke(app, [*args], env={"SPARSEGRAD_URL": live.url, "SPARSEGRAD_API_KEY": live.api_key,
                                            "COLUMNS": str(columns)})


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("usability") / "train.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(20)))
    return path


def _file_ids(live: LiveService) -> set[str]:
    with SparseGradClient(live.url, live.api_key) as client:
        return {f.id for f in client.list_files().data}


def _all_option_names() -> dict[str, list[str]]:
    """Every option name of every command, by command path."""
    found: dict[str, list[str]] = {}

    def walk(command: Any, path: str) -> None:
        found[path] = [name for p in command.params if p.param_type_name == "option"
                       for name in (*p.opts, *p.secondary_opts)]
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def test_the_jobs_table_shows_whole_statuses_and_models_at_80_columns(live_service: LiveService,
                                                                     train_jsonl: Path) -> None:
    with SparseGradClient(live_service.url, live_service.api_key) as client:
        models = [m.id for m in client.list_models().data]
        file_id = client.upload_file(train_jsonl).id
        decoder = next(m for m in models if m != "minilm-l6")
        jobs = [client.create_job(model, file_id, hyperparameters={"max_steps": 2}) for model in ("minilm-l6", decoder)]
        client.cancel_job(jobs[0].id)
        client.pause_job(jobs[1].id)
    listed = _cli(live_service, "jobs", "--limit", "5")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, listed.stdout
    assert "…" not in listed.stdout, listed.stdout
    for job, status in ((jobs[0], "cancelled"), (jobs[1], "paused")):
        row = next(line for line in lines if job.id in line)
        assert re.search(rf"\b{status}\b", row) and job.model in row, listed.stdout


def test_submit_help_shows_every_option_name_whole_at_80_columns() -> None:
    shown = runner.invoke(app, ["submit", "--help"], env={"COLUMNS": str(WIDTH)})
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.stdout.splitlines()) <= WIDTH
    names = _all_option_names()["submit"]
    missing = [name for name in names if name != "--help" and not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])",
                                                                           shown.stdout)]
    assert not missing, (missing, shown.stdout)


def test_no_option_name_doubles_a_negation() -> None:
    doubled = {path: [n for n in names if n.startswith("--no-no-")] for path, names in _all_option_names().items()}
    assert not any(doubled.values()), doubled
    submit = _all_option_names()["submit"]
    assert "--no-header" in submit and "--header" not in submit


def test_a_submit_refused_for_its_model_or_settings_leaves_no_file(live_service: LiveService,
                                                                   train_jsonl: Path, tmp_path: Path) -> None:
    before = _file_ids(live_service)
    for args, fragment in [
        (["--model", "gpt-17"], "gpt-17"),
        (["--model", "minilm-l6", "--density", "7"], "density"),
        (["--model", "minilm-l6", "--lr", "nan"], "--lr"),
        (["--model", "minilm-l6", "--batch-size", "100000"], "--batch-size"),
        (["--model", "minilm-l6", "--suffix", "s" * 500], "--suffix"),
        (["--model", "minilm-l6", "--selection", "block", "--recalibrate-every", "100"],
             "--recalibrate-every needs selection 'dynamic'"),
    ]:
        refused = _cli(live_service, "submit", "--train", str(train_jsonl), *args)
        assert refused.exit_code == 2, (args, refused.output)
        assert fragment in refused.stderr, (args, refused.stderr)
        assert _file_ids(live_service) == before, args


def test_a_submit_the_api_refuses_after_uploading_deletes_its_uploads(live_service: LiveService,
                                                                     tmp_path: Path) -> None:
    """Only the service knows some refusals (chat files for an encoder model): the uploaded files go again."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                                     {"role": "assistant", "content": f"hello {i}"}]}) + "\n"
                            for i in range(10)))
    before = _file_ids(live_service)
    refused = _cli(live_service, "submit", "--model", "minilm-l6", "--train", str(chat), "--eval", str(chat))
    assert refused.exit_code == 2, refused.output
    assert "uploaded chat.jsonl" in refused.stdout, refused.output  # both files were uploaded, then refused
    assert _file_ids(live_service) == before


def test_a_mapping_refusal_names_the_cli_options(live_service: LiveService, tmp_path: Path) -> None:
    headerless = tmp_path / "rows.csv"
    headerless.write_text("".join(f"row {i},{i % 2}\n" for i in range(10)))
    refused = _cli(live_service, "submit", "--model", "minilm-l6", "--train", str(headerless), "--no-header")
    assert refused.exit_code == 2, refused.output
    message = refused.stderr
    assert "--no-header" in message and "--text-column" in message, message
    for api_name in ("has_header", "text_column", "label_column"):
        assert api_name not in message, message
