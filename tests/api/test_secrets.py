"""Secrets: production refuses a missing, short or placeholder worker token; development creates a random
one; API keys are stored only as their SHA-256."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from sparsegrad_service.db import session_scope
from sparsegrad_service.keys import create_api_key, hash_key
from sparsegrad_service.models import ApiKey
from sparsegrad_service.settings import Settings


@pytest.mark.parametrize("token", [None, "", "changeme", "secret", "CHANGEME", "short-token"])
def test_production_refuses_placeholder_worker_tokens(tmp_path: Path, token: str | None) -> None:
    with pytest.raises(ValidationError, match="SPARSEGRAD_WORKER_TOKEN"):
        Settings(environment="production", data_dir=tmp_path, worker_token=token)


def test_production_accepts_a_real_token_and_development_makes_one(tmp_path: Path) -> None:
    assert Settings(environment="production", data_dir=tmp_path, worker_token="x" * 32).worker_secret() == "x" * 32
    dev = Settings(data_dir=tmp_path)
    secret = dev.worker_secret()
    assert len(secret) >= 32 and secret == Settings(data_dir=tmp_path).worker_secret()


def test_api_keys_are_stored_hashed(tmp_path: Path, db: str) -> None:
    with session_scope(db) as session:
        row, key = create_api_key(session, "acme")
        key_id = row.id
    with session_scope(db) as session:
        stored = session.scalar(select(ApiKey).where(ApiKey.id == key_id))
        assert stored is not None and stored.key_hash == hash_key(key) and key not in (stored.prefix, stored.name)
        values = [str(getattr(stored, c.key)) for c in ApiKey.__table__.columns]
        assert all(key not in v for v in values)
