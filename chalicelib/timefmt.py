"""Timestamps as the API writes them: RFC 3339, UTC, `Z`, whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_epoch(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return iso(datetime.fromtimestamp(int(epoch), tz=UTC))


def epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), tz=UTC)
