"""Fixtures shared by the service tests (api, worker, client, end to end).

* ``pg_url``: a fresh PostgreSQL database on the local server (127.0.0.1:5432, trust auth), dropped after
  the session. Set ``SPARSEGRAD_TEST_PG`` to another server URL (without database name) to use it.
* ``redis_url``: a database of the local Redis that this test process owns (15, or lower under pytest-xdist),
  flushed first. Set ``SPARSEGRAD_TEST_REDIS`` to another server URL (a database number in it is ignored) to use it.
* ``tiny_model_dir``: a tiny random BERT classifier (2 layers, hidden 32) saved with the real MiniLM
  tokenizer, registered in service tests as the model ``tiny-bert``.
* ``sst2_jsonl``: 120 SST-2 sentences as a JSONL file with ``text`` and ``label`` fields.
* ``inference_deployment``: the API and an inference server serving a fine-tuned SmolLM2 and MiniLM, built once a
  session (:mod:`support.inference_deployment`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.endpoints import PG_SERVER, REDIS_SERVER, admin_engine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with real-model (``slow``) tests first, otherwise in collection order: parallel test processes
    (``pytest -n``, whole files each) then start the longest files early and finish close together."""
    slow_files = {item.nodeid.split("::", 1)[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in slow_files)


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database for one test (no tables: run migrations to create them)."""
    from sqlalchemy import text

    name = f"sg_test_{secrets.token_hex(6)}"
    admin = admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        from sparsegrad_service.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_SERVER)
    client.flushdb()
    client.close()
    return REDIS_SERVER


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sequence classifier + the real MiniLM tokenizer, saved like a hub folder."""
    from support.tiny import save_model_folder, tiny_bert

    from sparsegrad_core.loading import load_tokenizer

    tokenizer = load_tokenizer("minilm-l6")
    return save_model_folder(tmp_path_factory.mktemp("tiny-bert"), tiny_bert(tokenizer), tokenizer)


@pytest.fixture(scope="session")
def sst2_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 SST-2 training sentences as JSONL ``{"text", "label"}`` (no column mapping needed)."""
    from sparsegrad_data import glue_mapping, load_dataset, sample_path

    task, mapping = glue_mapping("sst2")
    data = load_dataset(sample_path("sst2_train"), task, mapping)
    path = tmp_path_factory.mktemp("data") / "sst2_small.jsonl"
    with open(path, "w") as f:
        for ex in data.examples[:120]:
            f.write(json.dumps({"text": ex.text, "label": int(ex.label)}) + "\n")  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="session")
def inference_deployment(tmp_path_factory: pytest.TempPathFactory, sst2_jsonl: Path) -> Iterator[Any]:
    """A deployment serving a fine-tuned SmolLM2 and a fine-tuned MiniLM (:mod:`support.inference_deployment`),
    built once: the API's inference tests and the dashboard's playground share it."""
    from support.inference_deployment import deploy_inference

    yield from deploy_inference(tmp_path_factory.mktemp("inference-api"), sst2_jsonl)
