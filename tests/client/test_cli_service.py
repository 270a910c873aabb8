"""The service commands that need no running server: ``keys create|list|revoke`` and ``migrate`` against a
SQLite data dir, ``worker``'s command line, the offline forwarders, and the exit codes of client commands
when the service is unreachable or the key is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect
from support.endpoints import free_port
from typer.testing import CliRunner

from sparsegrad_cli.app import app

from .conftest import REPO, clean_env

runner = CliRunner()


def _authenticate(data_dir: Path, key: str) -> str | None:
    """The tenant name the key belongs to (None when it does not authenticate)."""
    from sparsegrad_service.db import session_scope
    from sparsegrad_service.keys import authenticate
    from sparsegrad_service.settings import Settings

    with session_scope(Settings(data_dir=data_dir).sql_url) as session:
        row = authenticate(session, key)
        return None if row is None else row.tenant.name


def test_keys_create_prints_the_key_alone_on_the_last_line_and_it_authenticates(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "ci", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    key = lines[-1]
    assert key.startswith("sg-") and " " not in key
    assert len(lines) >= 2 and "acme" in result.stdout
    assert (tmp_path / "sparsegrad.db").is_file()
    assert _authenticate(tmp_path, key) == "acme"
    assert _authenticate(tmp_path, key + "x") is None


def test_keys_list_and_revoke(tmp_path: Path) -> None:
    created = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path)])
    key = created.stdout.strip().splitlines()[-1]
    other = runner.invoke(app, ["keys", "create", "--tenant", "globex", "--data-dir", str(tmp_path)])
    assert other.exit_code == 0
    listed = runner.invoke(app, ["keys", "list", "--tenant", "acme", "--data-dir", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert key[:10] in listed.stdout and "globex" not in listed.stdout
    revoked = runner.invoke(app, ["keys", "revoke", key[:10], "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 0, revoked.output
    assert _authenticate(tmp_path, key) is None
    assert _authenticate(tmp_path, other.stdout.strip().splitlines()[-1]) == "globex"
    missing = runner.invoke(app, ["keys", "revoke", "key-nope", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1
    assert "no API key" in missing.stderr


def test_keys_create_refuses_an_empty_tenant(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--tenant", " ", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "tenant name" in result.stderr


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        result = runner.invoke(app, ["migrate", "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
    engine = create_engine(f"sqlite:///{tmp_path / 'sparsegrad.db'}")
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"alembic_version", "tenants", "api_keys", "files", "jobs", "job_events", "job_metrics"} <= tables


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SPARSEGRAD_DATA_DIR", str(tmp_path / "from-env"))
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-env" / "sparsegrad.db").is_file()


def test_production_settings_without_a_worker_token_are_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SPARSEGRAD_ENVIRONMENT", "production")
    result = runner.invoke(app, ["migrate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "SPARSEGRAD_WORKER_TOKEN" in result.stderr


def test_worker_command_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["worker", "--data-dir", str(tmp_path), "--hostname", "gpu0@%h", "--print-command"])
    assert result.exit_code == 0, result.output
    command = result.stdout.split()
    assert command[1:5] == ["-m", "celery", "-A", "worker.celery_app"]
    for flag in ("--pool", "solo", "-Q", "training", "--without-gossip", "--without-mingle", "--without-heartbeat"):
        assert flag in command
    assert command[command.index("--hostname") + 1] == "gpu0@%h"


def test_client_commands_exit_1_when_the_service_is_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["jobs", "--url", url, "--api-key", "sg-test"])
    assert result.exit_code == 1
    assert "cannot reach the service" in result.stderr


def test_client_commands_exit_2_without_an_api_key() -> None:
    result = runner.invoke(app, ["watch", "ftjob-x"])
    assert result.exit_code == 2
    assert "no API key" in result.stderr


def test_service_commands_do_not_import_torch(tmp_path: Path) -> None:
    """`sparsegrad keys ...`, `migrate` and the client commands run in the API image, which has no torch."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from typer.testing import CliRunner\n"
        "from sparsegrad_cli.app import app\n"
        f"r = CliRunner().invoke(app, ['keys', 'create', '--tenant', 't', '--data-dir', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_train_and_merge_forward_to_the_offline_cli() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--calibration-steps" in result.stdout and "--glue" in result.stdout
    result = runner.invoke(app, ["merge", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--adapter" in result.stdout
    result = runner.invoke(app, ["train", "--model", "x"])
    assert result.exit_code == 2  # the offline CLI's usage error (missing --train/--output)
