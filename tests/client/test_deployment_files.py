"""docker-compose.yml and the Dockerfile cannot run here (no Docker): check that they agree with the code.
Every ``SPARSEGRAD_*`` variable is a real Settings field and the production settings they build validate,
every command names an existing module or CLI command, the API image installs every non-torch dependency
and copies every package, and the GPU reservation sits on the worker."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from sparsegrad_service.settings import Settings

from .conftest import REPO

TORCH_STACK = {"torch", "transformers", "peft", "safetensors", "numpy", "scipy", "scikit-learn", "psutil", "tqdm"}
ALIASES = {"DATABASE_URL", "REDIS_URL"}
OUR_IMAGES = {"migrate", "api", "worker"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _resolve(value: Any) -> str:
    """Compose interpolation with the variables unset: defaults are used, required ones get a stand-in."""
    text = str(value)
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "s3cr3t-" + "x" * 32, text)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _resolve(v) for k, v in env.items()}


def _dockerfile_stages() -> dict[str, str]:
    stages: dict[str, str] = {}
    current = None
    for line in (REPO / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM \S+ AS (\w+)", line)
        if match:
            current = match.group(1)
            stages[current] = ""
        elif current is not None:
            stages[current] += line + "\n"
    return stages


def _check_command(command: list[str]) -> None:
    """The command runs something that exists: a `sparsegrad` subcommand, uvicorn's app module, Celery's app."""
    from sparsegrad_cli.app import app

    if command[0] == "sparsegrad":
        names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
        names |= {g.name for g in app.registered_groups if g.name}
        assert command[1] in names, f"`sparsegrad {command[1]}` is not a command"
        return
    assert command[:2] == ["python", "-m"], command
    if command[2] == "uvicorn":
        module, _, attr = command[3].partition(":")
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
        source = (REPO / (module.replace(".", "/") + ".py")).read_text()
        assert re.search(rf"^{attr}\b.*=", source, re.M), f"{module} defines no {attr}"
    elif command[2] == "celery":
        module = command[command.index("-A") + 1]
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
        queue = command[command.index("-Q") + 1]
        queues = {"worker.celery_app": Settings().training_queue, "worker.webhooks": Settings().webhook_queue}
        assert queue == queues[module], f"{module} consumes {queues[module]}, not {queue}"
        for flag in ("--pool", "--without-gossip", "--without-mingle", "--without-heartbeat"):
            assert flag in command
    else:
        raise AssertionError(f"unexpected command {command}")


def test_compose_variables_are_settings_fields_and_validate_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    fields = {name.upper() for name in Settings.model_fields}
    for name in OUR_IMAGES:
        env = _env(services[name])
        for key in env:
            if key.startswith("SPARSEGRAD_"):
                assert key.removeprefix("SPARSEGRAD_") in fields, f"{name}: {key} is not a Settings field"
            else:
                assert key in ALIASES, f"{name}: {key} is not read by the service"
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.environment == "production"
        assert settings.sql_url.startswith("postgresql+psycopg://") and "@postgres:5432/" in settings.sql_url
        assert settings.redis_url == "redis://redis:6379/0"
        for key in env:
            monkeypatch.delenv(key)


def test_workers_deliver_artifacts_through_the_api_and_only_the_api_has_the_volume() -> None:
    services = _compose()["services"]
    worker, api = _env(services["worker"]), _env(services["api"])
    assert worker["SPARSEGRAD_API_URL"].startswith("http://api:")
    assert "SPARSEGRAD_API_URL" not in api
    assert worker["SPARSEGRAD_WORKER_TOKEN"] == api["SPARSEGRAD_WORKER_TOKEN"]
    assert any(str(v).startswith("artifacts:") for v in services["api"]["volumes"])
    assert not services["worker"].get("volumes")
    assert api["SPARSEGRAD_ARTIFACT_DIR"].startswith(api["SPARSEGRAD_DATA_DIR"])
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "8000:8000" in services["api"]["ports"]


def test_compose_and_dockerfile_commands_reference_existing_code() -> None:
    services = _compose()["services"]
    for name in OUR_IMAGES:
        _check_command([str(c) for c in services[name]["command"]])
        assert services[name]["build"]["target"] in _dockerfile_stages()
    for stage, body in _dockerfile_stages().items():
        for match in re.finditer(r"^CMD (\[.*?\])\s*$", body.replace("\\\n", " "), re.M):
            _check_command(json.loads(match.group(1)))
            assert stage in ("api", "worker")


def test_api_image_installs_every_dependency_but_torch_and_copies_every_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    stages = _dockerfile_stages()
    installed = {re.split(r"[\[<>=]", req)[0].lower() for req in re.findall(r'"([A-Za-z][^"]*)"', stages["api"])}
    needed = {re.split(r"[\[<>=;\s]", dep)[0].lower() for dep in project["project"]["dependencies"]}
    assert needed - TORCH_STACK <= installed, f"missing from the API image: {sorted(needed - TORCH_STACK - installed)}"
    assert not (installed & {"torch", "transformers", "peft"})
    assert "pip install --no-deps ." in stages["api"]
    assert "torch==2.13.0" in stages["worker"]
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) ", stages["source"], re.M))
    assert packages <= copied, f"not copied into the images: {sorted(packages - copied)}"


def test_webhook_worker_service_runs_the_webhook_app_on_its_queue_from_the_api_image() -> None:
    services = _compose()["services"]
    hooks = services["webhooks"]
    assert hooks["image"] == services["api"]["image"] and "build" not in hooks  # no torch: the API image
    command = [str(c) for c in hooks["command"]]
    _check_command(command)
    assert command[command.index("-A") + 1] == "worker.webhooks"
    assert command[command.index("-Q") + 1] == Settings.model_fields["webhook_queue"].default
    env, worker = _env(hooks), _env(services["worker"])
    assert {"DATABASE_URL", "REDIS_URL"} <= set(env) and set(env) <= set(worker)  # the outbox is in SQL
    # the API image proves at build time that the webhook app imports without torch
    check = next(line for line in _dockerfile_stages()["api"].splitlines() if "sys.modules['torch'] = None" in line)
    assert "worker.webhooks" in check


def test_worker_image_extras_exist() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    match = re.search(r"^ARG WORKER_EXTRAS=([\w,]+)$", _dockerfile_stages()["worker"], re.M)
    assert match, "the worker stage declares its extras"
    assert set(match.group(1).split(",")) <= set(project["project"]["optional-dependencies"])
    assert '".[${WORKER_EXTRAS}]"' in _dockerfile_stages()["worker"]
