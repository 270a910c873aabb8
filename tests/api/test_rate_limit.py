"""Per-key rate limits: over the limit a key gets 429 with Retry-After and a clear message; other keys and
the unauthenticated health routes are unaffected; the bucket refills."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import Service, start_service

from sparsegrad_service.ratelimit import RateLimiter


@pytest.fixture()
def limited(tmp_path: Path, db: str) -> Iterator[Service]:
    yield from start_service(tmp_path, db, rate_limit_per_minute=60, rate_limit_burst=3)


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
def test_key_over_its_limit_gets_429_with_retry_after(limited: Service) -> None:
    acme, beta = limited.as_tenant("acme"), limited.as_tenant("beta")
    assert [acme.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
    refused = acme.get("/v1/files")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert "60 requests per minute" in error["message"] and "Retry after 1 s" in error["message"]
    assert refused.headers["Retry-After"] == "1"
    # Writes are refused too, and nothing is created.
    assert acme.post("/v1/fine_tuning/jobs", json={"model": "minilm-l6", "training_file": "x"}).status_code == 429
    # Another key has its own bucket; health routes need no key and are not limited.
    assert beta.get("/v1/models").status_code == 200
    assert all(limited.client.get("/healthz").status_code == 200 for _ in range(5))


def test_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.check("k", now=0.0) == 0 and limiter.check("k", now=0.0) == 0
    assert limiter.check("k", now=0.0) == pytest.approx(1.0)
    assert limiter.check("k", now=0.5) == pytest.approx(0.5)
    assert limiter.check("k", now=1.0) == 0  # one token back after a second
    assert limiter.check("other", now=1.0) == 0
    assert limiter.check("k", now=100.0) == 0 and limiter.check("k", now=100.0) == 0  # capped at the burst
    assert limiter.check("k", now=100.0) > 0
    unlimited = RateLimiter(per_minute=0)
    assert all(unlimited.check("k", now=0.0) == 0 for _ in range(1000))
