"""SQL datetimes as aware UTC values and as the unix seconds the API shows (SQLite returns naive ones)."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def unix(value: datetime | None) -> int | None:
    """Whole unix seconds, or None."""
    return None if value is None else int(as_utc(value).timestamp())


def unix_required(value: datetime) -> int:
    return int(as_utc(value).timestamp())
